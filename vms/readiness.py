"""Ready: a VM's first boot after a create, reinstall or rescue has finished (cloud-init done).

"Running" is what libvirt says; "ready" is learned from the guest itself, through its agent
(hypervisor.NodeSession.first_boot_finished). Until then the pages say "booting", and actions that
need the guest (a password reset, a clean shutdown) wait. A worker asks the agent every
KVMPANEL_READY_POLL_SECONDS seconds, each ask a task of its own on the node's queue (no worker
waits in between), for KVMPANEL_READY_TIMEOUT_SECONDS at most.
"""

import logging
import time

from celery import current_app
from django.conf import settings
from django.utils import timezone

import hypervisor

from .choices import VMState
from .live import publish_vm_changed
from .models import VirtualMachine

log = logging.getLogger(__name__)
WATCH_TASK = "vms.tasks.watch_first_boot"


def booting(vm: VirtualMachine) -> None:
    """The VM is about to boot a fresh install (or a rescue system): not ready until it says so."""
    if vm.ready_at is not None:
        vm.ready_at = None
        vm.save(update_fields=["ready_at", "updated_at"])
    if _watched(vm):
        _ask_later(vm, time.time())


def _ask_later(vm: VirtualMachine, since: float) -> None:
    # Sent by name: the doorbell only (the task, in vms.tasks, calls check()).
    current_app.send_task(
        WATCH_TASK, (vm.pk, since), queue=vm.node.queue, countdown=settings.KVMPANEL_READY_POLL_SECONDS
    )


def _watched(vm: VirtualMachine) -> bool:
    image = vm.rescue_image if vm.rescue_image_id else vm.image
    return image.cloud_init


def check(vm_id: int, since: float) -> None:
    """Ask the guest once; mark the VM ready, or ask again later (until the time limit)."""
    vm = VirtualMachine.objects.select_related("node", "owner").filter(pk=vm_id).first()
    if vm is None or vm.ready_at is not None or vm.state == VMState.DELETED:
        return
    try:
        with hypervisor.connect(vm.node.uri) as node:
            finished = node.first_boot_finished(vm.domain_name)
    except hypervisor.NotFound:
        return  # the domain is gone (deleted meanwhile)
    except hypervisor.HypervisorError as error:
        log.info("first boot of %s: node did not answer (%s); asking again", vm, error)
        finished = False
    if finished:
        mark_ready(vm)
    elif time.time() - since < settings.KVMPANEL_READY_TIMEOUT_SECONDS:
        _ask_later(vm, since)
    else:
        log.warning("first boot of %s not finished after %s s; no longer asking", vm, time.time() - since)


def mark_ready(vm: VirtualMachine) -> None:
    updated = VirtualMachine.objects.filter(pk=vm.pk, ready_at__isnull=True).update(ready_at=timezone.now())
    if updated:
        vm.refresh_from_db()
        publish_vm_changed(vm)
