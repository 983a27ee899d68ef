"""Domain verbs: check, record an Operation, enqueue its task after commit.

Pages (and later the API) call these; none of them waits on the hypervisor.
"""

from django.db import IntegrityError, transaction
from django.db.models import F, Q, Sum

from accounts import audit

from . import cloudinit, first_boot, quotas
from .choices import NodeStatus, OperationKind, VMState
from .live import publish_vm_changed
from .models import SECRET_PARAMS, Image, Node, Operation, Plan, VirtualMachine


class ActionRefused(Exception):
    """The action cannot be done now; the message is for the user."""


def pick_node(plan: Plan, image: Image) -> Node:
    """Of the online nodes whose pool holds the image, the one with the most free memory after its VMs.

    A node that lacks the image (just added, or back after being away) gets it from the image sync
    (library.sync_node) and is picked from then on.
    """
    online = Node.objects.filter(status=NodeStatus.ONLINE)
    holding = online.filter(image_placements__image=image, image_placements__ready=True)
    # Free memory summed in the database: one query, however many VMs the nodes run.
    used = Sum("vms__plan__memory_mib", filter=~Q(vms__state=VMState.DELETED), default=0)
    node = holding.annotate(free_mib=F("memory_mib") - used).order_by("-free_mib", "name").first()
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
    node = pick_node(plan, image)
    params = first_boot_params(password_hash, ssh_keys, user_data)
    try:
        with transaction.atomic():
            quotas.lock_owner(owner)  # the check and the new row, one customer request at a time
            quotas.check_room(owner, plan)
            vm = VirtualMachine.objects.create(
                owner=owner, node=node, plan=plan, image=image, hostname=hostname, display_name=display_name
            )
            operation = _record(vm, owner, OperationKind.CREATE, params)
    except IntegrityError:
        raise ActionRefused(f"You already have a VM named {hostname}.") from None
    except quotas.QuotaExceeded as exceeded:
        audit.record("vm.create", None, outcome="refused", owner=owner, detail=f"{hostname}: {exceeded}")
        raise ActionRefused(str(exceeded)) from None
    password_hash.deliver(operation)  # the task is on its way: it makes the disk while we wait
    return vm


def reinstall(vm: VirtualMachine, user, *, image: Image, password="", ssh_keys=(), user_data="") -> Operation:
    """Rebuild the VM's disk from `image` with a fresh seed; everything on the old disk is lost."""
    return _first_boot_request(vm, user, OperationKind.REINSTALL, image, password, ssh_keys, user_data)


def reset_password(vm: VirtualMachine, user, password: str) -> Operation:
    """Set the default user's password in the running guest, through its guest agent."""
    params = {"password_hash": cloudinit.hash_password(password)}
    return request(vm, user, OperationKind.RESET_PASSWORD, params)


def rescue(vm: VirtualMachine, user, *, image: Image, password="", ssh_keys=()) -> Operation:
    """Boot `image` as a rescue system with the VM's disk as its second disk."""
    return _first_boot_request(vm, user, OperationKind.RESCUE, image, password, ssh_keys, "")


def _first_boot_request(vm, user, kind: str, image: Image, password, ssh_keys, user_data) -> Operation:
    """Ask for an operation that boots `image` for the first time; its password hash follows."""
    password_hash = first_boot.PasswordHash(password)
    params = {"image_id": image.pk, **first_boot_params(password_hash, ssh_keys, user_data)}
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


def first_boot_params(password_hash: first_boot.PasswordHash, ssh_keys, user_data: str) -> dict:
    """What the seed needs, as stored on the operation: the password only as a hash (delivered later)."""
    return {
        "password_hash": password_hash.param,
        "ssh_keys": [key.public_key for key in ssh_keys],
        "user_data": user_data,
    }


def request(
    vm: VirtualMachine, user, kind: str, params: dict | None = None, image: Image | None = None
) -> Operation:
    """Ask for `kind` (start, shutdown, force_off, reboot, reinstall, delete) on `vm`; `image` is one
    the operation puts on the VM (reinstall, rescue, ISO), which must be in its node's pool."""
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
    if not vm.node.accepts_changes:
        raise ActionRefused(
            f"Node {vm.node} is {vm.node.get_status_display().lower()}: "
            "changes to its VMs are paused until it answers again."
        )
    if kind not in vm.allowed_actions():
        raise ActionRefused(
            f"Cannot {OperationKind(kind).label.lower()} a VM that is {vm.get_state_display().lower()}."
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
    enqueue(operation)
    publish_vm_changed(operation.vm)  # open pages show the queued operation at once


def enqueue(operation: Operation) -> None:
    from .tasks import TASKS

    TASKS[operation.kind].apply_async((operation.pk,), queue=operation.vm.node.queue)
