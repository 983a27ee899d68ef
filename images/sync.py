"""Giving a node the library's images its pool lacks: a node just registered, or back after being away.

Copies come from another node's pool, through the worker; nothing of the library is kept on the
panel's own side (see sync_node).
"""

import functools
import logging

import hypervisor
from nodes.choices import SERVING_STATUSES
from nodes.models import Node

from .models import Image, ImagePlacement
from .placement import PlacementRefused, write_placement

log = logging.getLogger(__name__)


def lacks_images(node: Node) -> bool:
    """Whether a ready image is not (yet) recorded in the node's pool: a database question only."""
    ready_here = ImagePlacement.objects.filter(node=node, ready=True).values("image")
    return Image.objects.filter(status=Image.Status.READY).exclude(pk__in=ready_here).exists()


def sync_node(node: Node) -> dict[str, str]:
    """Give a node every ready image its pool lacks; returns what happened to each, by image name.

    Copies come from another online node's pool that holds the image: a libvirt download stream
    there feeds an upload stream here, through the worker (hypervisor.NodeSession.copy_volume_to),
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
        status__in=SERVING_STATUSES, image_placements__image=image, image_placements__ready=True
    ).exclude(pk=node.pk)
    failures = []
    for source_node in sources:
        try:
            with hypervisor.connect(source_node.uri) as source:
                write_placement(
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
