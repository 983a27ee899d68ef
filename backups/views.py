"""The Backups part of a VM's page, and what it asks for. Access is vms' own (owner and staff; else 404)."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from vms.views import _get_vm_for_user

from . import actions
from .forms import RestoreForm, ScheduleForm
from .models import Backup, BackupSchedule

SHOWN = 20


@login_required
def vm_backups(request, vm_uuid):
    """The partial the VM page loads (and reloads every few seconds while a backup runs)."""
    vm = _get_vm_for_user(request.user, vm_uuid)
    return render(request, "backups/_vm_backups.html", _context(vm))


def _context(vm, schedule_form=None) -> dict:
    backups = list(vm.backups.exclude(status="pruned").select_related("store")[:SHOWN])
    schedule = BackupSchedule.objects.filter(vm=vm).first()
    return {
        "vm": vm,
        "backups": backups,
        "active": any(b.status in ("queued", "running") for b in backups),
        "schedule": schedule,
        "schedule_form": schedule_form or ScheduleForm(instance=schedule),
    }


@require_POST
@login_required
def vm_backup_start(request, vm_uuid):
    vm = _get_vm_for_user(request.user, vm_uuid)
    try:
        actions.start_backup(vm, request.user)
    except actions.ActionRefused as refusal:
        messages.error(request, str(refusal))
    else:
        messages.info(request, f"Backing up {vm.name}: it starts as soon as its node has a free slot.")
    return redirect(vm)


@require_POST
@login_required
def vm_backup_schedule(request, vm_uuid):
    vm = _get_vm_for_user(request.user, vm_uuid)
    form = ScheduleForm(request.POST, instance=BackupSchedule.objects.filter(vm=vm).first())
    if not form.is_valid():
        messages.error(
            request,
            "The schedule was not saved: " + " ".join(e for errs in form.errors.values() for e in errs),
        )
        return redirect(vm)
    try:
        schedule = actions.save_schedule(vm, request.user, **form.cleaned_data)
    except actions.ActionRefused as refusal:
        messages.error(request, str(refusal))
    else:
        if schedule.enabled:
            messages.info(request, f"Backups of {vm.name}: next at {schedule.next_run_at:%Y-%m-%d %H:%M}.")
        else:
            messages.info(request, f"Scheduled backups of {vm.name} are off.")
    return redirect(vm)


@login_required
def vm_backup_restore(request, vm_uuid, backup_id):
    """Asks first: a replaced disk loses what was written since the backup; a new VM counts in the quota."""
    vm = _get_vm_for_user(request.user, vm_uuid)
    backup = get_object_or_404(Backup.objects.usable().filter(vm=vm), pk=backup_id)
    form = RestoreForm(request.POST or None, vm=vm)
    if request.method == "POST" and form.is_valid():
        try:
            if form.cleaned_data["mode"] == "new":
                new = actions.restore_as_new(backup, request.user, form.cleaned_data["hostname"])
                messages.info(request, f"Restoring {backup} as the new VM {new.name}.")
                return redirect(new)
            actions.restore(vm, request.user, backup)
        except actions.ActionRefused as refusal:
            form.add_error(None, str(refusal))
        else:
            messages.info(
                request, f"Restoring {vm.name} from its backup of {backup.created_at:%Y-%m-%d %H:%M}."
            )
            return redirect(vm)
    return render(request, "backups/restore.html", {"vm": vm, "backup": backup, "form": form})
