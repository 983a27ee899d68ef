"""Snapshots against the libvirt test driver: take, revert, delete, the plan's limit, and what
reinstall, resize and delete do with them (no orphan snapshot, in libvirt or in the database)."""

import contextlib

import pytest

import hypervisor
from vms import actions, moving, tasks
from vms.choices import OperationKind, OperationStatus, VMState
from vms.models import Operation, Snapshot

from .factories import make_node, make_plan, make_vm
from .test_tasks import FakeTask, image, new_vm, run  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db


@pytest.fixture
def running_vm(new_vm, test_session):  # noqa: F811
    run(new_vm, OperationKind.CREATE)
    return new_vm


def run_with(vm, kind, **params):
    operation = Operation.objects.create(vm=vm, kind=kind, params=params)
    tasks.run_operation(FakeTask(), operation.pk, tasks.WORK[kind])
    operation.refresh_from_db()
    vm.refresh_from_db()
    return operation


def take(vm, description=""):
    return run_with(vm, OperationKind.SNAPSHOT, description=description)


def libvirt_snapshots(session, vm):
    return [s.name for s in session.snapshots(vm.domain_name)]


def test_a_snapshot_of_a_running_vm_is_recorded_with_its_memory(running_vm, test_session):
    operation = take(running_vm, "before the upgrade")
    assert operation.status == OperationStatus.SUCCEEDED, operation.error
    snapshot = running_vm.snapshots.get()
    assert (snapshot.name, snapshot.description, snapshot.with_memory) == (
        f"snap-{operation.pk}",
        "before the upgrade",
        True,
    )
    assert libvirt_snapshots(test_session, running_vm) == [snapshot.name]


def test_taking_a_snapshot_twice_for_one_operation_makes_one(running_vm, test_session):
    operation = take(running_vm)
    operation.status = OperationStatus.QUEUED
    operation.save()
    tasks.run_operation(FakeTask(), operation.pk, tasks.WORK[OperationKind.SNAPSHOT])
    assert running_vm.snapshots.count() == 1
    assert len(libvirt_snapshots(test_session, running_vm)) == 1


def test_revert_and_delete(running_vm, test_session):
    take(running_vm)
    snapshot = running_vm.snapshots.get()
    run_with(running_vm, OperationKind.FORCE_OFF)
    reverted = run_with(running_vm, OperationKind.REVERT_SNAPSHOT, snapshot_id=snapshot.pk)
    assert reverted.status == OperationStatus.SUCCEEDED, reverted.error
    assert running_vm.state == VMState.RUNNING  # it was running when the snapshot was taken
    deleted = run_with(running_vm, OperationKind.DELETE_SNAPSHOT, snapshot_id=snapshot.pk)
    assert deleted.status == OperationStatus.SUCCEEDED
    assert not Snapshot.objects.exists()
    assert libvirt_snapshots(test_session, running_vm) == []


def test_the_plan_sets_how_many_snapshots_a_vm_may_hold(alice, enqueued):
    vm = make_vm(alice, plan=make_plan(max_snapshots=1))
    Snapshot.objects.create(vm=vm, name="snap-1", vm_state=VMState.RUNNING)
    with pytest.raises(actions.ActionRefused, match=r"as many as the .* plan allows"):
        actions.take_snapshot(vm, alice)
    assert enqueued == []


def test_resize_is_refused_while_the_vm_has_snapshots(alice, enqueued):
    vm = make_vm(alice, state=VMState.STOPPED)
    Snapshot.objects.create(vm=vm, name="snap-1", vm_state=VMState.STOPPED)
    with pytest.raises(actions.ActionRefused, match="has snapshots: delete them first"):
        actions.resize(vm, alice, make_plan(disk_gb=40))
    assert enqueued == []


def test_reinstall_removes_the_snapshots_with_the_old_disk(running_vm, test_session):
    take(running_vm)
    take(running_vm)
    operation = run_with(running_vm, OperationKind.REINSTALL, image_id=running_vm.image_id)
    assert operation.status == OperationStatus.SUCCEEDED, operation.error
    assert not running_vm.snapshots.exists()
    assert libvirt_snapshots(test_session, running_vm) == []


def test_delete_removes_the_snapshots_too(running_vm, test_session):
    take(running_vm)
    operation = run_with(running_vm, OperationKind.DELETE)
    assert operation.status == OperationStatus.SUCCEEDED
    assert not Snapshot.objects.exists()
    assert test_session.domain_names() == []


def test_a_snapshot_description_cannot_add_xml(running_vm, test_session):
    operation = take(running_vm, "</description><name>evil</name>")
    assert operation.status == OperationStatus.SUCCEEDED
    assert running_vm.snapshots.get().description == "</description><name>evil</name>"
    assert libvirt_snapshots(test_session, running_vm) == [f"snap-{operation.pk}"]


# --- backups' checkpoints (libvirt's test driver keeps them like the qemu one) -----------------------


def make_checkpoints(session, vm, *names):
    domain = session._conn.lookupByName(vm.domain_name)
    for name in names:
        domain.checkpointCreateXML(f"<domaincheckpoint><name>{name}</name></domaincheckpoint>", 0)


def test_only_the_newest_checkpoint_is_kept(running_vm, test_session):
    make_checkpoints(test_session, running_vm, "kvmpanel-1", "kvmpanel-2", "kvmpanel-3")
    assert test_session.checkpoints(running_vm.domain_name) == ["kvmpanel-1", "kvmpanel-2", "kvmpanel-3"]
    assert test_session.delete_checkpoints(running_vm.domain_name, keep="kvmpanel-3") == 2
    assert test_session.checkpoints(running_vm.domain_name) == ["kvmpanel-3"]


@pytest.mark.parametrize("kind", [OperationKind.SNAPSHOT, OperationKind.REINSTALL, OperationKind.DELETE])
def test_operations_that_change_the_disk_behind_the_backups_drop_its_checkpoints(
    running_vm, test_session, kind
):
    """libvirt 9.0 refuses a snapshot beside checkpoints; a reinstall replaces the disk their bitmaps
    lived in; a deleted VM's domain goes (undefined with its checkpoints' metadata)."""
    make_checkpoints(test_session, running_vm, "kvmpanel-7")
    params = {"image_id": running_vm.image_id} if kind == OperationKind.REINSTALL else {}
    operation = run_with(running_vm, kind, **params)
    assert operation.status == OperationStatus.SUCCEEDED, operation.error
    if kind != OperationKind.DELETE:
        assert test_session.checkpoints(running_vm.domain_name) == []
    else:
        assert not test_session.domain_exists(running_vm.domain_name)


def test_a_stopped_vms_snapshot_removes_its_checkpoints_for_good(running_vm, test_session):
    """libvirt 9.0 deletes a checkpoint's bitmap only from a running domain, and a bitmap left in the
    disk makes every revert fail: the stopped domain is started paused for it, and stopped again."""
    make_checkpoints(test_session, running_vm, "kvmpanel-9")
    run_with(running_vm, OperationKind.FORCE_OFF)
    operation = take(running_vm)
    assert operation.status == OperationStatus.SUCCEEDED, operation.error
    assert test_session.checkpoints(running_vm.domain_name) == []
    assert test_session.power_state(running_vm.domain_name) == "stopped"
    assert running_vm.state == VMState.STOPPED


def test_after_a_backup_a_stopped_domain_keeps_its_checkpoints_for_its_next_one(running_vm, test_session):
    make_checkpoints(test_session, running_vm, "kvmpanel-1", "kvmpanel-2")
    run_with(running_vm, OperationKind.FORCE_OFF)
    assert test_session.delete_checkpoints(running_vm.domain_name, keep="kvmpanel-2") == 0
    assert test_session.checkpoints(running_vm.domain_name) == ["kvmpanel-1", "kvmpanel-2"]


def test_a_move_drops_the_backups_checkpoints_before_anything_reaches_the_target(
    running_vm, test_session, monkeypatch
):
    """Their bitmaps travel inside the qcow2 file, where no checkpoint describes them any more: a
    snapshot revert on the target would fail ("Device has active dirty bitmaps")."""
    make_checkpoints(test_session, running_vm, "kvmpanel-4")
    target = make_node(name="hv-target", uri="test:///target")

    @contextlib.contextmanager
    def connect(uri):  # the target is never used before the point this test stops at
        yield test_session

    monkeypatch.setattr(hypervisor, "connect", connect)
    operation = Operation.objects.create(
        vm=running_vm, kind=OperationKind.MIGRATE, params={"target_node_id": target.pk}
    )

    class Prepared(Exception):
        """Stands for the rest of the move: the test driver cannot migrate."""

    def prepare(*args):
        raise Prepared

    monkeypatch.setattr(moving, "_prepare", prepare)
    with pytest.raises(Prepared):
        moving.move(test_session, running_vm, operation)
    assert test_session.checkpoints(running_vm.domain_name) == []
