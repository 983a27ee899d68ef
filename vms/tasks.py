"""Celery tasks: each takes an operation id, claims its lease, checks before it acts.

Running a task twice ends in the same state, so at-least-once delivery is safe; the lease makes sure
only one worker acts on an operation at a time, and vms/engine.py's sweeper sends again whatever was
lost (a message, a web process, a worker). Every way out of `run_operation` ends the operation, or
leaves it for the sweeper with its lease running out; none leaves it "running" for good.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass

from celery import Task, shared_task
from celery.exceptions import Retry
from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

import hypervisor
from accounts import audit
from images.models import Image
from nodes.models import Node

from . import (
    draining,
    engine,
    first_boot,
    moving,
    networking,
    provisioning,
    readiness,
    reconcile,
    snapshots,
    strays,
    traffic,
    usage,
)
from .choices import OperationKind, OperationStatus, VMState, operation_task_name
from .live import publish_vm_changed
from .models import Operation, Plan, VirtualMachine
from .provisioning import domain_spec

log = logging.getLogger(__name__)

# What an operation does on the node: (session, VM, the operation) -> the VM's new state.
Work = Callable[[hypervisor.NodeSession, VirtualMachine, Operation], str]
# What takes back the work of an operation that failed or was cancelled half-way.
Undo = Callable[[hypervisor.NodeSession, VirtualMachine, Operation], None]


def max_attempts() -> int:
    return settings.KVMPANEL_OPERATION_MAX_ATTEMPTS


class OperationTask(Task):
    # Acknowledged once done; a worker process that dies hands its message back. The lease, not the
    # message, decides who acts: a copy that arrives while another worker holds the lease is dropped.
    acks_late = True
    reject_on_worker_lost = True


@dataclass(frozen=True)
class Outcome:
    """How one attempt at an operation's work ended."""

    status: str  # succeeded, failed, retry, or "database" (the database went away meanwhile)
    state: str = ""  # the VM's new state, when it succeeded
    error: str = ""


def run_operation(task: Task, operation_id: int, work: Work) -> None:
    """The bookkeeping every operation shares: the lease, attempts, retries, the outcome, the undo."""
    owner = engine.worker_identity(getattr(task.request, "id", None))
    operation = engine.retry_database("claiming", Operation.claim, operation_id, owner, engine.lease_length())
    if operation is None:
        log.info("operation %s is held by another worker or has ended; dropping this delivery", operation_id)
        return
    if operation.attempt > max_attempts():
        _fail(operation, f"gave up after {max_attempts()} attempts: {_last_reason(operation)}")
        return
    publish_vm_changed(operation.vm)
    engine.checkpoint(f"{operation.kind}.claimed")
    with engine.lease(operation):
        outcome = _attempt(operation, work)
        engine.checkpoint(f"{operation.kind}.worked")
    if outcome.status == OperationStatus.SUCCEEDED:
        _record(operation, OperationStatus.SUCCEEDED, "", outcome.state)
    elif outcome.status == "retry":
        _retry_later(task, operation, outcome.error)
    elif outcome.status == "database":
        # Nothing can be written now. The lease is no longer renewed: once it runs out, the
        # sweeper sends the operation again and a worker does it again (idempotent) and records it.
        log.warning("operation %s: the database went away during its work (%s)", operation.pk, outcome.error)
    else:
        _fail(operation, outcome.error)


def _attempt(operation: Operation, work: Work) -> Outcome:
    vm = operation.vm
    try:
        with hypervisor.connect(vm.node.uri) as node:
            state = work(node, vm, operation)
    except hypervisor.HypervisorError as error:
        if error.transient and operation.attempt < max_attempts():
            return Outcome("retry", error=str(error))
        return Outcome(OperationStatus.FAILED, error=str(error))
    except DatabaseError as error:
        return Outcome("database", error=repr(error))
    except Exception as error:
        # A bug, not a hypervisor's answer: the operation fails with its name, never hangs.
        log.exception("operation %s (%s) failed on an internal error", operation.pk, operation.kind)
        return Outcome(OperationStatus.FAILED, error=f"internal error: {type(error).__name__}: {error}")
    return Outcome(OperationStatus.SUCCEEDED, state=state)


def _retry_later(task: Task, operation: Operation, error: str) -> None:
    """A transient failure (node unreachable, libvirt busy): queued again with a growing delay."""
    countdown = settings.KVMPANEL_OPERATION_RETRY_SECONDS * 2 ** (operation.attempt - 1)
    if not engine.retry_database("handing back", operation.hand_back, error, countdown):
        _after_losing_the_lease(operation)
        return
    publish_vm_changed(operation.vm)
    try:
        raise task.retry(countdown=countdown, max_retries=None)
    except BrokerError as broker_error:  # the sweeper sends it once its delay is over
        log.warning("operation %s: could not schedule its retry: %r", operation.pk, broker_error)
    except Retry:
        raise


def _record(operation: Operation, status: str, error: str, state: str = "") -> None:
    """Write the outcome (and the VM's new state) while the lease is still ours; audit; push."""

    def write() -> bool:
        with transaction.atomic():
            if not operation.finish(status, error, lease_owner=operation.lease_owner):
                return False
            if state:
                VirtualMachine.objects.get(pk=operation.vm_id).set_state(state)
            return True

    if not engine.retry_database("recording the outcome", write):
        _after_losing_the_lease(operation)
        return
    engine.retry_database("auditing", _audit_outcome, operation)
    operation.vm.refresh_from_db()
    publish_vm_changed(operation.vm)
    if operation.kind == OperationKind.MIGRATE and operation.params.get("from_node_id"):
        draining.ring(operation.params["from_node_id"])  # a drain's next move, if one is under way


def _fail(operation: Operation, error: str) -> None:
    """Take back what the operation made (per its kind), then record the failure."""
    _undo(operation)
    _record(operation, OperationStatus.FAILED, error)


def _undo(operation: Operation) -> None:
    undo = UNDO.get(operation.kind)
    if undo is None:
        return
    vm = VirtualMachine.objects.select_related("node", "plan", "image").get(pk=operation.vm_id)
    try:
        with hypervisor.connect(vm.node.uri) as node:
            undo(node, vm, operation)
    except hypervisor.HypervisorError as error:
        # The row keeps saying what is left (the VM in "error", its UUID on the node): a Delete
        # removes it later, and the reconcile never mistakes it for a stray.
        log.warning("operation %s: could not take back what it made: %s", operation.pk, error)


def _after_losing_the_lease(operation: Operation) -> None:
    """The lease is no longer ours: staff cancelled the operation (take back what it made), or it
    ran out and another worker took over (it records the outcome; nothing to do here)."""
    operation.refresh_from_db()
    log.warning("operation %s: lease lost, now %s", operation.pk, operation.status)
    if operation.status == OperationStatus.CANCELLED:
        _undo(operation)
        publish_vm_changed(operation.vm)


def _last_reason(operation: Operation) -> str:
    if operation.error:
        return operation.error.removeprefix(f"attempt {operation.attempt - 1} failed, retrying: ")
    return "the worker running it stopped each time"


def _audit_outcome(operation: Operation) -> None:
    audit.record(
        f"vm.{operation.kind}",
        operation.vm,
        outcome=operation.status,
        actor=operation.user,
        detail=operation.error,
    )


def _install(node: hypervisor.NodeSession, vm: VirtualMachine, operation: Operation) -> None:
    """Disk, definition, seed, start: what create and reinstall share, in the order that lets the
    request finish the password's hash meanwhile (libvirt looks for the seed only at the start)."""
    provisioning.make_disk(node, vm)
    engine.checkpoint(f"{operation.kind}.disk_made")
    provisioning.apply_filter(node, vm)
    node.define_domain(domain_spec(vm))  # a redefinition keeps the UUID; the image may have changed
    engine.checkpoint(f"{operation.kind}.defined")
    provisioning.make_seed(node, vm, first_boot.settings_of(operation))
    engine.checkpoint(f"{operation.kind}.seeded")
    readiness.booting(vm)
    node.start(vm.domain_name)
    engine.checkpoint(f"{operation.kind}.started")


def _create(node: hypervisor.NodeSession, vm: VirtualMachine, operation: Operation) -> str:
    _install(node, vm, operation)
    return node.power_state(vm.domain_name)


def _undo_create(node: hypervisor.NodeSession, vm: VirtualMachine, _operation: Operation) -> None:
    """A create that failed or was cancelled half-way: take back what it made, so no disk or domain
    is left that no row knows about. The VM stays, in "error", with the operation saying why."""
    _remove_domain_and_disks(node, vm)
    vm.set_state(VMState.ERROR)


def _reinstall(node: hypervisor.NodeSession, vm: VirtualMachine, operation: Operation) -> str:
    """A new disk from the chosen image and a fresh seed; the VM keeps its UUID, name, console and network."""
    image = Image.objects.get(pk=operation.params["image_id"])
    snapshots.remove_all(node, vm)  # they live in the old disk, and would bring the old system back
    if node.domain_exists(vm.domain_name):
        node.destroy(vm.domain_name)
    engine.checkpoint("reinstall.stopped")
    node.delete_volume(vm.node.pool_name, vm.disk_volume)
    engine.checkpoint("reinstall.disk_deleted")
    if vm.installs == operation.params.get("installs_before", vm.installs):
        vm.installs += 1  # a new cloud-init instance: the seed is applied again (once per operation)
    vm.image = image
    vm.save(update_fields=["image", "installs", "updated_at"])
    _install(node, vm, operation)
    return node.power_state(vm.domain_name)


def _undo_reinstall(node: hypervisor.NodeSession, vm: VirtualMachine, _operation: Operation) -> None:
    """A reinstall that stopped after the old disk went has nothing to boot: the VM is in "error"
    (a new reinstall or a Delete mends it). One that stopped before keeps its disk and its state."""
    if not node.volume_exists(vm.node.pool_name, vm.disk_volume):
        vm.set_state(VMState.ERROR)


def _reset_password(node: hypervisor.NodeSession, vm: VirtualMachine, operation: Operation) -> str:
    node.set_user_password(vm.domain_name, vm.image.default_user, operation.params["password_hash"])
    return node.power_state(vm.domain_name)


def _change_iso(node: hypervisor.NodeSession, vm: VirtualMachine, operation: Operation) -> str:
    """Insert an ISO (and maybe boot from it at the next start), or eject it."""
    params = operation.params
    vm.iso = Image.objects.isos().filter(pk=params.get("iso_id")).first() if params.get("iso_id") else None
    vm.boot_from_iso = bool(params.get("boot")) and vm.iso is not None
    vm.save(update_fields=["iso", "boot_from_iso", "updated_at"])
    node.define_domain(domain_spec(vm))  # what the drive holds and the boot order, from now on
    node.change_iso(vm.domain_name, vm.node.pool_name, vm.iso.volume_name if vm.iso else None)
    return node.power_state(vm.domain_name)


def _rescue(node: hypervisor.NodeSession, vm: VirtualMachine, operation: Operation) -> str:
    """Boot the rescue system, with the VM's own disk attached as the second disk (untouched)."""
    image = Image.objects.rescue_systems().get(pk=operation.params["image_id"])
    node.destroy(vm.domain_name)
    provisioning.make_rescue_disk(node, vm, image)
    provisioning.make_rescue_seed(node, vm, image, first_boot.settings_of(operation))
    vm.rescue_image = image
    vm.save(update_fields=["rescue_image", "updated_at"])
    provisioning.apply_filter(node, vm)
    node.define_domain(domain_spec(vm))
    readiness.booting(vm)
    node.start(vm.domain_name)
    return node.power_state(vm.domain_name)


def _leave_rescue(node: hypervisor.NodeSession, vm: VirtualMachine, _operation: Operation) -> str:
    """Back to the VM's own disk; the rescue system's disk and seed are thrown away."""
    node.destroy(vm.domain_name)
    vm.rescue_image = None
    vm.save(update_fields=["rescue_image", "updated_at"])
    node.define_domain(domain_spec(vm))
    provisioning.remove_rescue_system(node, vm)
    node.start(vm.domain_name)
    return node.power_state(vm.domain_name)


def _resize(node: hypervisor.NodeSession, vm: VirtualMachine, operation: Operation) -> str:
    """The stopped VM gets its new plan's vCPUs and memory, and its disk grows to the plan's size.

    The row already holds the new plan. If the node refuses, the old plan comes back
    (_undo_resize); a disk already grown stays grown, harmlessly.
    """
    node.define_domain(domain_spec(vm))
    traffic.apply(node, vm)  # the new plan's port speeds, on the running domain too where it runs
    node.grow_volume(vm.node.pool_name, vm.disk_volume, vm.plan.disk_bytes)
    return node.power_state(vm.domain_name)


def _undo_resize(node: hypervisor.NodeSession, vm: VirtualMachine, operation: Operation) -> None:
    """The old plan and the domain's old definition come back."""
    vm.plan = Plan.objects.get(pk=operation.params["from_plan_id"])
    vm.save(update_fields=["plan", "updated_at"])
    node.define_domain(domain_spec(vm))
    traffic.apply(node, vm)


def _change_addresses(node: hypervisor.NodeSession, vm: VirtualMachine, _operation: Operation) -> str:
    """Staff changed the VM's addresses (the rows already say so): the filter follows at once, the
    domain's routes and the guest's seed from its next start."""
    provisioning.apply_filter(node, vm)
    if node.domain_exists(vm.domain_name):
        node.define_domain(domain_spec(vm))
    provisioning.make_seed(node, vm, provisioning.last_seed_params(vm))
    return node.power_state(vm.domain_name) if node.domain_exists(vm.domain_name) else vm.state


def _remove_domain_and_disks(node: hypervisor.NodeSession, vm: VirtualMachine) -> None:
    """The VM's domain (however it is: running, stopped, transient, already gone), with its
    snapshots (they live in its disk), and every volume the VM owns."""
    pool = vm.node.pool_name
    own = (
        vm.disk_volume,
        vm.seed_volume,
        vm.rescue_volume,
        vm.rescue_seed_volume,
        vm.export_volume,
        f"{vm.export_volume}.job",  # where a running VM's backup job writes (hypervisor/protection.py)
        vm.restore_volume,
    )
    snapshots.remove_all(node, vm)
    volumes = {(pool, volume) for volume in own}
    volumes.update(node.remove_domain(vm.domain_name))
    provisioning.remove_filter(node, vm)  # no NIC refers to it any more
    engine.checkpoint("delete.domain_removed")
    for volume_pool, volume in volumes:
        # Only the VM's own volumes: never its image or anything shared.
        if volume.startswith(vm.domain_name):
            node.delete_volume(volume_pool, volume)


def _start(node: hypervisor.NodeSession, vm: VirtualMachine, _operation: Operation) -> str:
    node.start(vm.domain_name)
    return node.power_state(vm.domain_name)


def _shutdown(node: hypervisor.NodeSession, vm: VirtualMachine, _operation: Operation) -> str:
    node.shutdown(vm.domain_name, timeout=settings.KVMPANEL_SHUTDOWN_TIMEOUT)
    return node.power_state(vm.domain_name)


def _force_off(node: hypervisor.NodeSession, vm: VirtualMachine, _operation: Operation) -> str:
    node.destroy(vm.domain_name)
    return node.power_state(vm.domain_name)


def _reboot(node: hypervisor.NodeSession, vm: VirtualMachine, _operation: Operation) -> str:
    node.reboot(vm.domain_name)
    return node.power_state(vm.domain_name)


def _delete(node: hypervisor.NodeSession, vm: VirtualMachine, _operation: Operation) -> str:
    _remove_domain_and_disks(node, vm)
    networking.release_all(vm)  # only now: nothing answers on the addresses any more; they cool down
    if vm.deleted_at is None:
        vm.deleted_at = timezone.now()
        vm.save(update_fields=["deleted_at"])
    return VMState.DELETED


def _operation_task(kind: str, work: Work):
    def task(self, operation_id: int) -> None:
        run_operation(self, operation_id, work)

    task.__name__ = task.__qualname__ = f"{kind}_vm"
    task.__module__ = __name__
    return shared_task(bind=True, base=OperationTask, name=operation_task_name(kind))(task)


# What each kind of operation does on the node; the task wrapper does the rest.
WORK: dict[str, Work] = {
    OperationKind.CREATE: _create,
    OperationKind.START: _start,
    OperationKind.SHUTDOWN: _shutdown,
    OperationKind.FORCE_OFF: _force_off,
    OperationKind.REBOOT: _reboot,
    OperationKind.REINSTALL: _reinstall,
    OperationKind.RESET_PASSWORD: _reset_password,
    OperationKind.CHANGE_ISO: _change_iso,
    OperationKind.RESCUE: _rescue,
    OperationKind.LEAVE_RESCUE: _leave_rescue,
    OperationKind.RESIZE: _resize,
    OperationKind.SNAPSHOT: snapshots.take,
    OperationKind.REVERT_SNAPSHOT: snapshots.revert,
    OperationKind.DELETE_SNAPSHOT: snapshots.delete,
    OperationKind.CHANGE_ADDRESSES: _change_addresses,
    OperationKind.MIGRATE: moving.move,
    OperationKind.DELETE: _delete,
}
TASKS = {kind: _operation_task(kind, work) for kind, work in WORK.items()}
# What takes back the work of an operation of that kind that failed or was cancelled half-way.
UNDO: dict[str, Undo] = {
    OperationKind.CREATE: _undo_create,
    OperationKind.REINSTALL: _undo_reinstall,
    OperationKind.RESIZE: _undo_resize,
    OperationKind.MIGRATE: moving.undo,
}


@shared_task(name="vms.tasks.sweep_operations")
def sweep_operations() -> list[int]:
    """Periodic (every KVMPANEL_SWEEP_SECONDS): send again what nothing is working on (vms/engine.py)."""
    return engine.sweep()


@shared_task(name=draining.DRAIN_TASK, ignore_result=True)
def drain_node(node_id: int) -> None:
    """Ask for a draining node's next moves (vms/draining.py)."""
    node = Node.objects.filter(pk=node_id).first()
    if node is not None:
        draining.top_up(node)


@shared_task(name="vms.tasks.drain_nodes", ignore_result=True)
def drain_nodes() -> None:
    """Periodic: every draining node asks for its next moves."""
    for node in Node.objects.filter(draining=True):
        draining.top_up(node)


@shared_task(name="vms.tasks.undo_cancelled", acks_late=True, reject_on_worker_lost=True)
def undo_cancelled(operation_id: int) -> None:
    """After staff cancelled an operation: take back what it made (on the VM's node's queue)."""
    operation = Operation.objects.filter(pk=operation_id, status=OperationStatus.CANCELLED).first()
    if operation is not None:
        _undo(operation)
        publish_vm_changed(operation.vm)


@shared_task(name=readiness.WATCH_TASK, ignore_result=True)
def watch_first_boot(vm_id: int, since: float) -> None:
    """Ask a booting guest once whether its first boot has finished (it asks again itself if not)."""
    readiness.check(vm_id, since)


@shared_task(name="vms.tasks.reconcile_nodes")
def reconcile_nodes() -> None:
    """Periodic: one reconcile per node, on the node's own queue."""
    for node in reconcile.reconcilable_nodes():
        reconcile_node.apply_async((node.pk,), queue=node.queue)


@shared_task(name="vms.tasks.reconcile_node")
def reconcile_node(node_id: int) -> None:
    node = Node.objects.filter(pk=node_id).first()
    if node is not None:
        reconcile.reconcile_node(node)


@shared_task(name="vms.tasks.remove_stray")
def remove_stray(node_id: int, name: str) -> None:
    """A stray staff asked to remove (vms.strays): only a domain with the panel's marker goes."""
    node = Node.objects.filter(pk=node_id).first()
    if node is None:
        return
    try:
        strays.remove(node, name)
    except (strays.StrayRefused, hypervisor.NotOurs) as refusal:
        log.warning("stray %s on %s not removed: %s", name, node, refusal)
        audit.record("node.remove_stray", node, outcome="refused", detail=f"{name}: {refusal}")


@shared_task(name="vms.tasks.maintain_usage")
def maintain_usage() -> dict[str, int]:
    """Periodic: roll usage samples up into coarser tiers and prune each tier."""
    return usage.maintain()


@shared_task(bind=True, name=traffic.APPLY_TASK, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def apply_bandwidth(self, vm_id: int) -> int:
    """Put a VM's NICs at its current speeds (a throttle set or lifted), live and in its definition,
    without a restart. Idempotent; a node that does not answer is asked again with a growing delay."""
    vm = VirtualMachine.objects.select_related("node", "plan").filter(pk=vm_id).first()
    if vm is None or vm.state == VMState.DELETED:
        return 0
    try:
        with hypervisor.connect(vm.node.uri) as node:
            return traffic.apply(node, vm)
    except hypervisor.HypervisorError as error:
        if not error.transient:
            log.warning("VM %s: could not set its speeds: %s", vm_id, error)
            return 0
        countdown = min(300, settings.KVMPANEL_OPERATION_RETRY_SECONDS * 2 ** min(self.request.retries, 6))
        raise self.retry(countdown=countdown) from error


@shared_task(name="vms.tasks.turn_traffic_month")
def turn_traffic_month() -> list[int]:
    """Periodic: a new month lifts last month's traffic throttles (vms/traffic.py)."""
    return traffic.turn_month()
