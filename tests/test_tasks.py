"""Operation tasks against the libvirt test driver: bookkeeping, idempotence, rollback."""

import pytest

import hypervisor
from hypervisor import xml
from vms import first_boot, tasks
from vms.choices import OperationKind, OperationStatus, VMState
from vms.models import Operation

from .factories import make_image, make_plan, make_vm

pytestmark = pytest.mark.django_db


class FakeRequest:
    id = "test-delivery"


class FakeTask:
    """Stands in for the bound Celery task: run_operation needs the delivery's id and retry()."""

    def __init__(self):
        self.request = FakeRequest()
        self.retried_with = []

    def retry(self, countdown, max_retries=None):
        self.retried_with.append(countdown)
        return RuntimeError("retry")


@pytest.fixture
def image(test_session):
    test_session._conn.storagePoolLookupByName("test-pool").createXML(
        xml.volume_xml("image-debian.qcow2", 2 * 1024**3, "qcow2"), 0
    )
    # The test driver cannot upload volumes, so these tests use an image without a
    # cloud-init seed; seeds are tested against the real libvirtd (tests/integration).
    return make_image(volume_name="image-debian.qcow2", cloud_init=False)


@pytest.fixture
def new_vm(alice, test_node, image):
    return make_vm(alice, node=test_node, image=image, plan=make_plan(disk_gb=8), state=VMState.PROVISIONING)


def run(vm, kind, user=None, task=None):
    operation = Operation.objects.create(vm=vm, kind=kind, user=user)
    tasks.run_operation(task or FakeTask(), operation.pk, tasks.WORK[kind])
    operation.refresh_from_db()
    vm.refresh_from_db()
    return operation


def test_create_makes_the_disk_and_the_domain_and_starts_it(new_vm, test_session):
    operation = run(new_vm, OperationKind.CREATE)
    assert (operation.status, operation.attempt, operation.error) == ("succeeded", 1, "")
    assert new_vm.state == VMState.RUNNING
    assert test_session.power_state(new_vm.domain_name) == hypervisor.PowerState.RUNNING
    assert new_vm.disk_volume in test_session.volume_names("test-pool")
    assert new_vm.domain_name.startswith("test-")


def test_create_run_twice_ends_in_the_same_state(new_vm, test_session):
    run(new_vm, OperationKind.CREATE)
    again = run(new_vm, OperationKind.CREATE)
    assert again.status == OperationStatus.SUCCEEDED
    assert test_session.domain_names() == [new_vm.domain_name]
    assert test_session.volume_names("test-pool") == sorted(["image-debian.qcow2", new_vm.disk_volume])


def test_a_failed_create_leaves_no_orphan_disk_or_domain(new_vm, test_session, monkeypatch):
    def broken_start(name):
        raise hypervisor.OperationFailed("could not start: no room for the VM")

    monkeypatch.setattr(test_session, "start", broken_start)
    operation = run(new_vm, OperationKind.CREATE)
    assert operation.status == OperationStatus.FAILED
    assert "no room" in operation.error
    assert new_vm.state == VMState.ERROR
    assert test_session.domain_names() == []
    assert test_session.volume_names("test-pool") == ["image-debian.qcow2"]


def test_a_missing_image_fails_the_create_with_its_reason(alice, test_node, test_session):
    vm = make_vm(alice, node=test_node, image=make_image(volume_name="gone.qcow2"), state="provisioning")
    operation = run(vm, OperationKind.CREATE)
    assert operation.status == OperationStatus.FAILED
    assert "gone.qcow2" in operation.error
    assert test_session.domain_names() == []


def test_power_operations_follow_the_domain(new_vm, test_session):
    run(new_vm, OperationKind.CREATE)
    assert run(new_vm, OperationKind.SHUTDOWN).status == "succeeded"
    assert new_vm.state == VMState.STOPPED
    assert run(new_vm, OperationKind.START).status == "succeeded"
    assert new_vm.state == VMState.RUNNING
    assert run(new_vm, OperationKind.REBOOT).status == "succeeded"
    assert run(new_vm, OperationKind.FORCE_OFF).status == "succeeded"
    assert new_vm.state == VMState.STOPPED


def test_reboot_of_a_stopped_vm_fails_clearly(new_vm, test_session):
    run(new_vm, OperationKind.CREATE)
    run(new_vm, OperationKind.FORCE_OFF)
    operation = run(new_vm, OperationKind.REBOOT)
    assert operation.status == OperationStatus.FAILED
    assert "not running" in operation.error


def test_delete_removes_the_domain_and_its_disk_but_not_the_image(new_vm, test_session):
    run(new_vm, OperationKind.CREATE)
    operation = run(new_vm, OperationKind.DELETE)
    assert operation.status == OperationStatus.SUCCEEDED
    assert new_vm.state == VMState.DELETED and new_vm.deleted_at is not None
    assert test_session.domain_names() == []
    assert test_session.volume_names("test-pool") == ["image-debian.qcow2"]


def test_delete_of_a_vm_whose_create_failed_succeeds(new_vm, test_session):
    assert run(new_vm, OperationKind.DELETE).status == OperationStatus.SUCCEEDED


def test_an_unreachable_node_is_retried_with_growing_delays_then_fails(new_vm, monkeypatch):
    def unreachable(uri):
        raise hypervisor.NodeUnreachable("connection refused")

    monkeypatch.setattr(hypervisor, "connect", unreachable)
    task = FakeTask()
    operation = Operation.objects.create(vm=new_vm, kind=OperationKind.START)
    for _ in range(tasks.max_attempts() - 1):
        with pytest.raises(RuntimeError, match="retry"):
            tasks.run_operation(task, operation.pk, tasks._start)
        operation.refresh_from_db()
        assert operation.status == OperationStatus.QUEUED
        assert "retrying: connection refused" in operation.error
        assert operation.lease_owner == "" and operation.next_send_at is not None
    assert task.retried_with == [5, 10, 20, 40]

    tasks.run_operation(task, operation.pk, tasks._start)
    operation.refresh_from_db()
    assert (operation.status, operation.attempt) == (OperationStatus.FAILED, tasks.max_attempts())
    assert operation.error == "connection refused"


def test_a_finished_operation_delivered_again_does_nothing(new_vm, test_session):
    operation = run(new_vm, OperationKind.CREATE)
    tasks.run_operation(FakeTask(), operation.pk, tasks._delete)
    assert test_session.domain_exists(new_vm.domain_name)


def test_an_operation_tried_too_often_gives_up(new_vm):
    operation = Operation.objects.create(vm=new_vm, kind=OperationKind.START, attempt=tasks.max_attempts())
    tasks.run_operation(FakeTask(), operation.pk, tasks._start)
    operation.refresh_from_db()
    assert operation.status == OperationStatus.FAILED
    assert operation.error == "gave up after 5 attempts: the worker running it stopped each time"


def test_a_cloud_init_image_gets_a_seed_with_the_first_boot_settings(new_vm, test_session, monkeypatch):
    import io

    import pycdlib

    uploaded = {}
    monkeypatch.setattr(test_session, "upload_bytes", lambda pool, name, data: uploaded.update({name: data}))
    new_vm.image.cloud_init = True
    new_vm.image.save()
    params = {"password_hash": "$2b$12$abc", "ssh_keys": ["ssh-ed25519 AAAAC3Nz test"], "user_data": ""}
    operation = Operation.objects.create(vm=new_vm, kind=OperationKind.CREATE, params=params)
    tasks.WORK[OperationKind.CREATE](test_session, new_vm, operation)
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(uploaded[new_vm.seed_volume]))
    meta = io.BytesIO()
    iso.get_file_from_iso_fp(meta, rr_path="/meta-data")
    assert new_vm.hostname in meta.getvalue().decode()
    assert new_vm.seed_volume in test_session.domain_xml(new_vm.domain_name)  # attached as a CD-ROM


def test_a_hash_that_never_comes_fails_the_create_and_leaves_nothing(new_vm, test_session, monkeypatch):
    monkeypatch.setattr(first_boot, "WAIT_SECONDS", 1)
    new_vm.image.cloud_init = True
    new_vm.image.save()
    operation = Operation.objects.create(
        vm=new_vm, kind=OperationKind.CREATE, params={"password_hash": first_boot.PENDING}
    )
    tasks.run_operation(FakeTask(), operation.pk, tasks.WORK[OperationKind.CREATE])
    operation.refresh_from_db()
    new_vm.refresh_from_db()
    assert operation.status == OperationStatus.FAILED
    assert "never reached the task" in operation.error
    assert new_vm.state == VMState.ERROR
    assert not test_session.domain_exists(new_vm.domain_name)
    assert not test_session.volume_exists("test-pool", new_vm.disk_volume)


def test_the_password_hash_is_dropped_when_the_operation_ends(new_vm):
    operation = Operation.objects.create(
        vm=new_vm, kind=OperationKind.CREATE, params={"password_hash": "$2b$12$abc", "user_data": ""}
    )
    operation.mark_failed("boom")
    operation.refresh_from_db()
    assert operation.params == {"user_data": ""}


def test_reinstall_rebuilds_the_disk_from_another_image_and_keeps_the_identity(new_vm, test_session):
    run(new_vm, OperationKind.CREATE)
    test_session._conn.storagePoolLookupByName("test-pool").createXML(
        xml.volume_xml("image-other.qcow2", 2 * 1024**3, "qcow2"), 0
    )
    other = make_image(volume_name="image-other.qcow2", cloud_init=False)
    uuid, vnc_password = new_vm.uuid, new_vm.vnc_password
    operation = Operation.objects.create(
        vm=new_vm, kind=OperationKind.REINSTALL, params={"image_id": other.pk}
    )
    tasks.run_operation(FakeTask(), operation.pk, tasks.WORK[OperationKind.REINSTALL])
    operation.refresh_from_db()
    new_vm.refresh_from_db()
    assert operation.status == "succeeded", operation.error
    assert (new_vm.image, new_vm.installs, new_vm.state) == (other, 2, VMState.RUNNING)
    assert (new_vm.uuid, new_vm.vnc_password) == (uuid, vnc_password)
    assert test_session.domain_names() == [new_vm.domain_name]
    assert "image-other.qcow2" in test_session._conn.storageVolLookupByPath(
        test_session.volume_path("test-pool", new_vm.disk_volume)
    ).XMLDesc(0) or new_vm.disk_volume in test_session.volume_names("test-pool")


def test_an_iso_goes_into_a_stopped_vms_drive_and_it_boots_from_it_next(new_vm, test_session):
    run(new_vm, OperationKind.CREATE)
    run(new_vm, OperationKind.FORCE_OFF)
    iso = make_image(volume_name="rescue.iso", format="iso")
    operation = Operation.objects.create(
        vm=new_vm, kind=OperationKind.CHANGE_ISO, params={"iso_id": iso.pk, "boot": True}
    )
    tasks.run_operation(FakeTask(), operation.pk, tasks.WORK[OperationKind.CHANGE_ISO])
    operation.refresh_from_db()
    new_vm.refresh_from_db()
    assert operation.status == "succeeded", operation.error
    assert (new_vm.iso, new_vm.boot_from_iso) == (iso, True)
    definition = test_session.domain_xml(new_vm.domain_name)
    assert 'volume="rescue.iso"' in definition or "volume='rescue.iso'" in definition

    eject = Operation.objects.create(vm=new_vm, kind=OperationKind.CHANGE_ISO, params={"iso_id": None})
    tasks.run_operation(FakeTask(), eject.pk, tasks.WORK[OperationKind.CHANGE_ISO])
    new_vm.refresh_from_db()
    assert (new_vm.iso, new_vm.boot_from_iso) == (None, False)
    assert "rescue.iso" not in test_session.domain_xml(new_vm.domain_name)


def test_an_os_image_is_not_an_iso(new_vm, test_session):
    run(new_vm, OperationKind.CREATE)
    not_an_iso = make_image(volume_name="disk-image.qcow2")
    operation = Operation.objects.create(
        vm=new_vm, kind=OperationKind.CHANGE_ISO, params={"iso_id": not_an_iso.pk}
    )
    tasks.run_operation(FakeTask(), operation.pk, tasks.WORK[OperationKind.CHANGE_ISO])
    new_vm.refresh_from_db()
    assert new_vm.iso is None


def test_rescue_boots_the_rescue_disk_first_and_leaving_restores_the_vm(new_vm, test_session):
    run(new_vm, OperationKind.CREATE)
    test_session._conn.storagePoolLookupByName("test-pool").createXML(
        xml.volume_xml("rescue.qcow2", 2 * 1024**3, "qcow2"), 0
    )
    rescue_image = make_image(volume_name="rescue.qcow2", rescue=True, cloud_init=False)
    operation = Operation.objects.create(
        vm=new_vm, kind=OperationKind.RESCUE, params={"image_id": rescue_image.pk}
    )
    tasks.run_operation(FakeTask(), operation.pk, tasks.WORK[OperationKind.RESCUE])
    new_vm.refresh_from_db()
    assert new_vm.rescue_image == rescue_image, Operation.objects.get(pk=operation.pk).error
    definition = test_session.domain_xml(new_vm.domain_name)
    assert definition.index(new_vm.rescue_volume) < definition.index(new_vm.disk_volume)  # vda, then vdb
    assert new_vm.allowed_actions() == {"shutdown", "force_off", "reboot", "leave_rescue", "delete"}

    leave = Operation.objects.create(vm=new_vm, kind=OperationKind.LEAVE_RESCUE)
    tasks.run_operation(FakeTask(), leave.pk, tasks.WORK[OperationKind.LEAVE_RESCUE])
    new_vm.refresh_from_db()
    assert new_vm.rescue_image is None
    assert new_vm.rescue_volume not in test_session.domain_xml(new_vm.domain_name)
    assert new_vm.rescue_volume not in test_session.volume_names("test-pool")


def resize_to(vm, plan):
    """What actions.resize leaves for the task: the new plan on the row, both plans in the operation."""
    operation = Operation.objects.create(
        vm=vm, kind=OperationKind.RESIZE, params={"plan_id": plan.pk, "from_plan_id": vm.plan_id}
    )
    vm.plan = plan
    vm.save()
    tasks.run_operation(FakeTask(), operation.pk, tasks.WORK[OperationKind.RESIZE])
    operation.refresh_from_db()
    vm.refresh_from_db()
    return operation


def test_resize_gives_the_domain_the_new_size_and_grows_the_disk(new_vm, test_session, monkeypatch):
    run(new_vm, OperationKind.CREATE)
    run(new_vm, OperationKind.FORCE_OFF)
    grown = []
    # The test driver cannot resize volumes; growing a real one: tests/integration/test_disks.py.
    monkeypatch.setattr(type(test_session), "grow_volume", lambda self, *args: grown.append(args))
    bigger = make_plan(vcpus=3, memory_mib=3072, disk_gb=12)
    operation = resize_to(new_vm, bigger)
    assert operation.status == "succeeded", operation.error
    definition = xml.parse(test_session.domain_xml(new_vm.domain_name))
    assert definition.findtext("vcpu") == "3"
    assert int(definition.findtext("memory")) == 3072 * 1024  # KiB
    assert grown == [("test-pool", new_vm.disk_volume, 12 * 1024**3)]
    assert new_vm.state == VMState.STOPPED


def test_a_failed_resize_puts_the_old_plan_back(new_vm, test_session, monkeypatch):
    run(new_vm, OperationKind.CREATE)
    run(new_vm, OperationKind.FORCE_OFF)
    old_plan = new_vm.plan

    def refuse(*args):
        raise hypervisor.OperationFailed("no space left in the pool")

    monkeypatch.setattr(type(test_session), "grow_volume", refuse)
    operation = resize_to(new_vm, make_plan(vcpus=4, disk_gb=50))
    assert (operation.status, operation.error) == ("failed", "no space left in the pool")
    assert new_vm.plan == old_plan
    assert xml.parse(test_session.domain_xml(new_vm.domain_name)).findtext("vcpu") == str(old_plan.vcpus)
