"""Domain verbs: check, record an Operation, enqueue its task after commit.

Pages (and later the API) call these; none of them waits on the hypervisor.
"""

import logging

from celery import current_app
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, Q, Sum
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from accounts import audit
from images.models import Image
from network import rdns
from network.allocation import AllocationError
from nodes.choices import NodeStatus
from nodes.models import Node

from . import cloudinit, engine, first_boot, moving, networking, quotas
from .choices import OperationKind, OperationStatus, VMState
from .live import publish_vm_changed
from .models import SECRET_PARAMS, Operation, Plan, VirtualMachine

log = logging.getLogger(__name__)
# Operations that give a VM its first boot (their params may carry a password hash while they run).
FIRST_BOOT_KINDS = (OperationKind.CREATE, OperationKind.REINSTALL, OperationKind.RESCUE)


class ActionRefused(Exception):
    """The action cannot be done now; the message is for the user."""


def nodes_by_free_memory(image: Image, candidates=None):
    """Nodes that take new VMs (online, so not in maintenance, and without a network problem) whose
    pool holds the image, the one with the most free memory after its VMs first."""
    online = candidates if candidates is not None else Node.objects.all()
    online = online.filter(status=NodeStatus.ONLINE, network_problem="")
    holding = online.filter(image_placements__image=image, image_placements__ready=True)
    # Free memory summed in the database: one query, however many VMs the nodes run.
    used = Sum("vms__plan__memory_mib", filter=~Q(vms__state=VMState.DELETED), default=0)
    return holding.annotate(free_mib=F("memory_mib") - used).order_by("-free_mib", "name")


def pick_node(plan: Plan, image: Image) -> Node:
    """Of the online nodes whose pool holds the image, the one with the most free memory after its VMs.

    A node that lacks the image (just added, or back after being away) gets it from the image sync
    (images.sync) and is picked from then on. A node in maintenance is never picked.
    """
    online = Node.objects.filter(status=NodeStatus.ONLINE, network_problem="")
    node = nodes_by_free_memory(image).first()
    if node is None:
        if online.exists():
            raise ActionRefused(
                f"{image} is not on any available hypervisor node yet. Please try again in a few minutes."
            )
        raise ActionRefused("No hypervisor node is available right now. Please try again later.")
    return node


def create_vm(
    *,
    owner,
    plan: Plan,
    image: Image,
    hostname: str,
    display_name: str = "",
    password: str = "",
    ssh_keys=(),
    user_data: str = "",
) -> VirtualMachine:
    """Record a new VM and its create operation; the first-boot settings go to its seed."""
    password_hash = first_boot.PasswordHash(password)  # hashing starts now, beside what follows
    params = first_boot_params(password_hash, ssh_keys, user_data)
    vm, operation = new_vm(
        owner=owner, plan=plan, image=image, hostname=hostname, display_name=display_name, params=params
    )
    password_hash.deliver(operation)  # the task is on its way: it makes the disk while we wait
    return vm


def new_vm(
    *, owner, plan: Plan, image: Image, hostname: str, display_name="", kind=OperationKind.CREATE, params=None
) -> tuple[VirtualMachine, Operation]:
    """A new VM row within the owner's quota, and the operation of `kind` that builds it (a create, or a
    restore of a backup as a new VM)."""
    node = pick_node(plan, image)
    try:
        with transaction.atomic():
            quotas.lock_owner(owner)  # the check and the new row, one customer request at a time
            quotas.check_room(owner, plan)
            vm = VirtualMachine.objects.create(
                owner=owner, node=node, plan=plan, image=image, hostname=hostname, display_name=display_name
            )
            # Its addresses in the same transaction: an exhausted pool leaves nothing behind.
            addresses = networking.allocate_for_new_vm(vm)
            operation = _record(vm, owner, kind, params)
    except IntegrityError:
        if VirtualMachine.objects.live().filter(owner=owner, hostname=hostname).exists():
            raise ActionRefused(f"You already have a VM named {hostname}.") from None
        raise  # another constraint: a bug to see, not a name to blame
    except (quotas.QuotaExceeded, AllocationError) as refusal:
        audit.record(f"vm.{kind}", None, outcome="refused", owner=owner, detail=f"{hostname}: {refusal}")
        raise ActionRefused(str(refusal)) from None
    networking.audit_allocated(vm, addresses, owner)
    return vm, operation


def reinstall(vm: VirtualMachine, user, *, image: Image, password="", ssh_keys=(), user_data="") -> Operation:
    """Rebuild the VM's disk from `image` with a fresh seed; everything on the old disk is lost."""
    return _first_boot_request(vm, user, OperationKind.REINSTALL, image, password, ssh_keys, user_data)


def reset_password(vm: VirtualMachine, user, password: str) -> Operation:
    """Set the default user's password in the running guest, through its guest agent."""
    _refuse_while_booting(vm, OperationKind.RESET_PASSWORD)
    params = {"password_hash": cloudinit.hash_password(password)}
    return request(vm, user, OperationKind.RESET_PASSWORD, params)


def rescue(vm: VirtualMachine, user, *, image: Image, password="", ssh_keys=()) -> Operation:
    """Boot `image` as a rescue system with the VM's disk as its second disk."""
    return _first_boot_request(vm, user, OperationKind.RESCUE, image, password, ssh_keys, "")


def _first_boot_request(vm, user, kind: str, image: Image, password, ssh_keys, user_data) -> Operation:
    """Ask for an operation that boots `image` for the first time; its password hash follows."""
    password_hash = first_boot.PasswordHash(password)
    # installs_before: a task run twice counts the new install once (a new cloud-init instance).
    params = {"image_id": image.pk, "installs_before": vm.installs}
    params.update(first_boot_params(password_hash, ssh_keys, user_data))
    operation = request(vm, user, kind, params, image=image)
    password_hash.deliver(operation)
    return operation


def change_iso(vm: VirtualMachine, user, iso: Image | None, boot: bool = False) -> Operation:
    """Insert `iso` into the VM's CD drive (None ejects); with `boot`, the VM starts from it next time."""
    params = {"iso_id": iso.pk if iso else None, "boot": boot}
    return request(vm, user, OperationKind.CHANGE_ISO, params, image=iso)


def resize(vm: VirtualMachine, user, plan: Plan) -> Operation:
    """Move a stopped VM to another plan: its vCPUs and memory change, its disk grows (never shrinks).

    The VM counts with the new plan from this moment (the quota sees work in flight);
    if the resize fails, the task puts the old plan back.
    """
    current = vm.plan
    if vm.snapshots.exists():
        raise ActionRefused(
            f"{vm.name} has snapshots: delete them first. A snapshot holds the disk at its old size, "
            "and reverting to it after a resize would undo the resize."
        )
    if plan.pk == current.pk:
        raise ActionRefused(f"{vm.name} already has the {plan.name} plan.")
    if not plan.active:
        raise ActionRefused(f"The {plan.name} plan is no longer offered.")
    if plan.disk_gb < current.disk_gb:
        raise ActionRefused(
            f"A disk can only grow: pick a plan with at least {current.disk_gb} GiB of disk "
            f"({plan.name} has {plan.disk_gb} GiB)."
        )
    try:
        _check_allowed(vm, OperationKind.RESIZE)
        with transaction.atomic():
            quotas.lock_owner(vm.owner)
            quotas.check_room(vm.owner, plan, replacing=current)
            operation = _record(
                vm, user, OperationKind.RESIZE, {"plan_id": plan.pk, "from_plan_id": current.pk}
            )
            vm.plan = plan
            vm.save(update_fields=["plan", "updated_at"])
    except quotas.QuotaExceeded as exceeded:
        audit.record("vm.resize", vm, outcome="refused", detail=str(exceeded))
        raise ActionRefused(str(exceeded)) from None
    except ActionRefused as refusal:
        audit.record("vm.resize", vm, outcome="refused", detail=str(refusal))
        raise
    return operation


def take_snapshot(vm: VirtualMachine, user, description: str = "") -> Operation:
    """Snapshot the VM's disk (and its memory, if it runs) on its node, within the plan's number."""
    held = vm.snapshots.count()
    if held >= vm.plan.max_snapshots:
        refusal = ActionRefused(
            f"{vm.name} already holds {held} snapshots, as many as the {vm.plan.name} plan allows: "
            "delete one first."
        )
        audit.record("vm.snapshot", vm, outcome="refused", detail=str(refusal))
        raise refusal
    return request(vm, user, OperationKind.SNAPSHOT, {"description": description.strip()})


def revert_snapshot(vm: VirtualMachine, user, snapshot) -> Operation:
    """Put the VM back to `snapshot`: everything written since is lost."""
    return request(
        vm, user, OperationKind.REVERT_SNAPSHOT, {"snapshot_id": snapshot.pk, "name": str(snapshot)}
    )


def delete_snapshot(vm: VirtualMachine, user, snapshot) -> Operation:
    return request(
        vm, user, OperationKind.DELETE_SNAPSHOT, {"snapshot_id": snapshot.pk, "name": str(snapshot)}
    )


def _refuse_while_booting(vm: VirtualMachine, kind: str) -> None:
    """Actions that need the guest itself wait for its first boot to finish."""
    if vm.is_booting:
        message = (
            f"{vm.name} is still booting for the first time: {OperationKind(kind).label.lower()} will be "
            "offered once it is ready (usually within a minute or two)."
        )
        audit.record(f"vm.{kind}", vm, outcome="refused", detail=message)
        raise ActionRefused(message)


def add_address(vm: VirtualMachine, user, family: int, pool=None) -> Operation:
    """Staff give the VM one more IPv4 address or IPv6 network; the node and the seed follow."""
    return _change_addresses(vm, user, lambda: networking.add_address(vm, family, user, pool=pool))


def remove_address(vm: VirtualMachine, user, address) -> Operation:
    """Staff take an address back from the VM (it cools down); the node and the seed follow."""
    return _change_addresses(vm, user, lambda: networking.remove_address(vm, address, user))


def _change_addresses(vm: VirtualMachine, user, change) -> Operation:
    try:
        # Staff's own verb, so not among the customer's allowed actions: any VM that still exists.
        if vm.state == VMState.DELETED:
            raise ActionRefused(f"{vm.name} is deleted.")
        _check_node_accepts(vm)
        with transaction.atomic():
            change()
            return _record(vm, user, OperationKind.CHANGE_ADDRESSES)
    except AllocationError as refusal:
        audit.record("vm.change_addresses", vm, outcome="refused", detail=str(refusal))
        raise ActionRefused(str(refusal)) from None
    except ActionRefused as refusal:
        audit.record("vm.change_addresses", vm, outcome="refused", detail=str(refusal))
        raise


def set_reverse_dns(vm: VirtualMachine, user, address, name: str):
    """The PTR of one of the VM's addresses: a validated FQDN, or empty for none. PowerDNS gets it from a
    worker (retried while it is away); raises django's ValidationError for a bad name."""
    if not rdns.enabled():
        raise ActionRefused("Reverse DNS is managed elsewhere on this platform: ask support to change it.")
    if vm.state == VMState.DELETED:
        raise ActionRefused(f"{vm.name} is deleted.")
    try:
        rdns.set_ptr(address, name)
    except ValidationError as error:
        audit.record(
            "address.ptr", vm, outcome="refused", detail=f"{address.host_address}: {error.messages[0]}"
        )
        raise
    audit.record(
        "address.ptr",
        vm,
        outcome="requested",
        actor=user,
        detail=f"{address.host_address}: {address.ptr or 'none'}",
    )
    return address


def change_firewall(vm: VirtualMachine, user, change, params: dict | None = None) -> Operation:
    """The VM's traffic filter changes (`change()` writes the rows, e.g. its firewall's rules): the
    filter on the node follows through an operation, in any state but deleted (a stopped VM's filter
    is ready for its next start). A refusal rolls the change back with it."""
    try:
        if vm.state == VMState.DELETED:
            raise ActionRefused(f"{vm.name} is deleted.")
        _check_node_accepts(vm)
        with transaction.atomic():
            change()
            return _record(vm, user, OperationKind.FIREWALL, params)
    except ActionRefused as refusal:
        audit.record(f"vm.{OperationKind.FIREWALL}", vm, outcome="refused", detail=str(refusal))
        raise


def migrate(vm: VirtualMachine, user, target: Node) -> Operation:
    """Staff move the VM to `target`: live with its local disk if it runs, by a disk copy if stopped.
    Its addresses, console, graphs and backups follow it; its customer sees at most the downtime."""
    try:
        if vm.state not in (VMState.RUNNING, VMState.STOPPED):
            raise ActionRefused(
                f"Only a running or stopped VM can move; {vm.name} is {vm.get_state_display().lower()}."
            )
        _check_node_accepts(vm)
        try:
            moving.check_target(vm, target)
        except moving.MoveRefused as refusal:
            raise ActionRefused(str(refusal)) from None
        with transaction.atomic():
            return _record(
                vm, user, OperationKind.MIGRATE, {"target_node_id": target.pk, "from_node_id": vm.node_id}
            )
    except ActionRefused as refusal:
        audit.record("vm.migrate", vm, outcome="refused", detail=str(refusal))
        raise


def first_boot_params(password_hash: first_boot.PasswordHash, ssh_keys, user_data: str) -> dict:
    """What the seed needs, as stored on the operation: the password only as a hash (delivered later)."""
    return {
        "password_hash": password_hash.param,
        "had_password": bool(password_hash.param),  # stays when the hash goes (staff's Retry asks)
        "ssh_keys": [key.public_key for key in ssh_keys],
        "user_data": user_data,
    }


def request(
    vm: VirtualMachine, user, kind: str, params: dict | None = None, image: Image | None = None
) -> Operation:
    """Ask for `kind` (start, shutdown, force_off, reboot, reinstall, delete) on `vm`; `image` is one
    the operation puts on the VM (reinstall, rescue, ISO), which must be in its node's pool."""
    if kind == OperationKind.SHUTDOWN:
        _refuse_while_booting(vm, kind)
    try:
        _check_allowed(vm, kind)
        if image is not None and not image.is_on(vm.node):
            raise ActionRefused(f"{image} is not on this VM's node yet. Please try again in a few minutes.")
    except ActionRefused as refusal:
        audit.record(f"vm.{kind}", vm, outcome="refused", detail=str(refusal))
        raise
    with transaction.atomic():
        return _record(vm, user, kind, params)


def _check_allowed(vm: VirtualMachine, kind: str) -> None:
    _check_node_accepts(vm)
    if kind not in vm.allowed_actions():
        raise ActionRefused(
            f"Cannot {OperationKind(kind).label.lower()} a VM that is {vm.get_state_display().lower()}."
        )


def _check_node_accepts(vm: VirtualMachine) -> None:
    if not vm.node.accepts_changes:
        raise ActionRefused(
            f"Node {vm.node} is {vm.node.get_status_display().lower()}: "
            "changes to its VMs are paused until it answers again."
        )


def _record(vm: VirtualMachine, user, kind: str, params: dict | None = None) -> Operation:
    """Write the operation row and enqueue its task once the transaction commits."""
    try:
        with transaction.atomic():
            operation = Operation.objects.create(vm=vm, user=user, kind=kind, params=params or {})
    except IntegrityError:
        raise ActionRefused("Another operation on this VM is still in progress.") from None
    audit.record(f"vm.{kind}", vm, outcome="requested", actor=user, detail=_describe(operation))
    transaction.on_commit(lambda: _start(operation))
    return operation


def _describe(operation: Operation) -> str:
    """What the audit log says of an operation's parameters: their gist, never a secret or a hash."""

    def gist(key, value) -> str:
        if key in SECRET_PARAMS:
            return f"{key.removesuffix('_hash')} set"
        if isinstance(value, list):
            return f"{key}: {len(value)}"
        if isinstance(value, str) and len(value) > 40:
            return f"{key}: {len(value)} characters"
        return f"{key}: {value}"

    return ", ".join(gist(key, value) for key, value in operation.params.items() if value)


def _start(operation: Operation) -> None:
    engine.checkpoint("request.committed")
    enqueue(operation)
    publish_vm_changed(operation.vm)  # open pages show the queued operation at once


def enqueue(operation: Operation) -> None:
    """Ring the worker's doorbell (engine.send: by the task's name, so the actions never import the
    tasks). If it never rings (the broker is away, this process dies now), the sweeper rings it."""
    engine.send(operation)


# --- staff: operations that went wrong ------------------------------------------------------------


def cancel_operation(operation: Operation, by, reason: str) -> bool:
    """End an active operation now, as cancelled, and take back what it made (its node's queue does,
    and so does a worker still running it, when it finds its lease gone). False if it had ended."""
    reason = reason.strip() or "no reason given"
    if not operation.finish(OperationStatus.CANCELLED, f"Cancelled by staff ({by}): {reason}"):
        return False
    audit.record(
        "operation.cancel", operation.vm, outcome="succeeded", actor=by, detail=f"{operation}: {reason}"
    )
    transaction.on_commit(lambda: _undo_cancelled(operation))
    publish_vm_changed(operation.vm)
    return True


def _undo_cancelled(operation: Operation) -> None:
    try:
        current_app.send_task("vms.tasks.undo_cancelled", (operation.pk,), queue=operation.vm.node.queue)
    except (BrokerError, OSError) as error:
        log.warning("could not ask for the undo of cancelled operation %s: %r", operation.pk, error)


def retry_operation(operation: Operation, by) -> Operation:
    """Staff's Retry. An active operation (stuck, retrying) is sent again now. A failed or cancelled
    one is asked for again as a new operation, unless it carried a secret the panel no longer has
    (a first-boot or reset password): then the customer must ask again."""
    if operation.is_active:
        Operation.objects.filter(pk=operation.pk).update(next_send_at=timezone.now())
        audit.record("operation.retry", operation.vm, outcome="requested", actor=by, detail=str(operation))
        transaction.on_commit(lambda: engine.send(operation))
        return operation
    if operation.status == OperationStatus.SUCCEEDED:
        raise ActionRefused("This operation succeeded; there is nothing to retry.")
    if _carried_a_secret(operation):
        raise ActionRefused(
            "This operation carried a password, which the panel keeps only while an operation runs: "
            "the customer must ask for it again."
        )
    params = {key: value for key, value in operation.params.items() if key not in SECRET_PARAMS}
    if operation.kind == OperationKind.FIREWALL:  # the rows already hold the firewall: apply them again
        return change_firewall(operation.vm, by, lambda: None, params)
    return request(operation.vm, by, operation.kind, params)


def _carried_a_secret(operation: Operation) -> bool:
    if operation.kind == OperationKind.RESET_PASSWORD:
        return True
    return operation.kind in FIRST_BOOT_KINDS and operation.params.get("had_password", False)
