"""Removing what killed processes left in the download folder."""

import contextlib
import logging
import time
from pathlib import Path

from django.conf import settings

log = logging.getLogger(__name__)


# Files the panel writes in KVMPANEL_DOWNLOAD_DIR: downloads and uploads on their way to the nodes.
TRANSIENT_PREFIXES = ("imagefetch-", "upload-")


def remove_stale_files(older_than_seconds: float, now: float | None = None) -> list[str]:
    """Remove download and upload files a killed web or worker process left behind; the names removed.

    Only the panel's own files (by their prefix), and only when untouched for longer than any
    download may take, so a file still being written or placed is never taken.
    """
    directory = Path(settings.KVMPANEL_DOWNLOAD_DIR)
    if not directory.is_dir():
        return []
    cutoff = (now or time.time()) - older_than_seconds
    removed = []
    for entry in directory.iterdir():
        if entry.name.startswith(TRANSIENT_PREFIXES) and entry.is_file() and entry.stat().st_mtime < cutoff:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry.name)
    if removed:
        log.warning("removed %d stale download/upload file(s): %s", len(removed), ", ".join(removed))
    return removed
