"""Which backups read only the changed blocks, and what happens when the chain cannot be trusted: the
panel's side of incremental backups with real restic (a directory store) and a stand-in node. The node
keeps the disk as bytes and records the writes since each checkpoint; its incremental copy is a real
qcow2 file over the previous disk, made by qemu-io (as libvirt's incremental push backup makes one), so
the qcow2 reading and the overlay are the real ones. libvirt's side is in the real-guest test
(tests/integration/test_data_protection.py)."""

import contextlib
import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from backups import actions, taking, tasks
from backups.choices import BackupStatus
from backups.models import Backup, BackupStore
from backups.restic import Repository
from hypervisor.errors import OperationFailed
from hypervisor.specs import DiskExport

from .factories import make_vm

pytestmark = pytest.mark.django_db
MIB = 1024 * 1024
SIZE = 16 * MIB


class Node:
    """A node with one running VM whose disk is `disk`; `write` changes it as the guest would."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.disk = bytearray(os.urandom(SIZE))
        self.checkpoints: dict[str, list] = {}  # name -> the writes since it
        self.running = True
        self.snapshots = 0
        self.broken_download = False
        self.exports: list[tuple[str, str]] = []  # (checkpoint, since) as asked
        self.volumes: dict[str, Path] = {}

    def write(self, offset: int, length: int, pattern: int | None) -> None:
        self.disk[offset : offset + length] = (
            bytes([pattern]) * length if pattern is not None else bytes(length)
        )
        for writes in self.checkpoints.values():
            writes.append((offset, length, pattern))

    # --- the NodeSession verbs take.py uses --------------------------------------------------------

    def export_disk(self, name, pool, volume, scratch, progress=None, checkpoint="", since=""):
        self.exports.append((checkpoint, since))
        if not self.running or self.snapshots:
            checkpoint = since = ""
        if since not in self.checkpoints:
            since = ""
        if since:
            changes = self.folder / f"{scratch}.job"
            base = self.folder / "base.raw"
            base.write_bytes(b"")  # only the size matters: the qcow2 file holds the changes alone
            os.truncate(base, SIZE)
            changes.unlink(missing_ok=True)
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", changes], check=True
            )
            args = ["qemu-io", "-f", "qcow2"]
            for offset, length, pattern in self.checkpoints[since]:
                args += [
                    "-c",
                    f"write -P {pattern} {offset} {length}"
                    if pattern is not None
                    else f"write -z {offset} {length}",
                ]
            subprocess.run([*args, changes], check=True, capture_output=True)
            self.volumes[changes.name] = changes
            volume_name = changes.name
        else:
            full = self.folder / scratch
            full.write_bytes(bytes(self.disk))
            self.volumes[scratch] = full
            volume_name = scratch
        if checkpoint:
            self.checkpoints[checkpoint] = []
        consistency = "frozen" if self.running else "stopped"
        return DiskExport(pool, volume_name, SIZE, consistency, checkpoint, since)

    def read_volume(self, pool, volume, sink):
        data = self.volumes[volume].read_bytes()
        for start in range(0, len(data), MIB):
            sink(data[start : start + MIB])
        return len(data)

    def download_volume(self, pool, volume, sink):
        if self.broken_download:
            raise OperationFailed("the node went away")
        return self.read_volume(pool, volume, sink)

    def abort_disk_export(self, name, pool, scratch):
        for path in self.folder.glob(f"{scratch}*"):
            path.unlink()

    def delete_checkpoints(self, name, keep=""):
        for checkpoint in [c for c in self.checkpoints if c != keep]:
            del self.checkpoints[checkpoint]


@pytest.fixture
def node(tmp_path, monkeypatch):
    node = Node(tmp_path)

    @contextlib.contextmanager
    def connect(uri):
        yield node

    monkeypatch.setattr(taking.hypervisor, "connect", connect)
    return node


@pytest.fixture
def store(tmp_path):
    return BackupStore.objects.create(name="local", path=str(tmp_path / "repo"), is_default=True)


@pytest.fixture
def vm(alice, monkeypatch):
    monkeypatch.setattr(actions, "ring", lambda: None)
    monkeypatch.setattr(tasks.run_backup, "apply_async", lambda args, queue: None)
    return make_vm(alice)


def back_up(vm) -> Backup:
    backup = actions.start_backup(vm, vm.owner)
    Backup.objects.filter(pk=backup.pk).update(status=BackupStatus.RUNNING)
    tasks.run_backup.run(backup.pk)
    backup.refresh_from_db()
    return backup


def stored_disk(backup) -> bytes:
    with Repository(backup.store).dump(backup.restic_id) as read:
        chunks = []
        while data := read(MIB):
            chunks.append(data)
    return b"".join(chunks)


def test_the_second_backup_reads_only_the_changes_and_stores_the_whole_disk(vm, node, store):
    first = back_up(vm)
    assert first.status == BackupStatus.SUCCEEDED, first.error
    assert (first.incremental, first.checkpoint, first.bytes_read) == (False, f"kvmpanel-{first.pk}", SIZE)
    node.write(3 * MIB, MIB, 0xAB)
    node.write(9 * MIB, 128 * 1024, None)  # zeroed by the guest
    second = back_up(vm)
    assert second.status == BackupStatus.SUCCEEDED, second.error
    assert node.exports[-1] == (f"kvmpanel-{second.pk}", f"kvmpanel-{first.pk}")
    assert second.incremental and second.checkpoint == f"kvmpanel-{second.pk}"
    assert second.bytes_read < SIZE / 10  # the changed MiB and qcow2's tables
    # What the store grows by is restic's deduplication: its chunks average 1 MiB and reach 8 MiB, so on
    # a 16 MiB disk it varies from run to run; the real-guest test measures it on a real disk.
    assert stored_disk(second) == bytes(node.disk)  # a whole disk, as restore knows it
    assert second.sha256 == hashlib.sha256(bytes(node.disk)).hexdigest()
    assert list(node.checkpoints) == [second.checkpoint]  # only the newest is kept on the node
    node.write(0, 64 * 1024, 0x01)
    third = back_up(vm)  # a chain of increments: each from the one before
    assert third.incremental and stored_disk(third) == bytes(node.disk)


def test_a_previous_backup_that_does_not_read_back_as_it_was_makes_a_full_one(vm, node, store):
    first = back_up(vm)
    Backup.objects.filter(pk=first.pk).update(sha256="0" * 64)  # the store's copy no longer matches
    node.write(MIB, MIB, 0x42)
    second = back_up(vm)
    assert second.status == BackupStatus.SUCCEEDED, second.error
    assert not second.incremental and second.bytes_read == SIZE
    assert stored_disk(second) == bytes(node.disk)
    assert len(Repository(store).snapshot_ids(second.tag)) == 1  # the killed incremental kept nothing


def test_a_previous_backup_gone_from_the_store_makes_a_full_one(vm, node, store):
    first = back_up(vm)
    Repository(store).forget([first.restic_id])  # behind the panel's back
    node.write(MIB, MIB, 0x42)
    second = back_up(vm)
    assert second.status == BackupStatus.SUCCEEDED, second.error
    assert not second.incremental and stored_disk(second) == bytes(node.disk)


@pytest.mark.parametrize("why", ["stopped", "snapshots", "checkpoint lost", "other store", "resized"])
def test_whenever_the_chain_cannot_be_trusted_the_whole_disk_is_read(vm, node, store, why):
    first = back_up(vm)
    node.write(MIB, MIB, 0x42)
    if why == "stopped":
        node.running = False
    elif why == "snapshots":
        node.snapshots = 1
    elif why == "checkpoint lost":
        node.checkpoints.clear()  # a reinstall, a restore, a revert or a migration dropped it
    elif why == "other store":
        BackupStore.objects.filter(pk=store.pk).update(is_default=False)
        BackupStore.objects.create(name="other", path=str(Path(store.path).parent / "other"), is_default=True)
    elif why == "resized":
        Backup.objects.filter(pk=first.pk).update(disk_bytes=SIZE // 2)
    second = back_up(vm)
    assert second.status == BackupStatus.SUCCEEDED, second.error
    assert not second.incremental and second.bytes_read == SIZE
    assert stored_disk(second) == bytes(node.disk)
    if why in ("stopped", "snapshots"):
        assert second.checkpoint == ""  # libvirt can make none then


def test_a_failed_incremental_counts_for_nothing_and_the_chain_stays_usable(vm, node, store):
    first = back_up(vm)
    node.write(MIB, MIB, 0x42)
    node.broken_download = True
    failed = back_up(vm)
    assert failed.status == BackupStatus.FAILED and "node could not copy" in failed.error
    assert list(Backup.objects.usable()) == [first]
    assert Repository(store).snapshot_ids(failed.tag) == []
    node.broken_download = False
    node.write(5 * MIB, MIB, 0x43)
    second = back_up(vm)
    assert second.status == BackupStatus.SUCCEEDED, second.error
    assert second.incremental  # from the first backup's checkpoint: both writes are in it
    assert node.exports[-1][1] == first.checkpoint
    assert stored_disk(second) == bytes(node.disk)
