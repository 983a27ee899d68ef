"""Sending to Channels groups from synchronous code (pages, tasks, the node monitor), never waiting long.

Every app that tells open websockets something (vms.live: VM changes; accounts.sessions: a session
ended) sends through here, so there is one event loop per process for it.
"""

import asyncio
import contextlib
import logging
import os
import threading

from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

# A publish that Redis does not answer in this long is given up (and logged), never waited on.
SEND_TIMEOUT = 5


def group_send(groups: list[str], message: dict) -> None:
    """Publish to every group; never raises. A failure (Redis restarted, away, slow) is retried once
    on fresh connections, then dropped with a log line: the data is in the database anyway, and open
    pages catch up at their next push or reload."""
    for attempt in (1, 2):
        try:
            _run_on_loop(_group_send(groups, message))
            return
        except Exception as error:  # a push must never fail the work that made it
            log.warning("could not publish %s to %s (try %d): %r", message["type"], groups, attempt, error)
            with contextlib.suppress(Exception):
                _run_on_loop(_close_connections())  # the next try connects afresh


async def _group_send(groups: list[str], message: dict) -> None:
    layer = get_channel_layer()
    for group in groups:
        await layer.group_send(group, message)


async def _close_connections() -> None:
    """Drop the channel layer's Redis connections of this loop (dead after a Redis restart)."""
    await get_channel_layer().close_pools()


def _run_on_loop(coroutine) -> None:
    # One trip into async code for all the groups, on one event loop kept for the process:
    # the channel layer keeps a Redis connection per loop, so a fresh loop per message (what
    # async_to_sync makes outside an ASGI server) paid for a new connection every time.
    # Measured in a worker: 6.5 ms a message that way, 1.3 ms on the kept loop.
    future = asyncio.run_coroutine_threadsafe(coroutine, _publishing_loop())
    try:
        future.result(SEND_TIMEOUT)
    except BaseException:
        future.cancel()
        raise


_loop: asyncio.AbstractEventLoop | None = None
_loop_pid: int | None = None
_loop_lock = threading.Lock()


def _publishing_loop() -> asyncio.AbstractEventLoop:
    """This process's event loop for publishing, in a thread of its own (a new one after a fork)."""
    global _loop, _loop_pid
    with _loop_lock:
        if _loop is None or _loop_pid != os.getpid():  # a forked worker child inherits no thread
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="live-publisher", daemon=True).start()
            _loop_pid = os.getpid()
        return _loop
