"""Placing OS images into a node's storage pool."""

import hashlib
from pathlib import Path

from . import hypervisor
from .models import Image, ImagePlacement, Node


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
