"""The incremental backup's arithmetic, without libvirt: reading a qcow2 file's changed clusters, and laying
them over the previous backup's disk. The qcow2 files are made by qemu-img and qemu-io (as libvirt's
incremental push backup makes them: a qcow2 file over the VM's disk that holds only what changed), and
the result is checked against qemu-img's own reading of the same file."""

import hashlib
import io
import os
import subprocess

import pytest

from backups import incremental
from backups.incremental import BaseMismatch, ChangesUnreadable, Extent

MIB = 1024 * 1024
KIB = 1024


def qemu_io(path, *commands):
    args = ["qemu-io", "-f", "qcow2"]
    for command in commands:
        args += ["-c", command]
    subprocess.run([*args, str(path)], check=True, capture_output=True)


@pytest.fixture
def base(tmp_path):
    """A 12 MiB raw disk of random bytes (the previous backup) and a qcow2 file over it (the changes)."""
    disk = tmp_path / "base.raw"
    disk.write_bytes(os.urandom(12 * MIB))
    changes = tmp_path / "changes.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(disk), "-F", "raw", str(changes)], check=True
    )
    return disk, changes


def whole(path, fmt="qcow2") -> bytes:
    out = path.with_suffix(".whole")
    subprocess.run(["qemu-img", "convert", "-f", fmt, "-O", "raw", str(path), str(out)], check=True)
    return out.read_bytes()


def synthesized(disk, changes) -> tuple[bytes, str, list[Extent]]:
    with open(changes, "rb") as image:
        size, extents = incremental.changed_extents(image)
        out = io.BytesIO()
        with open(disk, "rb") as previous:
            digest = incremental.synthesize(previous.read, size, extents, image, out.write)
    return out.getvalue(), digest, extents


def test_nothing_changed_gives_the_previous_disk_and_no_extent(base):
    disk, changes = base
    data, digest, extents = synthesized(disk, changes)
    assert extents == []
    assert data == disk.read_bytes()
    assert digest == hashlib.sha256(disk.read_bytes()).hexdigest()


def test_written_and_zeroed_clusters_are_laid_over_the_previous_disk(base):
    disk, changes = base
    qemu_io(
        changes,
        "write -P 0xab 1M 1M",  # data, two neighbours merged into one extent
        "write -P 0xcd 2M 64k",
        "write -z 5M 128k",  # the guest zeroed (discarded) a range: zeros, not "unchanged"
        f"write -P 0xef {12 * MIB - 64 * KIB} 64k",  # the very end, across no chunk boundary
        f"write -P 0x11 {MIB - 64 * KIB} 128k",  # across the first chunk boundary
    )
    data, _, extents = synthesized(disk, changes)
    assert data == whole(changes)  # exactly what qemu-img reads through the backing chain
    assert data[MIB + 64 * KIB : 2 * MIB] == b"\xab" * (MIB - 64 * KIB)
    assert data[5 * MIB : 5 * MIB + 128 * KIB] == bytes(128 * KIB)
    assert data[7 * MIB : 8 * MIB] == disk.read_bytes()[7 * MIB : 8 * MIB]  # untouched: the base's
    zeros = [e for e in extents if e.source is None]
    assert [(e.offset, e.length) for e in zeros] == [(5 * MIB, 128 * KIB)]
    assert incremental.changed_bytes(extents) == MIB + 64 * KIB + 128 * KIB + 64 * KIB + 64 * KIB


def test_the_changes_file_is_a_small_fraction_of_the_disk(base, tmp_path):
    disk, changes = base
    qemu_io(changes, "write -P 0x42 3M 256k")
    assert changes.stat().st_size < 2 * MIB  # what crosses from the node: the changes and qcow2's tables
    data, _, _ = synthesized(disk, changes)
    assert data == whole(changes)


def test_a_qcow2_without_backing_file_reads_unwritten_clusters_as_unchanged(tmp_path):
    changes = tmp_path / "alone.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(changes), "4M"], check=True)
    qemu_io(changes, "write -P 0x77 64k 64k", "write -z 1M 64k")
    with open(changes, "rb") as image:
        size, extents = incremental.changed_extents(image)
    assert size == 4 * MIB
    assert [(e.offset, e.length, e.source is None) for e in extents] == [
        (64 * KIB, 64 * KIB, False),
        (MIB, 64 * KIB, True),
    ]


def test_a_base_shorter_than_the_disk_is_refused(base):
    disk, changes = base
    short = disk.read_bytes()[: 5 * MIB]
    with open(changes, "rb") as image:
        size, extents = incremental.changed_extents(image)
        with pytest.raises(BaseMismatch):
            incremental.synthesize(io.BytesIO(short).read, size, extents, image, lambda data: None)


def test_a_base_longer_than_the_disk_is_refused(base):
    disk, changes = base
    with open(changes, "rb") as image:
        size, extents = incremental.changed_extents(image)
        longer = io.BytesIO(disk.read_bytes() + b"x")
        with pytest.raises(BaseMismatch):
            incremental.synthesize(longer.read, size, extents, image, lambda data: None)


def test_a_base_read_in_odd_pieces_gives_the_same_disk(base):
    """restic's output is a pipe: reads may come back shorter than asked."""
    disk, changes = base
    qemu_io(changes, "write -P 0x5a 3M 300k")
    stream = io.BytesIO(disk.read_bytes())
    with open(changes, "rb") as image:
        size, extents = incremental.changed_extents(image)
        out = io.BytesIO()
        incremental.synthesize(lambda n: stream.read(min(n, 77777)), size, extents, image, out.write)
    assert out.getvalue() == whole(changes)


def test_overlay_logic_on_hand_made_extents():
    base = bytes(range(256)) * (3 * MIB // 256)
    changes = io.BytesIO(b"\xff" * 4 * MIB)
    extents = [Extent(10, 5, 0), Extent(MIB - 3, 6, 100), Extent(2 * MIB, MIB, None)]
    out = io.BytesIO()
    incremental.synthesize(io.BytesIO(base).read, len(base), extents, changes, out.write)
    expected = bytearray(base)
    expected[10:15] = b"\xff" * 5
    expected[MIB - 3 : MIB + 3] = b"\xff" * 6
    expected[2 * MIB : 3 * MIB] = bytes(MIB)
    assert out.getvalue() == bytes(expected)


def test_not_a_qcow2_file_is_refused(tmp_path):
    with pytest.raises(ChangesUnreadable):
        incremental.changed_extents(io.BytesIO(b"\x00" * 4096))


def test_compressed_clusters_are_refused(tmp_path):
    source = tmp_path / "data.raw"
    source.write_bytes(b"compressible " * 80000)
    packed = tmp_path / "packed.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", str(source), str(packed)], check=True
    )
    with open(packed, "rb") as image, pytest.raises(ChangesUnreadable):
        incremental.changed_extents(image)
