"""The OS image library: fetch an image from a URL once (or take an operator's upload), check it,
and place it in every node's pool.

The download runs in a Celery task (never in a request); its progress is saved
on the Image row. An upload is streamed to disk and checked by the add page
(vms/uploads.py) and placed by a task. The file reaches each node through a
libvirt upload stream, so remote nodes work the same as the local one.
"""

import contextlib
import logging
import os
import time
from pathlib import Path

from django.conf import settings

from . import hypervisor, imagefetch
from .choices import NodeStatus
from .models import Image, Node

log = logging.getLogger(__name__)

PROGRESS_SAVE_SECONDS = 1.0  # how often a download's progress is written to its row


def fetch_and_place(image: Image) -> None:
    """Download `image.source_url`, check it, and upload it to every online node; the row says how it went."""
    image.mark(Image.Status.DOWNLOADING)
    download_dir = Path(settings.KVMPANEL_DOWNLOAD_DIR)
    download_dir.mkdir(parents=True, exist_ok=True)
    try:
        fetched = imagefetch.download(
            image.source_url,
            str(download_dir),
            max_bytes=settings.KVMPANEL_IMAGE_MAX_BYTES,
            expected_sha256=image.checksum_sha256,
            allow_private=settings.KVMPANEL_IMAGE_ALLOW_PRIVATE,
            progress=_progress_saver(image),
            total_timeout=settings.KVMPANEL_IMAGE_DOWNLOAD_TIMEOUT,
        )
    except imagefetch.FetchRefused as refusal:
        image.mark(Image.Status.FAILED, error=str(refusal))
        return
    try:
        image.record_download(fetched)
        image.mark(Image.Status.PLACING)
        place_on_nodes(image, fetched.path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(fetched.path)


def place_upload(image: Image, path: str) -> None:
    """Place a file uploaded in the backoffice (already checked there) on the nodes; the file goes after.

    The web process wrote it into KVMPANEL_DOWNLOAD_DIR: a worker on another machine sees it only
    when that folder is shared (or the worker runs beside the web process).
    """
    if not _is_upload(path):
        image.mark(Image.Status.FAILED, error="the uploaded file is not in the download folder")
        return
    try:
        if not os.path.exists(path):
            image.mark(
                Image.Status.FAILED,
                error="the uploaded file is not on this worker (KVMPANEL_DOWNLOAD_DIR must be shared "
                "between the web process and the workers); upload it again",
            )
            return
        place_on_nodes(image, path)
    finally:
        discard_upload(path)


def discard_upload(path: str) -> None:
    if _is_upload(path):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _is_upload(path: str) -> bool:
    """The path came through the broker: only an upload in the download folder is ever touched."""
    folder = os.path.realpath(settings.KVMPANEL_DOWNLOAD_DIR)
    name = os.path.basename(path)
    return os.path.dirname(os.path.realpath(path)) == folder and name.startswith("upload-")


def place_on_nodes(image: Image, path: str) -> None:
    """Upload the file into each online node's pool; on any failure, take back what was placed."""
    placed = []
    try:
        for node in Node.objects.filter(status=NodeStatus.ONLINE):
            with hypervisor.connect(node.uri) as session:
                if not session.volume_exists(node.pool_name, image.volume_name):
                    session.upload_volume(node.pool_name, image.volume_name, path)
            placed.append(node)
    except hypervisor.HypervisorError as error:
        remove_from_nodes(image.volume_name, placed)
        failed_on = (
            Node.objects.filter(status=NodeStatus.ONLINE).exclude(pk__in=[n.pk for n in placed]).first()
        )
        image.mark(Image.Status.FAILED, error=f"placing it on node {failed_on} failed: {error}")
        return
    image.mark(Image.Status.READY)


def remove_from_nodes(volume_name: str, nodes) -> None:
    """Delete an image's volume from these nodes' pools (when it was deleted or never finished)."""
    for node in nodes:
        try:
            with hypervisor.connect(node.uri) as session:
                session.delete_volume(node.pool_name, volume_name)
        except hypervisor.HypervisorError as error:
            log.warning("could not remove image volume %s from %s: %s", volume_name, node, error)


def _progress_saver(image: Image):
    last_saved = 0.0

    def save(done: int, total: int | None) -> None:
        nonlocal last_saved
        now = time.monotonic()
        if now - last_saved >= PROGRESS_SAVE_SECONDS or (total is not None and done >= total):
            image.record_progress(done, total)
            last_saved = now

    return save
