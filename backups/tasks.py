"""Celery tasks of backups: dispatching (schedules, limits, dead workers), taking, restoring, checking."""

import logging

from celery import shared_task
from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone

from accounts import audit
from vms.choices import ACTIVE_OPERATION_STATUSES, OperationKind, operation_task_name
from vms.models import Operation
from vms.tasks import OperationTask, run_operation

from . import actions, restoring, retention, taking
from .choices import BackupKind, BackupStatus
from .models import Backup, BackupSchedule, BackupStore
from .restic import Repository, ResticError

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 3


@shared_task(bind=True, base=OperationTask, name=operation_task_name(OperationKind.RESTORE))
def restore_vm(self, operation_id: int) -> None:
    """The `restore` operation: vms' bookkeeping, this app's work."""
    run_operation(self, operation_id, restoring.restore)


@shared_task(name="backups.tasks.dispatch")
def dispatch() -> dict[str, int]:
    """Periodic (and rung after each request and each backup): due schedules become backups, dead
    backups end, and queued backups start while their node has fewer than KVMPANEL_BACKUPS_PER_NODE."""
    return {"scheduled": queue_due_schedules(), "dead": end_dead_backups(), "started": start_queued()}


def queue_due_schedules(now=None) -> int:
    now = now or timezone.now()
    queued = 0
    for schedule in BackupSchedule.objects.filter(enabled=True, next_run_at__lte=now).select_related("vm"):
        schedule.next_run_at = schedule.next_after(now)
        schedule.save(update_fields=["next_run_at"])
        try:
            actions.start_backup(schedule.vm, None, kind=BackupKind.SCHEDULED, store=schedule.store)
        except actions.ActionRefused as refusal:
            log.info("scheduled backup of %s skipped: %s", schedule.vm, refusal)
            continue
        queued += 1
    return queued


def end_dead_backups() -> int:
    """Running backups whose worker stopped giving signs of life: failed, their leftovers removed."""
    ended = 0
    for backup in Backup.objects.filter(status=BackupStatus.RUNNING).select_related("vm__node", "store"):
        if taking.is_stale(backup):
            _fail(backup, "the worker stopped half-way (killed or lost); nothing of this try was kept")
            taking.cleanup(backup)
            ended += 1
    return ended


def _moving_vms():
    moves = Operation.objects.filter(kind=OperationKind.MIGRATE, status__in=ACTIVE_OPERATION_STATUSES)
    return moves.values("vm")


def start_queued() -> int:
    started = 0
    running = dict(
        Backup.objects.filter(status=BackupStatus.RUNNING).values_list("vm__node").annotate(n=Count("pk"))
    )
    queued = (
        Backup.objects.filter(status=BackupStatus.QUEUED)
        # A VM that is moving keeps its backup queued: it runs once the VM is on its new node.
        .exclude(vm__in=_moving_vms())
        .select_related("vm__node")
        .order_by("created_at")
    )
    for backup in queued:
        node = backup.vm.node
        if running.get(node.pk, 0) >= settings.KVMPANEL_BACKUPS_PER_NODE:
            continue
        # The row says running before the message leaves: two dispatchers never start one backup twice.
        claimed = Backup.objects.filter(pk=backup.pk, status=BackupStatus.QUEUED).update(
            status=BackupStatus.RUNNING, started_at=timezone.now(), heartbeat_at=timezone.now()
        )
        if claimed:
            running[node.pk] = running.get(node.pk, 0) + 1
            run_backup.apply_async((backup.pk,), queue=node.queue)
            started += 1
    return started


@shared_task(name="backups.tasks.run_backup", bind=True, acks_late=True, reject_on_worker_lost=True)
def run_backup(self, backup_id: int) -> None:
    backup = Backup.objects.select_related("vm__node", "store").filter(pk=backup_id).first()
    if backup is None or backup.status != BackupStatus.RUNNING:
        return  # done, failed by the sweeper, or never claimed: nothing to do
    if backup.attempt >= MAX_ATTEMPTS:
        _fail(backup, f"gave up after {backup.attempt} attempts")
        taking.cleanup(backup)
        return
    Backup.objects.filter(pk=backup.pk).update(attempt=backup.attempt + 1, heartbeat_at=timezone.now())
    try:
        taking.take(backup)
    except taking.BackupFailed as failure:
        _fail(backup, str(failure))
    except Exception:
        _fail(backup, "internal error; staff can see it in the worker's log")
        taking.cleanup(backup)
        raise
    else:
        audit.record("vm.backup", backup.vm, outcome="succeeded", actor=backup.user, detail=_gist(backup))
        apply_retention(backup)
    finally:
        actions.ring()


def apply_retention(backup: Backup) -> list[int]:
    """After a scheduled backup: forget what the VM's schedule no longer keeps (rows and store alike)."""
    schedule = BackupSchedule.objects.filter(vm=backup.vm).first()
    if schedule is None or backup.kind != BackupKind.SCHEDULED:
        return []
    pruned = retention.to_prune(Backup.objects.usable().filter(vm=backup.vm, store=backup.store), schedule)
    if not pruned:
        return []
    try:
        Repository(backup.store).forget([b.restic_id for b in pruned])
    except ResticError as error:
        log.warning("retention for %s could not prune yet: %s", backup.vm, error)
        return []
    ids = [b.pk for b in pruned]
    Backup.objects.filter(pk__in=ids).update(status=BackupStatus.PRUNED)
    return ids


@shared_task(name="backups.tasks.check_stores")
def check_stores() -> dict[str, bool]:
    """Periodic: verify every store (structure, and a share of its data read back) and record its usage."""
    return {store.name: check_store(store) for store in BackupStore.objects.all()}


def check_store(store: BackupStore) -> bool:
    repository = Repository(store)
    try:
        repository.ensure_initialized()
        message = repository.check(settings.KVMPANEL_BACKUP_CHECK_READ_PERCENT)
        store.used_bytes = repository.used_bytes()
        store.check_ok = True
    except ResticError as error:
        message = str(error)
        store.check_ok = False
        audit.record("backup_store.check", None, outcome="failed", detail=f"{store}: {message}")
    store.check_message = message
    store.checked_at = timezone.now()
    store.save(update_fields=["used_bytes", "check_ok", "check_message", "checked_at"])
    return bool(store.check_ok)


def _fail(backup: Backup, reason: str) -> None:
    Backup.objects.filter(pk=backup.pk).filter(~Q(status=BackupStatus.SUCCEEDED)).update(
        status=BackupStatus.FAILED, error=reason, finished_at=timezone.now()
    )
    backup.refresh_from_db()
    audit.record("vm.backup", backup.vm, outcome="failed", actor=backup.user, detail=reason)


def _gist(backup: Backup) -> str:
    return (
        f"{backup.disk_bytes} bytes, {backup.bytes_read} read from the node, "
        f"{backup.bytes_added} added to {backup.store}, {backup.consistency}"
    )
