"""Snapshots of a stopped VM against the real libvirtd (qcow2 internal snapshots in an overlay disk),
and what reinstall and delete leave behind (nothing). tests/integration/test_data_protection.py takes
and reverts a running guest's snapshot in the browser."""

import os

import pytest

import hypervisor
from vms.choices import OperationKind, OperationStatus, VMState
from vms.models import Operation
from vms.tasks import WORK, run_operation

from .conftest import virsh
from .test_backups import MIB, _Task, read_range, write_into_disk

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def run(vm, kind, **params) -> Operation:
    operation = Operation.objects.create(vm=vm, kind=kind, params=params, user=vm.owner)
    run_operation(_Task(), operation.pk, WORK[kind])
    operation.refresh_from_db()
    vm.refresh_from_db()
    assert operation.status == OperationStatus.SUCCEEDED, operation.error
    return operation


def libvirt_snapshots(vm) -> list[str]:
    return virsh("snapshot-list", vm.domain_name, "--name").stdout.split()


def test_a_stopped_vms_snapshot_brings_its_disk_back(stopped_vm):
    before = os.urandom(MIB)
    write_into_disk(stopped_vm, 80 * MIB, before)
    run(stopped_vm, OperationKind.SNAPSHOT, description="clean")
    snapshot = stopped_vm.snapshots.get()
    assert not snapshot.with_memory and libvirt_snapshots(stopped_vm) == [snapshot.name]
    write_into_disk(stopped_vm, 80 * MIB, os.urandom(MIB))
    run(stopped_vm, OperationKind.REVERT_SNAPSHOT, snapshot_id=snapshot.pk)
    assert stopped_vm.state == VMState.STOPPED
    assert read_range(stopped_vm, 80 * MIB, MIB) == before
    run(stopped_vm, OperationKind.DELETE_SNAPSHOT, snapshot_id=snapshot.pk)
    assert libvirt_snapshots(stopped_vm) == [] and not stopped_vm.snapshots.exists()
    assert read_range(stopped_vm, 80 * MIB, MIB) == before  # deleting a snapshot keeps the present


def test_reinstall_and_delete_leave_no_snapshot_behind(stopped_vm):
    run(stopped_vm, OperationKind.SNAPSHOT)
    run(stopped_vm, OperationKind.SNAPSHOT)
    run(stopped_vm, OperationKind.REINSTALL, image_id=stopped_vm.image_id)
    assert libvirt_snapshots(stopped_vm) == [] and not stopped_vm.snapshots.exists()
    run(stopped_vm, OperationKind.FORCE_OFF)
    run(stopped_vm, OperationKind.SNAPSHOT)
    run(stopped_vm, OperationKind.DELETE)
    assert virsh("dominfo", stopped_vm.domain_name).returncode != 0
    assert not stopped_vm.snapshots.exists()
    with hypervisor.connect(stopped_vm.node.uri) as session:
        left = [
            v for v in session.volume_names(stopped_vm.node.pool_name) if v.startswith(stopped_vm.domain_name)
        ]
    assert left == []
