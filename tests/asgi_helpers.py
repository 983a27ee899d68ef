"""Driving the ASGI application from synchronous tests."""

import asyncio
import concurrent.futures

from channels.testing import WebsocketCommunicator


def run_off_loop(coroutine):
    """Run `coroutine` to completion in a thread of its own.

    A browser test earlier in the session may hold this thread's event loop
    (Playwright's sync API), so asyncio.run() cannot be used here directly.
    """
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def websocket(path: str, cookie: str, origin: str) -> WebsocketCommunicator:
    """A websocket to the panel's ASGI application, as a browser on 127.0.0.1 would open it."""
    from kvmpanel.asgi import application

    headers = [(b"origin", origin.encode()), (b"cookie", cookie.encode()), (b"host", b"127.0.0.1")]
    return WebsocketCommunicator(application, path, headers=headers)
