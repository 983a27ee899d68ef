"""Moving a VM to another node (the migrate operation): live with its local disk while it runs, or by
copying its disk while it is stopped. See hypervisor/migration.py for how libvirt does the live part.

The operation runs on the source node's queue. It checks before it acts, so a second run ends in the
same state: a VM whose domain is already on the target (and gone from the source) only has its row
moved. What it makes on the target before the move (the overlay, the seed, the filter) is taken
back if the move fails, and only then; the source is never touched until the VM runs on the target.
"""

import copy
import logging
import time

import hypervisor
from images.models import ImagePlacement
from network.models import Address
from nodes.models import Node

from .choices import OperationStatus, VMState
from .models import Operation, VirtualMachine
from .provisioning import apply_filter, domain_spec, remove_filter, seed_volumes
from .signals import move_refused

log = logging.getLogger(__name__)
PROGRESS_STEP = 0.01  # the row is written when the progress moved by at least this much


class MoveRefused(Exception):
    """The VM cannot go to that node; the message says why, for staff."""


def check_target(vm: VirtualMachine, target: Node) -> None:
    """Why `vm` cannot move to `target`, raised as MoveRefused; nothing when it can."""
    if target.pk == vm.node_id:
        raise MoveRefused(f"{vm.name} is already on {target}.")
    if not target.takes_new_vms:
        reason = target.network_problem or f"it is {target.get_status_display().lower()}"
        raise MoveRefused(f"Node {target} takes no VMs now: {reason}.")
    if vm.rescue_image_id:
        raise MoveRefused(f"{vm.name} is in rescue mode: leave it first.")
    for _receiver, reason in move_refused.send(sender=VirtualMachine, vm=vm):
        if reason:
            raise MoveRefused(reason)
    if vm.snapshots.exists():
        raise MoveRefused(f"{vm.name} has snapshots: libvirt moves no snapshots, so delete them first.")
    images = [image for image in (vm.image, vm.iso) if image is not None]
    for image in images:
        if not ImagePlacement.objects.filter(image=image, node=target, ready=True).exists():
            raise MoveRefused(f"{image} is not on node {target} yet: the image sync puts it there first.")
    stranded = unreachable_addresses(vm, target)
    if stranded:
        listed = ", ".join(str(address) for address in stranded)
        raise MoveRefused(f"No address pool of {vm.name} reaches node {target}: {listed} would not follow.")
    if vm.state == VMState.RUNNING and target.virt_type != vm.node.virt_type:
        raise MoveRefused(
            f"{vm.name} runs under {vm.node.get_virt_type_display()} and node {target} offers "
            f"{target.get_virt_type_display()}: stop it first, and it moves by a copy of its disk."
        )


def unreachable_addresses(vm: VirtualMachine, target: Node) -> list[Address]:
    """The VM's addresses whose pool the target node does not carry (they could not follow it)."""
    return list(vm.addresses().exclude(pool__nodes=target).select_related("pool"))


def as_on(vm: VirtualMachine, node: Node) -> VirtualMachine:
    """The VM as it would be on `node` (in memory only): for its definition and filter there."""
    moved = copy.copy(vm)
    moved._state = copy.copy(vm._state)
    moved._state.fields_cache = dict(vm._state.fields_cache)
    moved.node = node
    return moved


def move(node: hypervisor.NodeSession, vm: VirtualMachine, operation: Operation) -> str:
    """The migrate operation's work, on the source node `node`; the VM's new state."""
    target_node = Node.objects.get(pk=operation.params["target_node_id"])
    if vm.node_id == target_node.pk:
        with hypervisor.connect(target_node.uri) as target:  # moved by an earlier attempt
            return target.power_state(vm.domain_name)
    with hypervisor.connect(target_node.uri) as target:
        on_source = node.domain_exists(vm.domain_name)
        if not on_source and target.domain_exists(vm.domain_name):
            _arrived(node, vm, target_node)  # an earlier attempt moved it, then lost its outcome
            return target.power_state(vm.domain_name)
        there = as_on(vm, target_node)
        # Backups' checkpoints describe this node's copy of the disk, and their bitmaps, carried over in
        # the qcow2 file, would make every snapshot revert there fail: they go first (the next backup
        # reads the whole disk and starts a new chain).
        node.delete_checkpoints(vm.domain_name)
        _prepare(node, target, vm, there)
        if node.is_running(vm.domain_name):
            _move_running(node, target, vm, there, operation)
        else:
            _move_stopped(node, target, vm, there)
        _arrived(node, vm, target_node)
        return target.power_state(vm.domain_name)


def _prepare(
    node: hypervisor.NodeSession, target: hypervisor.NodeSession, vm: VirtualMachine, there: VirtualMachine
) -> None:
    """What the VM needs on the target before it arrives: its filter, its seed, an empty overlay on
    the target's copy of its image (a live move fills it)."""
    source_pool, target_pool = vm.node.pool_name, there.node.pool_name
    apply_filter(target, there)
    for volume in seed_volumes(vm):
        if not target.volume_exists(target_pool, volume):
            node.copy_volume_to(source_pool, volume, target, target_pool)


def _move_running(
    node: hypervisor.NodeSession,
    target: hypervisor.NodeSession,
    vm: VirtualMachine,
    there: VirtualMachine,
    operation: Operation,
) -> None:
    target_pool = there.node.pool_name
    if not target.volume_exists(target_pool, vm.disk_volume):
        capacity = node.volume_capacity(vm.node.pool_name, vm.disk_volume)
        if vm.plan.full_copy:
            target.create_volume(target_pool, vm.disk_volume, capacity)
        else:
            target.create_overlay(target_pool, vm.disk_volume, target_pool, vm.image.volume_name, capacity)
    migrate_uri, disks_uri = there.node.incoming_uris(str(vm.uuid))
    result = node.migrate_live(
        vm.domain_name,
        target,
        target_xml=hypervisor_xml(there),
        migrate_uri=migrate_uri,
        disks_uri=disks_uri,
        progress=_progress_writer(operation),
    )
    log.info(
        "%s moved live to %s in %.1f s, downtime %s ms", vm, there.node, result.seconds, result.downtime_ms
    )
    _note(operation, downtime_ms=result.downtime_ms, seconds=round(result.seconds, 1), progress=1.0)


def hypervisor_xml(vm: VirtualMachine) -> str:
    return hypervisor.domain_xml(domain_spec(vm))


def _move_stopped(
    node: hypervisor.NodeSession, target: hypervisor.NodeSession, vm: VirtualMachine, there: VirtualMachine
) -> None:
    """A stopped VM: its disk file is copied over libvirt streams, then defined on the target and
    undefined here. An overlay's file names its backing image by path: the copy names the target's
    copy of the image instead."""
    target_pool = there.node.pool_name
    if target.volume_exists(target_pool, vm.disk_volume):
        target.delete_volume(target_pool, vm.disk_volume)  # a partial copy from an earlier attempt
    if vm.plan.full_copy:
        node.copy_volume_to(vm.node.pool_name, vm.disk_volume, target, target_pool)
    else:
        node.copy_overlay_to(vm.node.pool_name, vm.disk_volume, target, target_pool, vm.image.volume_name)
    target.define_domain(domain_spec(there))


def _arrived(node: hypervisor.NodeSession, vm: VirtualMachine, target_node: Node) -> None:
    """The VM runs (or is defined) on the target: its row follows, then the source lets go of it."""
    source_pool = vm.node.pool_name
    source = vm.node
    if node.domain_exists(vm.domain_name):
        node.undefine(vm.domain_name)  # a stopped VM's (a live move undefines it itself)
    vm.node = target_node
    vm.save(update_fields=["node", "updated_at"])
    for volume in (vm.disk_volume, *seed_volumes(vm)):
        node.delete_volume(source_pool, volume)
    remove_filter(node, vm)
    log.info("%s left node %s for %s", vm, source, target_node)


def undo(node: hypervisor.NodeSession, vm: VirtualMachine, operation: Operation) -> None:
    """A move that failed or was cancelled: the VM stays where it was; what was made for it on the
    target goes, unless the VM runs there after all (then its row follows it)."""
    target_node = Node.objects.filter(pk=operation.params.get("target_node_id")).first()
    if target_node is None or vm.node_id == target_node.pk:
        return
    with hypervisor.connect(target_node.uri) as target:
        if target.domain_exists(vm.domain_name):
            if not node.domain_exists(vm.domain_name):
                _arrived(node, vm, target_node)
                return
            if target.is_running(vm.domain_name):
                log.warning("%s runs on both %s and %s: left for staff", vm, vm.node, target_node)
                return
            target.undefine(vm.domain_name)
        there = as_on(vm, target_node)
        for volume in (vm.disk_volume, *seed_volumes(vm)):
            target.delete_volume(target_node.pool_name, volume)
        remove_filter(target, there)


def _progress_writer(operation: Operation):
    """Writes the move's progress on the operation (and pushes it); False once the operation is no
    longer this worker's (staff cancelled it), which aborts the move."""
    last = {"written": -1.0, "at": 0.0}

    def write(fraction: float) -> bool:
        if fraction - last["written"] < PROGRESS_STEP and time.monotonic() - last["at"] < 5:
            return _still_mine(operation)
        last.update(written=fraction, at=time.monotonic())
        return _note(operation, progress=round(fraction, 3))

    return write


def _still_mine(operation: Operation) -> bool:
    return Operation.objects.filter(
        pk=operation.pk, status=OperationStatus.RUNNING, lease_owner=operation.lease_owner
    ).exists()


def _note(operation: Operation, **values) -> bool:
    """Merge `values` into the operation's params while it is still this worker's; push the change."""
    from .live import publish_vm_changed

    operation.params = {**operation.params, **values}
    written = Operation.objects.filter(
        pk=operation.pk, status=OperationStatus.RUNNING, lease_owner=operation.lease_owner
    ).update(params=operation.params)
    if written:
        publish_vm_changed(operation.vm)
    return bool(written)
