"""Snapshots: what the take, revert and delete operations do on the node (see hypervisor/protection.py).

Each checks before it acts: the libvirt name is fixed by the operation that took it
(`snap-<operation id>`), so a re-run finds the snapshot instead of taking a second one, and the
row is written only once libvirt has it and removed only once libvirt no longer has it.
"""

from datetime import UTC, datetime

import hypervisor

from .choices import VMState
from .models import Operation, Snapshot, VirtualMachine
from .provisioning import domain_spec


def take(node: hypervisor.NodeSession, vm: VirtualMachine, operation: Operation) -> str:
    info = node.create_snapshot(
        vm.domain_name, f"snap-{operation.pk}", operation.params.get("description", "")
    )
    Snapshot.objects.update_or_create(
        vm=vm,
        name=info.name,
        defaults={
            "description": operation.params.get("description", ""),
            "vm_state": VMState.RUNNING if info.with_memory else VMState.STOPPED,
            "created_at": datetime.fromtimestamp(info.created_epoch, tz=UTC),
            "user": operation.user,
        },
    )
    return node.power_state(vm.domain_name)


def revert(node: hypervisor.NodeSession, vm: VirtualMachine, operation: Operation) -> str:
    """Back to the snapshot; the definition is the panel's again afterwards (the snapshot carries the
    one from its own time, e.g. an ISO since ejected)."""
    snapshot = Snapshot.objects.get(vm=vm, pk=operation.params["snapshot_id"])
    node.revert_snapshot(vm.domain_name, snapshot.name)
    node.define_domain(domain_spec(vm))
    return node.power_state(vm.domain_name)


def delete(node: hypervisor.NodeSession, vm: VirtualMachine, operation: Operation) -> str:
    snapshot = Snapshot.objects.filter(vm=vm, pk=operation.params["snapshot_id"]).first()
    if snapshot is not None:
        node.delete_snapshot(vm.domain_name, snapshot.name)
        snapshot.delete()
    return node.power_state(vm.domain_name)


def remove_all(node: hypervisor.NodeSession, vm: VirtualMachine) -> None:
    """Before the VM's disk is thrown away or replaced: its snapshots live in that disk, so they go too,
    from libvirt first and then from the database (a failure in between leaves rows a re-run removes).
    So do its backups' checkpoints: they describe that disk, and the next backup must read all of the
    new one (backups/taking.py finds no checkpoint to start from)."""
    if node.domain_exists(vm.domain_name):
        node.delete_all_snapshots(vm.domain_name)
        node.delete_checkpoints(vm.domain_name)
    vm.snapshots.all().delete()
