"""What customers and staff ask of backups: check, record, hand to the worker after commit.

A backup is its own row (not a VM operation): it copies the disk while the VM goes on running, and
the VM may even be deleted meanwhile. A restore changes the VM, so it is an operation (`restore`)
like any other, run by backups.tasks.restore_vm.
"""

from celery import current_app
from django.db import IntegrityError, transaction
from django.dispatch import receiver
from django.utils import timezone

from accounts import audit
from vms import actions as vm_actions
from vms.choices import OperationKind, VMState
from vms.models import Operation, VirtualMachine
from vms.signals import move_refused

from .choices import BackupKind, BackupStatus
from .models import Backup, BackupSchedule, BackupStore

ActionRefused = vm_actions.ActionRefused
BACKUP_STATES = (VMState.RUNNING, VMState.STOPPED, VMState.PAUSED, VMState.CRASHED)


def start_backup(
    vm: VirtualMachine, user, kind: str = BackupKind.MANUAL, store: BackupStore | None = None
) -> Backup:
    """Queue a backup of `vm` now (it starts as soon as its node has a free slot)."""
    store = store or BackupStore.default()
    try:
        if store is None:
            raise ActionRefused("No backup store is configured yet; staff add one in the backoffice.")
        if vm.state not in BACKUP_STATES:
            raise ActionRefused(f"Cannot back up a VM that is {vm.get_state_display().lower()}.")
        if vm.rescue_image_id:
            raise ActionRefused(f"{vm.name} runs a rescue system: leave rescue first, then back it up.")
        busy = vm.active_operation()
        if busy is not None:
            raise ActionRefused(
                f"Wait until the {busy.get_kind_display().lower()} of {vm.name} has finished."
            )
        if not vm.node.accepts_changes:
            raise ActionRefused(f"Node {vm.node} is not answering; try again when it is.")
        with transaction.atomic():
            backup = Backup.objects.create(vm=vm, store=store, user=user, kind=kind)
    except IntegrityError:
        refusal = ActionRefused(f"A backup of {vm.name} is already queued or running.")
        audit.record("vm.backup", vm, outcome="refused", actor=user, detail=str(refusal))
        raise refusal from None
    except ActionRefused as refusal:
        audit.record("vm.backup", vm, outcome="refused", actor=user, detail=str(refusal))
        raise
    audit.record("vm.backup", vm, outcome="requested", actor=user, detail=f"{kind} to {store}")
    transaction.on_commit(ring)
    return backup


@receiver(move_refused)
def backup_in_the_way(sender, vm: VirtualMachine, **kwargs) -> str | None:
    """Why `vm` cannot move now: a backup is reading its disk on this node (a queued one waits for the
    move instead, and runs on the VM's new node: tasks.start_queued)."""
    if Backup.objects.filter(vm=vm, status=BackupStatus.RUNNING).exists():
        return f"A backup of {vm.name} is running: move it once the backup has finished."
    return None


def restore(vm: VirtualMachine, user, backup: Backup) -> Operation:
    """Replace the VM's disk with `backup`'s (everything written since is lost)."""
    _check_usable(backup, vm.owner)
    return vm_actions.request(vm, user, OperationKind.RESTORE, _params(backup))


def restore_as_new(backup: Backup, user, hostname: str, display_name: str = "") -> VirtualMachine:
    """A new VM of the backup's owner, on the same plan, within their quota, with the backup's disk."""
    source = backup.vm
    _check_usable(backup, source.owner)
    vm, _operation = vm_actions.new_vm(
        owner=source.owner,
        plan=source.plan,
        image=source.image,
        hostname=hostname,
        display_name=display_name,
        kind=OperationKind.RESTORE,
        params={**_params(backup), "new_vm": True},
    )
    return vm


def save_schedule(vm: VirtualMachine, user, **fields) -> BackupSchedule:
    """Create or change the VM's schedule; its next run is computed from now."""
    fields.setdefault("store", BackupStore.default())
    if fields["store"] is None:
        raise ActionRefused("No backup store is configured yet; staff add one in the backoffice.")
    schedule, _created = BackupSchedule.objects.update_or_create(vm=vm, defaults=fields)
    schedule.next_run_at = schedule.next_after(timezone.now()) if schedule.enabled else None
    schedule.save(update_fields=["next_run_at"])
    audit.record("vm.backup_schedule", vm, actor=user, outcome="succeeded", detail=str(schedule))
    return schedule


def _check_usable(backup: Backup, owner) -> None:
    if backup.status != BackupStatus.SUCCEEDED:
        raise ActionRefused("Only a complete backup can be restored.")
    if backup.vm.owner_id != owner.pk:
        raise ActionRefused("That backup belongs to someone else.")


def _params(backup: Backup) -> dict:
    return {"backup_id": backup.pk, "backup": str(backup)}


def ring() -> None:
    """Ask the dispatcher to start what may start (by name: it runs on the default queue)."""
    current_app.send_task("backups.tasks.dispatch")
