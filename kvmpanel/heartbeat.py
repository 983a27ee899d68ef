"""A lease kept alive while work runs: a thread that renews it at a steady beat.

Used by operations (a lease on their row) and by the image library's long tasks (a Redis lock), so
a worker that dies stops renewing and another one takes the work over after the lease runs out.
"""

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Heartbeat:
    """Call `renew()` every `every` seconds until the block ends.

    `renew` returns False when the lease is no longer ours (cancelled, or taken over): the beat then
    stops and `lost` is set, so the work can check it before it records anything. An exception in
    `renew` (the database or Redis away for a moment) is logged and the beat goes on: the lease is
    long enough to outlast a short outage.
    """

    def __init__(self, renew: Callable[[], bool], every: float, name: str = "heartbeat", on_exit=None):
        self._renew = renew
        self._every = every
        self._on_exit = on_exit  # e.g. close the thread's database connection
        self._stop = threading.Event()
        self.lost = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=name, daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=self._every + 5)

    def _beat(self) -> None:
        try:
            while not self._stop.wait(self._every):
                try:
                    still_ours = self._renew()
                except Exception as error:  # an outage must not end the beat
                    log.warning("%s: could not renew the lease: %r", self._thread.name, error)
                    continue
                if not still_ours:
                    log.warning("%s: the lease is no longer ours", self._thread.name)
                    self.lost.set()
                    return
        finally:
            if self._on_exit is not None:
                self._on_exit()
