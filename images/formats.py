"""What a file's bytes are: which disk image formats the panel takes, judged by content, never by
name or Content-Type (images downloaded by URL and uploaded alike).

A qcow2 that names another file (a backing file or an external data file) is refused: QEMU on the
node would open that file for the guest.
"""

import os
import struct

QCOW2_MAGIC = b"QFI\xfb"
_ISO_OFFSET = 0x8001  # "CD001" of the first volume descriptor, after the 32 KiB system area
_HEAD_BYTES = _ISO_OFFSET + 5
_QCOW2_EXTERNAL_DATA_FILE = 1 << 2  # incompatible feature bit: the clusters live in another file

# Formats we do not take, recognised so the operator is told what the file is. Disk formats are
# also refused when a partition table follows: libvirt probes uploads by these same signatures and
# would treat the volume as that format (a VMDK descriptor, for one, names other files to open).
_ARCHIVES = (
    (0, b"\x1f\x8b", "a gzip archive"),
    (0, b"\xfd7zXZ\x00", "an xz archive"),
    (0, b"BZh", "a bzip2 archive"),
    (0, b"\x28\xb5\x2f\xfd", "a zstd archive"),
    (0, b"PK\x03\x04", "a zip archive"),
    (0, b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (257, b"ustar", "a tar archive"),
)
_OTHER_DISK_FORMATS = (
    (0, b"KDMV", "a VMDK image"),
    (0, b"# Disk DescriptorFile", "a VMDK descriptor"),
    (0x40, b"\x7f\x10\xda\xbe", "a VirtualBox VDI image"),
    (0, b"conectix", "a VHD image"),
    (0, b"vhdxfile", "a VHDX image"),
    (0, b"QED\x00", "a QED image"),
    (0, b"LUKS\xba\xbe", "a LUKS-encrypted volume"),
    (0, b"WithoutFreeSpace", "a Parallels image"),
    (0, b"WithouFreSpacExt", "a Parallels image"),
    (0, b"Bochs Virtual HD Image", "a Bochs image"),
    (0, b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop", "a cloop image"),
)


class FetchRefused(ValueError):
    """The URL or what it served is not accepted; the message says why, for the operator."""


def size_text(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit} ({size} bytes)"
    return f"{size} bytes"


# --- what the bytes are -----------------------------------------------------------------------


def detect_format(path: str) -> tuple[str, int | None]:
    """("qcow2" | "iso" | "raw", virtual size in bytes), judged by content; FetchRefused otherwise."""
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        head = handle.read(_HEAD_BYTES)
    if head.startswith(QCOW2_MAGIC):
        return "qcow2", _qcow2_virtual_size(head)
    if archive := _signature(head, _ARCHIVES):
        raise FetchRefused(f"not a disk image: it is {archive} (unpack it and serve the image itself)")
    if other := _signature(head, _OTHER_DISK_FORMATS):
        raise FetchRefused(f"not a disk image we take: it is {other} (convert it to qcow2 first)")
    # Before the partition table: hybrid ISOs carry one too, and are still ISOs.
    if head[_ISO_OFFSET : _ISO_OFFSET + 5] == b"CD001":
        return "iso", size
    if head[510:512] == b"\x55\xaa" or head[512:520] == b"EFI PART":
        return "raw", size
    raise FetchRefused(f"not a disk image: {_describe_other(head, size)}")


def _signature(head: bytes, table: tuple[tuple[int, bytes, str], ...]) -> str | None:
    """The description of the first signature in `table` that `head` carries."""
    for offset, magic, description in table:
        if head[offset : offset + len(magic)] == magic:
            return description
    return None


def _qcow2_virtual_size(head: bytes) -> int:
    """The virtual size from a qcow2 header, refusing headers QEMU would make trouble of."""
    if len(head) < 72:
        raise FetchRefused("not a disk image: the qcow2 header is truncated")
    (version,) = struct.unpack_from(">I", head, 4)
    if version == 1:
        raise FetchRefused("not a disk image we take: it is a qcow (version 1) image (convert it to qcow2)")
    if version not in (2, 3):
        raise FetchRefused(f"not a disk image we take: unknown qcow2 version {version}")
    backing_file_offset, _backing_name_size, _cluster_bits, virtual_size, crypt_method = struct.unpack_from(
        ">QIIQI", head, 8
    )
    if backing_file_offset:
        raise FetchRefused(
            "refused qcow2 image: it names a backing file, which QEMU would open on the node "
            "(flatten it with qemu-img convert)"
        )
    if crypt_method:
        raise FetchRefused("refused qcow2 image: it is encrypted")
    if version == 3:
        if len(head) < 104:
            raise FetchRefused("not a disk image: the qcow2 header is truncated")
        (incompatible_features,) = struct.unpack_from(">Q", head, 72)
        if incompatible_features & _QCOW2_EXTERNAL_DATA_FILE:
            raise FetchRefused(
                "refused qcow2 image: its data lives in an external file, which QEMU would open on the node"
            )
    return virtual_size


def _describe_other(head: bytes, size: int) -> str:
    if size == 0:
        return "the file is empty"
    start = head[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if start.startswith((b"<!doctype html", b"<html")) or b"<html" in start:
        return "it is an HTML page (the link may lead to a download page or an error page, not the image)"
    if start.startswith(b"<?xml"):
        return "it is an XML document (an error answer, perhaps)"
    sample = head[:4096]
    if all(byte >= 0x20 or byte in b"\t\n\r\f" for byte in sample):
        return "it is a text file"
    return (
        f"{size_text(size)} of data with no qcow2 header, no ISO 9660 volume descriptor "
        "and no partition table (MBR or GPT)"
    )
