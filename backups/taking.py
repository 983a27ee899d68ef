"""Taking one backup: a point-in-time copy of the disk on the node, read over libvirt into restic.

A running VM's backup also leaves a checkpoint on the node (`kvmpanel-<backup id>`), and the next
backup of it into the same store reads only the blocks written since (an incremental copy, see
backups/incremental.py): the previous backup is read back from the store, the changed blocks are
laid over it, and restic gets a whole disk again (it keeps only the new chunks). Whenever that chain
cannot be trusted (no earlier backup in this store whose checkpoint the domain still has, the VM
stopped or holding snapshots, the disk's size changed, the node refused, the previous backup does
not read back as what was backed up), the whole disk is read, and a new chain starts from it. Only
the newest checkpoint is kept on the node.

The row is the truth: it is marked running (with a heartbeat while bytes flow) before anything
is made, and complete only after restic has the whole disk and said so. A try that dies leaves a
scratch copy on the node and perhaps restic data no snapshot refers to: the next try, or the
sweeper (tasks.dispatch), removes the copy, forgets any snapshot tagged with the row, and the next
prune drops the unreferenced data.
"""

import hashlib
import logging
import tempfile
import time

from django.conf import settings
from django.db.models import F
from django.utils import timezone

import hypervisor
from vms.choices import ACTIVE_OPERATION_STATUSES, OperationKind, VMState
from vms.models import VirtualMachine

from . import incremental
from .choices import BackupStatus
from .models import Backup
from .restic import Repository, ResticError

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 2.0


class BackupFailed(Exception):
    """The backup cannot be made; the message is for the customer and staff."""


class ChainBroken(Exception):
    """The incremental copy cannot be used: the whole disk is read instead."""


class Heartbeat:
    """Progress and a sign of life on the row, at most every HEARTBEAT_SECONDS."""

    def __init__(self, backup: Backup):
        self.backup = backup
        self.last = 0.0

    def __call__(self, progress: float) -> None:
        now = time.monotonic()
        if now - self.last >= HEARTBEAT_SECONDS:
            self.last = now
            Backup.objects.filter(pk=self.backup.pk).update(progress=progress, heartbeat_at=timezone.now())


def take(backup: Backup) -> None:
    """Make the backup; raises BackupFailed with the reason (after cleaning up) when it cannot."""
    vm = backup.vm
    if _gone(vm):
        raise BackupFailed("the VM was deleted before its backup started")
    repository = Repository(backup.store)
    try:
        repository.ensure_initialized()
        forget_partial(backup, repository)  # an earlier, interrupted try of this row
        stored_before = repository.used_bytes()
        base = _base(backup, vm)
        try:
            summary, exported, digest, read = _copy(backup, vm, repository, base)
        except ChainBroken as broken:
            log.warning("backup %s: reading the whole disk: %s", backup.pk, broken)
            forget_partial(backup, repository)
            summary, exported, digest, read = _copy(backup, vm, repository, None)
        stored_after = repository.used_bytes()
    except hypervisor.HypervisorError as error:
        cleanup(backup, repository)
        if _gone(vm):
            raise BackupFailed("the VM was deleted while it was backed up; nothing was kept") from error
        raise BackupFailed(f"the node could not copy the disk: {error}") from error
    except ResticError as error:
        cleanup(backup, repository)
        raise BackupFailed(f"the backup store refused the backup: {error}") from error
    if _gone(vm):
        repository.forget([summary.snapshot_id])
        raise BackupFailed("the VM was deleted while it was backed up; nothing was kept")
    if summary.bytes_processed != exported.capacity_bytes:
        repository.forget([summary.snapshot_id])
        raise BackupFailed(
            f"the store received {summary.bytes_processed} bytes of a {exported.capacity_bytes}-byte disk; "
            "the backup was discarded"
        )
    backup.status = BackupStatus.SUCCEEDED
    backup.restic_id = summary.snapshot_id
    backup.consistency = exported.consistency
    backup.incremental = bool(exported.since)
    backup.checkpoint = exported.checkpoint
    backup.disk_bytes = exported.capacity_bytes
    backup.sha256 = digest
    backup.bytes_read = read
    # What the store really grew by (compressed, deduplicated; restic's own "data added" counts the
    # new chunks before compression). Another backup to the same store at the same time counts too.
    backup.bytes_added = max(stored_after - stored_before, 0)
    backup.instance_id = vm.instance_id
    backup.progress = 1.0
    backup.finished_at = timezone.now()
    backup.save()
    type(backup.store).objects.filter(pk=backup.store_id).update(used_bytes=stored_after)
    if exported.checkpoint:
        _keep_only_newest_checkpoint(vm, exported.checkpoint)


def _base(backup: Backup, vm: VirtualMachine) -> Backup | None:
    """The backup an incremental copy starts from: the newest complete one of this VM in this store
    that left a checkpoint (export_disk checks that the domain still has it)."""
    return (
        Backup.objects.usable()
        .filter(vm=vm, store=backup.store)
        .exclude(checkpoint="")
        .exclude(pk=backup.pk)
        .order_by(F("finished_at").desc(nulls_last=True), "-pk")
        .first()
    )


def _keep_only_newest_checkpoint(vm: VirtualMachine, newest: str) -> None:
    """Checkpoints cost the guest a little on every write: only the chain's head is kept."""
    try:
        with hypervisor.connect(vm.node.uri) as node:
            node.delete_checkpoints(vm.domain_name, keep=newest)
    except hypervisor.HypervisorError as error:
        log.warning("%s: could not remove older checkpoints yet: %s", vm, error)


def _copy(backup: Backup, vm: VirtualMachine, repository: Repository, base: Backup | None):
    """Export the disk on the node and stream it into restic; the scratch copy is removed in any case."""
    pool = vm.node.pool_name
    heartbeat = Heartbeat(backup)
    digest = hashlib.sha256()
    with hypervisor.connect(vm.node.uri) as node:
        exported = node.export_disk(
            vm.domain_name,
            pool,
            vm.disk_volume,
            vm.export_volume,
            lambda done, total: heartbeat(0.3 * done / total),
            checkpoint=backup.checkpoint_name,
            since=base.checkpoint if base else "",
        )
        read = 0
        try:
            if exported.since:
                summary, read = _synthetic_full(backup, base, node, exported, repository, digest, heartbeat)
                return summary, exported, digest.hexdigest(), read

            def feed(write) -> None:
                nonlocal read
                done = 0

                def sink(data: bytes) -> None:
                    nonlocal done
                    digest.update(data)
                    write(data)
                    done += len(data)
                    heartbeat(0.3 + 0.7 * done / exported.capacity_bytes)

                read = node.read_volume(pool, exported.volume, sink)

            summary = repository.backup_stream(feed, tags=[backup.tag, f"vm-{vm.uuid}"])
        finally:
            node.abort_disk_export(vm.domain_name, pool, vm.export_volume)
    return summary, exported, digest.hexdigest(), read


def _synthetic_full(backup, base, node, exported, repository, digest, heartbeat):
    """The whole disk for restic from the previous backup (read back from the store) and the changed
    blocks (read from the node); raises ChainBroken when either cannot be trusted."""
    capacity = exported.capacity_bytes
    if base.disk_bytes != capacity:
        raise ChainBroken(f"the disk's size changed ({base.disk_bytes} to {capacity} bytes)")
    with tempfile.TemporaryFile(prefix="kvmpanel-changes-") as changes:
        read = node.download_volume(exported.pool, exported.volume, changes.write)
        heartbeat(0.4)
        changes.seek(0)
        try:
            size, extents = incremental.changed_extents(changes)
        except incremental.ChangesUnreadable as error:
            raise ChainBroken(str(error)) from error
        if size != capacity:
            raise ChainBroken(f"the changed blocks describe a {size}-byte disk, not {capacity}")

        def feed(write) -> None:
            def sink(data: bytes) -> None:
                digest.update(data)
                write(data)

            try:
                with repository.dump(base.restic_id) as read_base:
                    base_digest = incremental.synthesize(
                        read_base, size, extents, changes, sink, lambda n: heartbeat(0.4 + 0.6 * n / size)
                    )
            except (ResticError, incremental.BaseMismatch) as error:
                raise ChainBroken(f"the previous backup {base.pk} could not be read back: {error}") from error
            if base_digest != base.sha256:
                # Raised before restic sees the end of its input: it is killed, and keeps nothing.
                raise ChainBroken(f"the previous backup {base.pk} does not read back as it was backed up")

        summary = repository.backup_stream(feed, tags=[backup.tag, f"vm-{backup.vm.uuid}"])
    return summary, read


def forget_partial(backup: Backup, repository: Repository | None = None) -> None:
    """Forget any restic snapshot tagged with this row that the row does not count as its own."""
    repository = repository or Repository(backup.store)
    ours = backup.restic_id  # restic may give the short form of the ID
    stray = [sid for sid in repository.snapshot_ids(backup.tag) if not (ours and sid.startswith(ours))]
    repository.forget(stray)


def cleanup(backup: Backup, repository: Repository | None = None) -> None:
    """After a failed or dead try: no scratch copy on the node, no snapshot of this row in the store."""
    vm = backup.vm
    try:
        with hypervisor.connect(vm.node.uri) as node:
            node.abort_disk_export(vm.domain_name, vm.node.pool_name, vm.export_volume)
    except hypervisor.HypervisorError as error:
        log.warning("backup %s: could not remove the node's scratch copy yet: %s", backup.pk, error)
    try:
        forget_partial(backup, repository)
    except ResticError as error:
        log.warning("backup %s: could not check the store for a partial snapshot: %s", backup.pk, error)


def _gone(vm: VirtualMachine) -> bool:
    vm.refresh_from_db(fields=["state", "deleted_at"])
    deleting = vm.operations.filter(kind=OperationKind.DELETE, status__in=ACTIVE_OPERATION_STATUSES).exists()
    return vm.state == VMState.DELETED or vm.deleted_at is not None or deleting


def is_stale(backup: Backup) -> bool:
    """A running backup that has given no sign of life for KVMPANEL_BACKUP_STALE_SECONDS: its worker died."""
    last = backup.heartbeat_at or backup.started_at or backup.created_at
    return (timezone.now() - last).total_seconds() > settings.KVMPANEL_BACKUP_STALE_SECONDS
