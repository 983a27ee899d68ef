"""Placing an image's file in the nodes' storage pools, and taking it out again.

The file reaches each node through a libvirt upload stream, so remote nodes work the
same as the local one. A placement row is written before the volume and marked ready
once the volume is complete: VMs only go where their image is ready.
"""

import functools
import hashlib
import logging
from pathlib import Path

import hypervisor
from nodes.choices import SERVING_STATUSES
from nodes.models import Node

from .models import Image, ImagePlacement

log = logging.getLogger(__name__)


def place_on_nodes(image: Image, path: str) -> None:
    """Upload the file into each online node's pool; on any failure, take back what was placed."""
    placed = []
    for node in Node.objects.filter(status__in=SERVING_STATUSES):
        try:
            with hypervisor.connect(node.uri) as session:
                write_placement(
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


def write_placement(image: Image, node: Node, session: hypervisor.NodeSession, write) -> None:
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


def adopt(image: Image) -> None:
    """Make an image of a volume an operator put in the pools under one of the panel's names: ready
    where an online node's pool holds it (its SHA-256 and size read from the first one, or checked
    against the one given), failed when no pool does. Other nodes then get it by the image sync."""
    found = []
    for node in Node.objects.filter(status__in=SERVING_STATUSES):
        try:
            with hypervisor.connect(node.uri) as session:
                if not session.volume_exists(node.pool_name, image.volume_name):
                    continue
                digest = session.volume_sha256(node.pool_name, image.volume_name)
                size = session.volume_bytes(node.pool_name, image.volume_name)
        except hypervisor.HypervisorError as error:
            log.warning("could not look for volume %s on %s: %s", image.volume_name, node, error)
            continue
        if image.checksum_sha256 and digest != image.checksum_sha256:
            log.warning("volume %s on %s does not match the image's SHA-256", image.volume_name, node)
            continue
        if not image.checksum_sha256:
            image.checksum_sha256, image.size_bytes = digest, size
            image.save(update_fields=["checksum_sha256", "size_bytes"])
        placement, _ = ImagePlacement.objects.get_or_create(image=image, node=node)
        placement.mark_ready()
        found.append(node)
    if found:
        image.mark(Image.Status.READY)
    else:
        image.mark(
            Image.Status.FAILED,
            error=f"No online node's pool holds a volume named {image.volume_name}"
            + (" with this SHA-256." if image.checksum_sha256 else "."),
        )


def remove_from_nodes(volume_name: str, nodes) -> None:
    """Delete an image's volume from these nodes' pools (when it was deleted or never finished)."""
    for node in nodes:
        try:
            with hypervisor.connect(node.uri) as session:
                session.delete_volume(node.pool_name, volume_name)
        except hypervisor.HypervisorError as error:
            log.warning("could not remove image volume %s from %s: %s", volume_name, node, error)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def install_image(
    node: Node, source: Path, *, name: str, volume_name: str, checksum: str = "", **fields
) -> Image:
    """Upload `source` into the node's pool (once) and record the Image row.

    `checksum`, when given, is the expected SHA-256; a mismatch raises ValueError
    before anything reaches the node.
    """
    actual = sha256_of(source)
    if checksum and checksum != actual:
        raise ValueError(f"checksum mismatch for {source}: expected {checksum}, got {actual}")
    with hypervisor.connect(node.uri) as session:
        if not session.volume_exists(node.pool_name, volume_name):
            session.upload_volume(node.pool_name, volume_name, str(source))
    image, _ = Image.objects.update_or_create(
        volume_name=volume_name,
        defaults={"name": name, "checksum_sha256": actual, "size_bytes": source.stat().st_size, **fields},
    )
    placement, _ = ImagePlacement.objects.get_or_create(image=image, node=node)
    if not placement.ready:
        placement.mark_ready()
    return image
