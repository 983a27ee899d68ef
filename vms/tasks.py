"""Celery tasks: each takes an operation id, re-reads state, checks before it acts.

Running a task twice ends in the same state, so at-least-once delivery
(acks_late, reject on worker loss) is safe.
"""

import contextlib
import logging
from collections.abc import Callable

import redis
from celery import Task, shared_task
from django.conf import settings
from django.utils import timezone

from accounts import audit

from . import first_boot, hypervisor, library, provisioning, reconcile, usage
from .choices import NodeStatus, OperationKind, VMState
from .live import publish_vm_changed
from .models import Image, Node, Operation, Plan, VirtualMachine
from .nodes import refresh_node

log = logging.getLogger(__name__)

# A worker killed mid-task hands the task back; after this many tries we give up.
MAX_ATTEMPTS = 5
# An image sync that dies without releasing its lock blocks the next one for this long at most.
IMAGE_SYNC_LOCK_SECONDS = 6 * 3600

# What an operation does on the node: (session, VM, the operation) -> the VM's new state.
Work = Callable[[hypervisor.NodeSession, VirtualMachine, Operation], str]


class OperationTask(Task):
    acks_late = True
    reject_on_worker_lost = True
    max_retries = settings.KVMPANEL_TASK_MAX_RETRIES


def run_operation(task: Task, operation_id: int, work: Work) -> None:
    """The bookkeeping every operation shares: status, attempts, retries, outcome."""
    operation = (
        Operation.objects.select_related("vm__node", "vm__plan", "vm__image").filter(pk=operation_id).first()
    )
    if operation is None:
        log.warning("operation %s does not exist; dropping its task", operation_id)
        return
    if not operation.is_active:
        log.info("operation %s already %s; nothing to do", operation_id, operation.status)
        return
    if operation.attempt >= MAX_ATTEMPTS:
        operation.mark_failed(f"gave up after {operation.attempt} attempts")
        return
    operation.mark_running()
    vm = operation.vm
    publish_vm_changed(vm)
    try:
        with hypervisor.connect(vm.node.uri) as node:
            new_state = work(node, vm, operation)
    except hypervisor.HypervisorError as error:
        if error.transient and task.request.retries < task.max_retries:
            operation.mark_retrying(str(error))
            raise task.retry(exc=error, countdown=5 * 2**task.request.retries) from error
        operation.mark_failed(str(error))
        _audit_outcome(operation)
        publish_vm_changed(vm)
        return
    except Exception as error:
        # A bug, not a hypervisor answer: record it so the operation never
        # hangs as "running", then let Celery log the traceback.
        operation.mark_failed(f"internal error: {type(error).__name__}")
        raise
    vm.set_state(new_state)
    operation.mark_succeeded()
    _audit_outcome(operation)
    publish_vm_changed(vm)


def _audit_outcome(operation: Operation) -> None:
    audit.record(
        f"vm.{operation.kind}",
        operation.vm,
        outcome=operation.status,
        actor=operation.user,
        detail=operation.error,
    )


def domain_spec(vm: VirtualMachine) -> hypervisor.DomainSpec:
    node = vm.node
    return hypervisor.DomainSpec(
        name=vm.domain_name,
        uuid=str(vm.uuid),
        title=vm.name,
        virt_type=node.virt_type,
        vcpus=vm.plan.vcpus,
        memory_mib=vm.plan.memory_mib,
        pool=node.pool_name,
        disk_volume=vm.disk_volume,
        network=node.network_name,
        vnc_password=vm.vnc_password,
        vnc_listen=node.console_host,
        hostname=vm.hostname,
        owner_id=vm.owner_id,
        cdrom_volumes=provisioning.seed_volumes(vm),
        iso_volume=vm.iso.volume_name if vm.iso else None,
        boot_from_iso=vm.boot_from_iso and vm.iso is not None,
        rescue_volume=vm.rescue_volume if vm.rescue_image_id else None,
    )


def _install(node: hypervisor.NodeSession, vm: VirtualMachine, operation: Operation) -> None:
    """Disk, definition, seed, start: what create and reinstall share, in the order that lets the
    request finish the password's hash meanwhile (libvirt looks for the seed only at the start)."""
    provisioning.make_disk(node, vm)
    node.define_domain(domain_spec(vm))  # a redefinition keeps the UUID; the image may have changed
    provisioning.make_seed(node, vm, first_boot.settings_of(operation))
    node.start(vm.domain_name)


def _create(node: hypervisor.NodeSession, vm: VirtualMachine, operation: Operation) -> str:
    try:
        _install(node, vm, operation)
    except hypervisor.HypervisorError as error:
        if not error.transient:
            # A permanent failure half-way: take back what we made, so no
            # disk or domain is left that no row knows about.
            _remove_domain_and_disks(node, vm)
            vm.set_state(VMState.ERROR)
        raise
    return node.power_state(vm.domain_name)


def _reinstall(node: hypervisor.NodeSession, vm: VirtualMachine, operation: Operation) -> str:
    """A new disk from the chosen image and a fresh seed; the VM keeps its UUID, name, console and network."""
    image = Image.objects.get(pk=operation.params["image_id"])
    if node.domain_exists(vm.domain_name):
        node.destroy(vm.domain_name)
    pool = vm.node.pool_name
    node.delete_volume(pool, vm.disk_volume)
    vm.image = image
    vm.installs += 1  # a new cloud-init instance: the seed is applied again
    vm.save(update_fields=["image", "installs", "updated_at"])
    try:
        _install(node, vm, operation)
    except hypervisor.HypervisorError as error:
        if not error.transient:
            vm.set_state(VMState.ERROR)  # no disk to boot; the operation says why
        raise
    return node.power_state(vm.domain_name)


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
    node.define_domain(domain_spec(vm))
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
    (the domain's definition with it); a disk already grown stays grown, harmlessly.
    """
    try:
        node.define_domain(domain_spec(vm))
        node.grow_volume(vm.node.pool_name, vm.disk_volume, vm.plan.disk_bytes)
    except hypervisor.HypervisorError as error:
        if not error.transient:
            vm.plan = Plan.objects.get(pk=operation.params["from_plan_id"])
            vm.save(update_fields=["plan", "updated_at"])
            node.define_domain(domain_spec(vm))
        raise
    return node.power_state(vm.domain_name)


def _remove_domain_and_disks(node: hypervisor.NodeSession, vm: VirtualMachine) -> None:
    pool = vm.node.pool_name
    own = (vm.disk_volume, vm.seed_volume, vm.rescue_volume, vm.rescue_seed_volume)
    volumes = {(pool, volume) for volume in own}
    if node.domain_exists(vm.domain_name):
        volumes.update(node.undefine(vm.domain_name))
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
    vm.deleted_at = timezone.now()
    vm.save(update_fields=["deleted_at"])
    return VMState.DELETED


def _operation_task(kind: str, work: Work):
    def task(self, operation_id: int) -> None:
        run_operation(self, operation_id, work)

    task.__name__ = task.__qualname__ = f"{kind}_vm"
    task.__module__ = __name__
    return shared_task(bind=True, base=OperationTask, name=f"vms.tasks.{kind}_vm")(task)


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
    OperationKind.DELETE: _delete,
}
TASKS = {kind: _operation_task(kind, work) for kind, work in WORK.items()}


@shared_task(name="vms.tasks.refresh_nodes")
def refresh_nodes() -> None:
    """Periodic: capacity and reachability of every node."""
    for node in Node.objects.all():
        refresh_node(node)


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


@shared_task(name="vms.tasks.maintain_usage")
def maintain_usage() -> dict[str, int]:
    """Periodic: roll usage samples up into coarser tiers and prune each tier."""
    return usage.maintain()


@shared_task(name="vms.tasks.fetch_image", acks_late=True, reject_on_worker_lost=True)
def fetch_image(image_id: int) -> None:
    """Download an image added by URL and place it on every online node."""
    image = Image.objects.filter(
        pk=image_id, status__in=[Image.Status.PENDING, Image.Status.DOWNLOADING]
    ).first()
    if image is not None:
        library.fetch_and_place(image)


@shared_task(name="vms.tasks.place_uploaded_image", acks_late=True, reject_on_worker_lost=True)
def place_uploaded_image(image_id: int, path: str) -> None:
    """Place an image uploaded in the backoffice on every online node, then remove the uploaded file."""
    image = Image.objects.filter(pk=image_id, status=Image.Status.PLACING).first()
    if image is None:
        log.warning("image %s is gone or no longer being placed; dropping its upload", image_id)
        library.discard_upload(path)
        return
    library.place_upload(image, path)


@shared_task(name="vms.tasks.sync_node_images", acks_late=True, reject_on_worker_lost=True)
def sync_node_images(node_id: int) -> dict[str, str]:
    """Copy the ready images a node lacks into its pool (library.sync_node), one sync per node at a time."""
    node = Node.objects.filter(pk=node_id, status=NodeStatus.ONLINE).first()
    if node is None:
        return {}
    # Two syncs of one node would see each other's copy in progress as unfinished and replace it.
    lock = redis.Redis.from_url(settings.REDIS_URL).lock(
        f"kvmpanel:image-sync:{node.pk}", timeout=IMAGE_SYNC_LOCK_SECONDS, blocking=False
    )
    if not lock.acquire():
        log.info("an image sync of %s is already running", node)
        return {}
    try:
        return library.sync_node(node)
    except hypervisor.HypervisorError as error:
        log.warning("image sync of %s failed: %s", node, error)
        return {}
    finally:
        with contextlib.suppress(redis.exceptions.LockError):
            lock.release()


@shared_task(name="vms.tasks.remove_stale_files")
def remove_stale_files() -> list[str]:
    """Periodic: files a killed process left in the download folder (older than a download may take)."""
    return library.remove_stale_files(older_than_seconds=settings.KVMPANEL_IMAGE_DOWNLOAD_TIMEOUT + 6 * 3600)


@shared_task(name="vms.tasks.remove_image_volumes")
def remove_image_volumes(volume_name: str) -> None:
    """After an image is deleted: its volume leaves every node's pool."""
    library.remove_from_nodes(volume_name, Node.objects.all())
