"""Static files for the ASGI server, served without Django's sync thread.

Django's ASGIStaticFilesHandler and WhiteNoise stream files through the one
thread that runs sync code, and under daphne that can stall every later
request (django/channels#1119, #2095): pages then hang half-loaded. This small
ASGI app reads the (small) file in a worker thread and sends it in one body.
Behind a reverse proxy, let the proxy serve /static/ instead.
"""

import asyncio
import mimetypes
from pathlib import Path
from urllib.parse import unquote

from django.conf import settings
from django.contrib.staticfiles import finders
from django.core.exceptions import SuspiciousFileOperation
from django.utils._os import safe_join

CACHE_FOREVER = "public, max-age=31536000, immutable"


class StaticFilesApp:
    def __init__(self, application, from_sources: bool):
        self.application = application
        self.prefix = "/" + settings.STATIC_URL.lstrip("/")
        self.from_sources = from_sources  # tests: find files in their apps; production: STATIC_ROOT

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            return await self.application(scope, receive, send)
        path = self._locate(unquote(scope["path"][len(self.prefix) :]))
        if path is None or scope["method"] not in ("GET", "HEAD"):
            return await self._send(send, 404, b"Not found", "text/plain", None)
        body = await asyncio.to_thread(path.read_bytes)
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if content_type.startswith("text/") or content_type.endswith("javascript"):
            content_type += "; charset=utf-8"
        cache = None if self.from_sources else CACHE_FOREVER
        await self._send(send, 200, b"" if scope["method"] == "HEAD" else body, content_type, cache)

    def _locate(self, relative: str) -> Path | None:
        if not relative or relative.endswith("/"):
            return None
        try:
            found = finders.find(relative) if self.from_sources else safe_join(settings.STATIC_ROOT, relative)
        except SuspiciousFileOperation:  # a path that leaves STATIC_ROOT
            return None
        path = Path(found) if found else None
        return path if path is not None and path.is_file() else None

    @staticmethod
    async def _send(send, status: int, body: bytes, content_type: str, cache: str | None):
        headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
        headers.append((b"x-content-type-options", b"nosniff"))
        if cache:
            headers.append((b"cache-control", cache.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
