"""The OS image library: fetch an image from a URL once (or take an operator's upload), check it,
and place it in every node's pool.

The download runs in a Celery task (never in a request); its progress is saved
on the Image row. An upload is streamed to disk and checked by the add page
(vms/uploads.py) and placed by a task. The file reaches each node through a
libvirt upload stream, so remote nodes work the same as the local one.
"""

import contextlib
import functools
import logging
import os
import time
from pathlib import Path

from django.conf import settings

from . import hypervisor, imagefetch
from .choices import NodeStatus
from .models import Image, ImagePlacement, Node

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
    for node in Node.objects.filter(status=NodeStatus.ONLINE):
        try:
            with hypervisor.connect(node.uri) as session:
                _write_placement(
                    image,
                    node,
                    session,
                    functools.partial(session.upload_volume, node.pool_name, image.volume_name, path),
                )
        except (hypervisor.HypervisorError, PlacementRefused) as error:
            # Rows stay, not ready: if a volume could not be removed, a retry knows it is ours.
            image.placements.update(ready=False)
            remove_from_nodes(image.volume_name, placed)
            image.mark(Image.Status.FAILED, error=f"placing it on node {node} failed: {error}")
            return
        placed.append(node)
    image.mark(Image.Status.READY)


class PlacementRefused(Exception):
    """An image cannot go to a node's pool; the message says why, for the image's row or the log."""


def _write_placement(image: Image, node: Node, session: hypervisor.NodeSession, write) -> None:
    """Record the placement, `write()` the volume, then mark it ready: VMs only go where it is ready.

    A volume already there under the image's name is replaced when the row says it is the panel's own
    unfinished copy, and refused when there is no row (the panel did not make it: never deleted).
    """
    placement, created = ImagePlacement.objects.get_or_create(image=image, node=node)
    if placement.ready:
        return
    if session.volume_exists(node.pool_name, image.volume_name):
        if created:
            placement.delete()
            raise PlacementRefused(
                f"its pool already holds a volume named {image.volume_name} (not the panel's)"
            )
        session.delete_volume(node.pool_name, image.volume_name)  # a worker died while writing it
    write()
    placement.mark_ready()


def sync_node(node: Node) -> dict[str, str]:
    """Give a node every ready image its pool lacks; returns what happened to each, by image name.

    Copies come from another online node's pool that holds the image: a libvirt download stream
    there feeds an upload stream here, through the worker (vms.hypervisor NodeSession.copy_volume_to),
    and the bytes are checked against the image's SHA-256. Why not keep a copy of every image on the
    panel's side instead: it would double the storage of the whole library on the panel's host (which
    may have little disk, and may not run workers at all), and a copy made when the image was added
    is the same bytes as the one every node's pool already holds, checked on the way.

    A volume already in the pool under the image's name that the panel did not write (an operator
    placed it, or the image was added by naming its volume) is taken when its SHA-256 matches (or
    the image has none to compare), and otherwise left alone and reported.
    """
    ready_here = ImagePlacement.objects.filter(node=node, ready=True).values("image")
    missing = list(Image.objects.filter(status=Image.Status.READY).exclude(pk__in=ready_here))
    if not missing:
        return {}
    outcome = {}
    with hypervisor.connect(node.uri) as target:
        for image in missing:
            try:
                outcome[image.name] = _give(image, node, target)
            except (hypervisor.HypervisorError, PlacementRefused) as error:
                log.warning("image %s could not be given to node %s: %s", image, node, error)
                outcome[image.name] = f"failed: {error}"
    return outcome


def _give(image: Image, node: Node, target: hypervisor.NodeSession) -> str:
    placement, created = ImagePlacement.objects.get_or_create(image=image, node=node)
    if created and target.volume_exists(node.pool_name, image.volume_name):
        if _same_bytes(image, node, target):
            placement.mark_ready()
            return "found in the pool"
        placement.delete()
        raise PlacementRefused(
            f"its pool holds a volume named {image.volume_name} whose bytes differ from the image's; "
            "remove it and the panel copies the image"
        )
    sources = Node.objects.filter(
        status=NodeStatus.ONLINE, image_placements__image=image, image_placements__ready=True
    ).exclude(pk=node.pk)
    failures = []
    for source_node in sources:
        try:
            with hypervisor.connect(source_node.uri) as source:
                _write_placement(
                    image, node, target, functools.partial(_copy, image, source, source_node, target, node)
                )
        except (hypervisor.HypervisorError, PlacementRefused) as error:
            failures.append(f"from {source_node}: {error}")
            continue
        return f"copied from {source_node}"
    if failures:
        raise PlacementRefused("; ".join(failures))
    return "no online node holds it to copy from"


def _same_bytes(image: Image, node: Node, target: hypervisor.NodeSession) -> bool:
    """Whether the node's volume holds the image (by SHA-256; the size first, as reading costs)."""
    if not image.checksum_sha256:
        return True  # nothing to compare with: the operator named a volume already in the pools
    if image.size_bytes and target.volume_bytes(node.pool_name, image.volume_name) != image.size_bytes:
        return False
    return target.volume_sha256(node.pool_name, image.volume_name) == image.checksum_sha256


def _copy(image: Image, source: hypervisor.NodeSession, source_node: Node, target, node: Node) -> None:
    digest = source.copy_volume_to(source_node.pool_name, image.volume_name, target, node.pool_name)
    if image.checksum_sha256 and digest != image.checksum_sha256:
        target.delete_volume(node.pool_name, image.volume_name)
        raise PlacementRefused(f"the copy from {source_node} does not match the image's SHA-256")


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
