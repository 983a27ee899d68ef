"""Domain lifecycle events from a node, over a connection that heals itself.

libvirt delivers events through an event loop that must be registered before
any connection is opened; callbacks are registered again on every new
connection, so a libvirtd restart needs no panel restart.
"""

import contextlib
import logging
import threading
import time
from collections.abc import Callable

import libvirt

from . import remote
from .power import POWER_STATES
from .specs import DomainCounters, PowerState
from .stats import read_counters

log = logging.getLogger(__name__)

_loop_lock = threading.Lock()
_loop_started = False

# Lifecycle event -> the power state it leaves the domain in (None: no longer defined).
_EVENT_STATES = {
    libvirt.VIR_DOMAIN_EVENT_STARTED: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_EVENT_RESUMED: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_EVENT_STOPPED: PowerState.STOPPED,
    libvirt.VIR_DOMAIN_EVENT_CRASHED: PowerState.CRASHED,
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: None,
}

StateCallback = Callable[[str, PowerState | None], None]
StatusCallback = Callable[[bool, str], None]
CountersCallback = Callable[[float, list[DomainCounters]], None]


def state_after(event: int) -> PowerState | bool | None:
    """The state a lifecycle event leaves a domain in; False for events that change no state."""
    return _EVENT_STATES.get(event, False)


def start_event_loop() -> None:
    """Register libvirt's default event loop and run it in a thread (once per process)."""
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=_run_event_loop, name="libvirt-events", daemon=True).start()
        _loop_started = True


def _run_event_loop() -> None:
    while True:
        libvirt.virEventRunDefaultImpl()


class NodeWatcher:
    """Watches one node: reports each domain's state changes, and whether the node answers.

    On every (re)connection it first reports the current state of every domain,
    which catches whatever happened while it was away. With `on_counters`, it also
    reads every domain's usage counters in one bulk call each `stats_interval` seconds.
    """

    def __init__(
        self,
        uri: str,
        on_state: StateCallback,
        on_status: StatusCallback,
        retry_seconds=2.0,
        on_counters: CountersCallback | None = None,
        stats_interval: float = 10.0,
    ):
        self.uri = uri
        self.on_state = on_state
        self.on_status = on_status
        self.on_counters = on_counters
        self.stats_interval = stats_interval
        self.retry_seconds = retry_seconds
        self._closed = threading.Event()

    def run(self, stop: threading.Event) -> None:
        start_event_loop()
        reachable = None
        while not stop.is_set():
            try:
                conn = self._connect()
            except libvirt.libvirtError as error:
                if reachable is not False:
                    self.on_status(False, error.get_error_message() or str(error))
                reachable = False
                stop.wait(self.retry_seconds)
                continue
            reachable = True
            try:
                self.on_status(True, "")
                self._report_all(conn)
                self._watch(conn, stop)
            finally:
                self._disconnect(conn)
            if not stop.is_set():
                self.on_status(False, "the connection to libvirtd was lost")
                reachable = False

    def _watch(self, conn: libvirt.virConnect, stop: threading.Event) -> None:
        """Events arrive on libvirt's loop thread; this thread reads counters until the connection ends."""
        next_sample = time.monotonic()
        while not stop.is_set() and not self._closed.is_set():
            if self.on_counters is not None and time.monotonic() >= next_sample:
                # Keep a steady beat: a slow call delays one sample, not all later ones.
                next_sample = max(next_sample + self.stats_interval, time.monotonic())
                self._sample(conn)
            self._closed.wait(0.5)

    def _sample(self, conn: libvirt.virConnect) -> None:
        sampled_at = time.time()
        try:
            counters = read_counters(conn)
        except libvirt.libvirtError as error:  # a lost connection shows through the close callback
            log.warning("reading usage counters from %s failed: %s", self.uri, error.get_error_message())
            return
        try:
            self.on_counters(sampled_at, counters)
        except Exception:  # one bad sample must not end the watch
            log.exception("handling usage counters from %s failed", self.uri)

    def _connect(self) -> libvirt.virConnect:
        self._closed.clear()
        conn = libvirt.openReadOnly(remote.connection_uri(self.uri))
        try:
            conn.registerCloseCallback(lambda _conn, _reason, _opaque: self._closed.set(), None)
            _keep_alive(conn)
            self._callback_id = conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle, None
            )
        except libvirt.libvirtError:
            conn.close()
            raise
        return conn

    def _disconnect(self, conn: libvirt.virConnect) -> None:
        """Drop the callbacks first: they hold the connection open otherwise."""
        with contextlib.suppress(libvirt.libvirtError):
            conn.domainEventDeregisterAny(self._callback_id)
        with contextlib.suppress(libvirt.libvirtError):
            conn.unregisterCloseCallback()
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()

    def _lifecycle(self, _conn, domain, event, _detail, _opaque) -> None:
        state = state_after(event)
        if state is False:
            return
        try:
            self.on_state(domain.name(), state)
        except Exception:  # a callback bug must not kill libvirt's event loop
            log.exception("handling %s event for %s failed", event, domain.name())

    def _report_all(self, conn: libvirt.virConnect) -> None:
        for domain in conn.listAllDomains(0):
            state, _reason = domain.state()
            self.on_state(domain.name(), POWER_STATES.get(state, PowerState.UNKNOWN))


def _keep_alive(conn: libvirt.virConnect) -> None:
    """Notice a dead libvirtd within about 20 s. Drivers without a daemon between (libvirt's test
    driver, used by the scale bench) have no keepalive, and need none."""
    try:
        conn.setKeepAlive(5, 3)
    except libvirt.libvirtError as error:
        if error.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
            raise
