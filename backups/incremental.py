"""An incremental backup's whole disk, made from the previous backup and the blocks changed since.

The node gives a qcow2 file that holds only the blocks the guest wrote since the previous backup's
checkpoint (libvirt's incremental push backup; its backing file is the VM's disk). This module reads
that file's cluster map (pure Python: the qcow2 header, L1 and L2 tables) and lays the changed blocks
over the previous backup's disk, read back from the store, so the store gets a complete disk again
(restic keeps only its new chunks) while only the changed blocks crossed from the node.
"""

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

QCOW2_MAGIC = b"QFI\xfb"
_OFFSET_MASK = 0x00FFFFFFFFFFFE00
_COMPRESSED = 1 << 62
_ZERO = 1
# Incompatible features we cannot read: the image marked corrupt, an external data file, extended L2.
_UNREADABLE_FEATURES = (1 << 1) | (1 << 2) | (1 << 4)
CHUNK_BYTES = 1024 * 1024


class ChangesUnreadable(Exception):
    """The changed blocks cannot be used (not a qcow2 file we can read, or not the disk's size)."""


class BaseMismatch(Exception):
    """The previous backup read back from the store is not what was backed up: the chain is broken."""


@dataclass(frozen=True)
class Extent:
    """`length` bytes of the disk from `offset` that changed: to the data at `source` in the qcow2 file,
    or to zeros (`source` None)."""

    offset: int
    length: int
    source: int | None


def changed_extents(image: BinaryIO) -> tuple[int, list[Extent]]:
    """(the disk's size, its changed extents in order, neighbours merged) from a qcow2 file."""
    header = image.read(104)
    if len(header) < 72 or header[:4] != QCOW2_MAGIC:
        raise ChangesUnreadable("the node's copy of the changed blocks is not a qcow2 file")
    version, _, _, cluster_bits, size, crypt = struct.unpack(">IQIIQI", header[4:36])
    l1_size, l1_offset = struct.unpack(">IQ", header[36:48])
    if version not in (2, 3) or crypt or not 9 <= cluster_bits <= 21:
        raise ChangesUnreadable(f"qcow2 version {version}, encryption {crypt}: not readable here")
    if version == 3 and len(header) >= 80 and struct.unpack(">Q", header[72:80])[0] & _UNREADABLE_FEATURES:
        raise ChangesUnreadable("the qcow2 file uses features not readable here")
    cluster = 1 << cluster_bits
    per_table = cluster // 8
    extents: list[Extent] = []

    def add(offset: int, source: int | None) -> None:
        length = min(cluster, size - offset)
        last = extents[-1] if extents else None
        if (
            last
            and last.offset + last.length == offset
            and (last.source is None) == (source is None)
            and (source is None or last.source + last.length == source)
        ):
            extents[-1] = Extent(last.offset, last.length + length, last.source)
        else:
            extents.append(Extent(offset, length, source))

    image.seek(l1_offset)
    l1 = struct.unpack(f">{l1_size}Q", _exactly(image, 8 * l1_size))
    for l1_index, l1_entry in enumerate(l1):
        table = l1_entry & _OFFSET_MASK
        if not table:
            continue  # no cluster of this range was written
        image.seek(table)
        for l2_index, entry in enumerate(struct.unpack(f">{per_table}Q", _exactly(image, cluster))):
            offset = (l1_index * per_table + l2_index) * cluster
            if offset >= size or not entry:
                continue
            if entry & _COMPRESSED:
                raise ChangesUnreadable("the qcow2 file holds compressed clusters")
            if version == 3 and entry & _ZERO:
                add(offset, None)
            elif entry & _OFFSET_MASK:
                add(offset, entry & _OFFSET_MASK)
    return size, extents


def synthesize(
    read_base: Callable[[int], bytes],
    size: int,
    extents: list[Extent],
    changes: BinaryIO,
    write: Callable[[bytes], None],
    progress: Callable[[int], None] | None = None,
) -> str:
    """Write the whole new disk: the base disk's bytes (`read_base(n)`, the previous backup) with the
    extents laid over them. Returns the SHA-256 of the base as read, so the caller can check it against
    the one recorded at its backup; raises BaseMismatch if the base is not `size` bytes long."""
    digest = hashlib.sha256()
    position = 0
    pending = iter(extents)
    extent = next(pending, None)
    while position < size:
        data = _read_fully(read_base, min(CHUNK_BYTES, size - position))
        if not data:
            raise BaseMismatch(f"the previous backup ended after {position} of {size} bytes")
        digest.update(data)
        end = position + len(data)
        if extent is not None and extent.offset < end:
            block = bytearray(data)
            while extent is not None and extent.offset < end:
                start, stop = max(extent.offset, position), min(extent.offset + extent.length, end)
                if extent.source is None:
                    block[start - position : stop - position] = bytes(stop - start)
                else:
                    changes.seek(extent.source + start - extent.offset)
                    block[start - position : stop - position] = _exactly(changes, stop - start)
                if extent.offset + extent.length > end:
                    break  # the rest of this extent is in the next chunk
                extent = next(pending, None)
            data = bytes(block)
        write(data)
        position = end
        if progress:
            progress(position)
    if read_base(1):
        raise BaseMismatch(f"the previous backup is longer than {size} bytes")
    return digest.hexdigest()


def changed_bytes(extents: list[Extent]) -> int:
    return sum(e.length for e in extents)


def _read_fully(read: Callable[[int], bytes], size: int) -> bytes:
    parts, got = [], 0
    while got < size:
        data = read(size - got)
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts)


def _exactly(source: BinaryIO, size: int) -> bytes:
    data = source.read(size)
    if len(data) != size:
        raise ChangesUnreadable("the qcow2 file is cut short")
    return data
