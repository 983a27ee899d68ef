"""Adding an image by URL: download it once (in a worker, never in a request), check it, and place it
on every online node. Its progress is saved on the Image row, so the backoffice page shows it.
"""

import contextlib
import os
import time
from pathlib import Path

from django.conf import settings

from . import download
from .models import Image
from .placement import place_on_nodes

PROGRESS_SAVE_SECONDS = 1.0  # how often a download's progress is written to its row


def fetch_and_place(image: Image) -> None:
    """Download `image.source_url`, check it, and upload it to every online node; the row says how it went."""
    image.mark(Image.Status.DOWNLOADING)
    download_dir = Path(settings.KVMPANEL_DOWNLOAD_DIR)
    download_dir.mkdir(parents=True, exist_ok=True)
    try:
        fetched = download.download(
            image.source_url,
            str(download_dir),
            max_bytes=settings.KVMPANEL_IMAGE_MAX_BYTES,
            expected_sha256=image.checksum_sha256,
            allow_private=settings.KVMPANEL_IMAGE_ALLOW_PRIVATE,
            progress=_progress_saver(image),
            total_timeout=settings.KVMPANEL_IMAGE_DOWNLOAD_TIMEOUT,
        )
    except download.FetchRefused as refusal:
        image.mark(Image.Status.FAILED, error=str(refusal))
        return
    try:
        image.record_download(fetched)
        image.mark(Image.Status.PLACING)
        place_on_nodes(image, fetched.path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(fetched.path)


def _progress_saver(image: Image):
    last_saved = 0.0

    def save(done: int, total: int | None) -> None:
        nonlocal last_saved
        now = time.monotonic()
        if now - last_saved >= PROGRESS_SAVE_SECONDS or (total is not None and done >= total):
            image.record_progress(done, total)
            last_saved = now

    return save
