"""The operation engine on the libvirt test driver: leases, the sweeper, outcomes that are never lost,
undo on every way to fail, and watchers that never write a state backwards.

What happens when real processes die is in tests/faults/ (real worker, Redis, PostgreSQL, libvirtd).
"""

import datetime as dt
import threading

import libvirt
import pytest
import redis
from django.db import OperationalError
from django.urls import reverse
from django.utils import timezone

import hypervisor
from accounts.models import AuditEntry
from hypervisor import xml
from kvmpanel import pushes
from vms import actions, engine, first_boot, live, monitor, tasks
from vms.choices import OperationKind, OperationStatus, VMState
from vms.models import Operation, VirtualMachine

from .factories import make_image, make_plan, make_vm
from .test_tasks import FakeTask

pytestmark = pytest.mark.django_db
LEASE = dt.timedelta(seconds=60)


@pytest.fixture
def sent(monkeypatch):
    """Tasks the engine sends, as (task name, operation id, queue), instead of going to Redis."""
    calls = []

    def send_task(name, args, queue):
        calls.append((name, args[0], queue))

    monkeypatch.setattr(engine.current_app, "send_task", send_task)
    return calls


@pytest.fixture
def new_vm(alice, test_node, test_session):
    test_session._conn.storagePoolLookupByName("test-pool").createXML(
        xml.volume_xml("image-engine.qcow2", 2 * 1024**3, "qcow2"), 0
    )
    image = make_image(volume_name="image-engine.qcow2", cloud_init=False)
    return make_vm(alice, node=test_node, image=image, plan=make_plan(), state=VMState.PROVISIONING)


def operation_for(vm, kind=OperationKind.START, **fields):
    return Operation.objects.create(vm=vm, kind=kind, **fields)


# --- leases ---------------------------------------------------------------------------------------


def test_only_one_worker_can_hold_an_operation(alice_vm):
    operation = operation_for(alice_vm)
    first = Operation.claim(operation.pk, "worker-a", LEASE)
    assert (first.status, first.attempt, first.lease_owner) == ("running", 1, "worker-a")
    assert Operation.claim(operation.pk, "worker-b", LEASE) is None


def test_an_operation_whose_lease_ran_out_is_taken_over_as_a_new_attempt(alice_vm):
    operation = operation_for(alice_vm)
    Operation.claim(operation.pk, "worker-a", LEASE)
    Operation.objects.filter(pk=operation.pk).update(
        lease_expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    second = Operation.claim(operation.pk, "worker-b", LEASE)
    assert (second.attempt, second.lease_owner) == (2, "worker-b")


def test_a_worker_that_lost_its_lease_cannot_write_the_outcome(alice_vm):
    operation = operation_for(alice_vm)
    stale = Operation.claim(operation.pk, "worker-a", LEASE)
    Operation.objects.filter(pk=operation.pk).update(
        lease_expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    current = Operation.claim(operation.pk, "worker-b", LEASE)
    assert not stale.renew_lease(LEASE)
    assert not stale.finish(OperationStatus.FAILED, "late", lease_owner=stale.lease_owner)
    assert current.finish(OperationStatus.SUCCEEDED, lease_owner=current.lease_owner)
    operation.refresh_from_db()
    assert (operation.status, operation.error) == ("succeeded", "")


def test_an_ended_operation_is_never_claimed_again(alice_vm):
    operation = operation_for(alice_vm, status=OperationStatus.SUCCEEDED)
    assert Operation.claim(operation.pk, "worker-a", LEASE) is None


def test_the_lease_is_renewed_while_the_work_runs(transactional_db, alice_vm, settings):
    settings.KVMPANEL_OPERATION_LEASE_SECONDS = 4  # renewed every second
    operation = Operation.claim(operation_for(alice_vm).pk, "worker-a", dt.timedelta(seconds=4))
    renewals = []
    original = Operation.renew_lease
    operation.renew_lease = lambda lease: renewals.append(lease) or original(operation, lease)
    with engine.lease(operation):
        threading.Event().wait(3.5)
    assert len(renewals) >= 2


# --- the sweeper ----------------------------------------------------------------------------------


def test_a_queued_operation_that_nothing_took_is_sent_again(alice_vm, sent):
    operation = operation_for(alice_vm)  # recorded, never sent: the web process died at the commit
    assert engine.sweep() == []  # its request may still be about to send it
    later = timezone.now() + dt.timedelta(seconds=16)
    assert engine.sweep(now=later) == [operation.pk]
    assert sent == [("vms.tasks.start_vm", operation.pk, alice_vm.node.queue)]
    operation.refresh_from_db()
    assert operation.sends == 1 and operation.next_send_at > timezone.now()


def test_a_just_sent_operation_is_left_alone_until_its_time(alice_vm, sent):
    operation = operation_for(alice_vm)
    engine.send(operation)
    assert engine.sweep() == []
    later = timezone.now() + dt.timedelta(seconds=16)
    assert engine.sweep(now=later) == [operation.pk]


def test_sending_again_backs_off(alice_vm, sent, settings):
    operation = operation_for(alice_vm)
    waits = []
    for _ in range(4):
        before = timezone.now()
        engine.send(operation)
        operation.refresh_from_db()
        waits.append(round((operation.next_send_at - before).total_seconds()))
    resend = settings.KVMPANEL_OPERATION_RESEND_SECONDS
    assert waits == [resend, 2 * resend, 4 * resend, 8 * resend]


def test_a_running_operation_is_sent_again_only_once_its_lease_ran_out(alice_vm, sent):
    operation = operation_for(alice_vm)
    Operation.claim(operation.pk, "worker-a", LEASE)
    assert engine.sweep() == []
    Operation.objects.filter(pk=operation.pk).update(
        lease_expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    assert engine.sweep() == [operation.pk]


def test_a_broker_that_is_away_leaves_the_operation_for_the_sweeper(alice_vm, monkeypatch):
    from kombu.exceptions import OperationalError as BrokerError

    def refuse(*args, **kwargs):
        raise BrokerError("Connection refused")

    monkeypatch.setattr(engine.current_app, "send_task", refuse)
    operation = operation_for(alice_vm)
    assert engine.send(operation) is False
    later = timezone.now() + dt.timedelta(seconds=16)
    assert Operation.objects.due_for_sending(later, dt.timedelta(seconds=15)).filter(pk=operation.pk).exists()


# --- outcomes and undo ------------------------------------------------------------------------------


def test_an_internal_error_in_a_create_fails_it_and_takes_back_the_disk_and_domain(
    new_vm, test_session, monkeypatch
):
    def broken_seed(*args):
        raise ValueError("a bug")

    monkeypatch.setattr(tasks.provisioning, "make_seed", broken_seed)
    operation = operation_for(new_vm, OperationKind.CREATE)
    tasks.run_operation(FakeTask(), operation.pk, tasks.WORK[OperationKind.CREATE])
    operation.refresh_from_db()
    new_vm.refresh_from_db()
    assert operation.status == OperationStatus.FAILED
    assert operation.error == "internal error: ValueError: a bug"
    assert new_vm.state == VMState.ERROR
    assert test_session.domain_names() == []
    assert test_session.volume_names("test-pool") == ["image-engine.qcow2"]


def test_a_create_that_ran_out_of_attempts_takes_back_what_it_made(new_vm, test_session):
    operation = operation_for(new_vm, OperationKind.CREATE)
    tasks.run_operation(FakeTask(), operation.pk, tasks.WORK[OperationKind.CREATE])  # made everything
    Operation.objects.filter(pk=operation.pk).update(
        status=OperationStatus.QUEUED, attempt=tasks.max_attempts(), error=""
    )
    tasks.run_operation(FakeTask(), operation.pk, tasks.WORK[OperationKind.CREATE])
    operation.refresh_from_db()
    assert operation.status == OperationStatus.FAILED and operation.error.startswith(
        "gave up after 5 attempts"
    )
    assert test_session.domain_names() == []


def test_a_busy_pool_is_retried_not_failed(new_vm, test_session, monkeypatch):
    calls = []

    def busy_then_fine(*args):
        calls.append(args)
        if len(calls) == 1:
            raise hypervisor.Busy("storage pool 'test-pool' has asynchronous jobs running.")
        return original(*args)

    original = test_session.create_overlay
    monkeypatch.setattr(test_session, "create_overlay", busy_then_fine)
    operation = operation_for(new_vm, OperationKind.CREATE)
    with pytest.raises(RuntimeError, match="retry"):
        tasks.run_operation(FakeTask(), operation.pk, tasks.WORK[OperationKind.CREATE])
    operation.refresh_from_db()
    assert operation.status == OperationStatus.QUEUED and "asynchronous jobs" in operation.error
    tasks.run_operation(FakeTask(), operation.pk, tasks.WORK[OperationKind.CREATE])
    operation.refresh_from_db()
    assert operation.status == OperationStatus.SUCCEEDED


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        (
            libvirt.VIR_ERR_OPERATION_INVALID,
            "storage pool 'p' has asynchronous jobs running.",
            hypervisor.Busy,
        ),
        (libvirt.VIR_ERR_OPERATION_INVALID, "volume 'v' is still being allocated.", hypervisor.Busy),
        (
            libvirt.VIR_ERR_INTERNAL_ERROR,
            "internal error: pool 'p' has asynchronous jobs running.",
            hypervisor.Busy,
        ),
        (libvirt.VIR_ERR_OPERATION_TIMEOUT, "cannot acquire state change lock", hypervisor.Busy),
        (libvirt.VIR_ERR_OPERATION_INVALID, "domain is not running", hypervisor.Conflict),
        (libvirt.VIR_ERR_NO_DOMAIN, "Domain not found", hypervisor.NotFound),
    ],
)
def test_libvirts_busy_answers_are_transient_and_refusals_are_not(code, message, expected):
    from hypervisor.session import translate

    error = libvirt.libvirtError(message)
    error.err = (code, libvirt.VIR_FROM_STORAGE, message, 2, None, None, None, 0, 0)
    translated = translate(error)
    assert type(translated) is expected
    assert translated.transient == (expected is hypervisor.Busy)


def test_delete_finishes_when_the_domain_was_undefined_behind_the_panels_back(new_vm, test_session):
    operation = operation_for(new_vm, OperationKind.CREATE)
    tasks.run_operation(FakeTask(), operation.pk, tasks.WORK[OperationKind.CREATE])
    test_session._conn.lookupByName(new_vm.domain_name).undefine()  # `virsh undefine` while it runs
    assert not test_session._conn.lookupByName(new_vm.domain_name).isPersistent()
    delete = operation_for(new_vm, OperationKind.DELETE)
    tasks.run_operation(FakeTask(), delete.pk, tasks.WORK[OperationKind.DELETE])
    delete.refresh_from_db()
    assert delete.status == OperationStatus.SUCCEEDED, delete.error
    assert test_session.domain_names() == []
    assert test_session.volume_names("test-pool") == ["image-engine.qcow2"]


def test_delete_finishes_when_the_domain_is_already_gone(new_vm, test_session):
    operation = operation_for(new_vm, OperationKind.CREATE)
    tasks.run_operation(FakeTask(), operation.pk, tasks.WORK[OperationKind.CREATE])
    domain = test_session._conn.lookupByName(new_vm.domain_name)
    domain.destroy()
    domain.undefine()
    delete = operation_for(new_vm, OperationKind.DELETE)
    tasks.run_operation(FakeTask(), delete.pk, tasks.WORK[OperationKind.DELETE])
    delete.refresh_from_db()
    assert delete.status == OperationStatus.SUCCEEDED, delete.error
    assert test_session.volume_names("test-pool") == ["image-engine.qcow2"]


def test_the_outcome_waits_out_a_short_database_outage(alice_vm, monkeypatch, settings):
    settings.KVMPANEL_DATABASE_OUTAGE_SECONDS = 10
    refusals = []

    def flaky():
        if len(refusals) < 2:
            refusals.append(1)
            raise OperationalError("server closed the connection unexpectedly")
        return "written"

    assert engine.retry_database("test", flaky) == "written"
    assert len(refusals) == 2


def test_a_database_that_stays_away_leaves_the_operation_to_the_sweeper(alice_vm, settings):
    settings.KVMPANEL_DATABASE_OUTAGE_SECONDS = 1

    def away():
        raise OperationalError("could not connect to server")

    with pytest.raises(OperationalError):
        engine.retry_database("test", away)


# --- staff: cancel and retry --------------------------------------------------------------------


def test_cancelling_a_create_ends_it_and_its_undo_takes_back_what_it_made(new_vm, test_session, staff, sent):
    create = operation_for(new_vm, OperationKind.CREATE)
    claimed = Operation.claim(create.pk, "worker-a", LEASE)
    with hypervisor.connect(new_vm.node.uri) as node:
        tasks._install(node, new_vm, claimed)  # the worker got this far, then hung
    assert actions.cancel_operation(create, staff, "stuck on a dead node")
    create.refresh_from_db()
    assert (create.status, create.error) == (
        "cancelled",
        f"Cancelled by staff ({staff}): stuck on a dead node",
    )
    assert AuditEntry.objects.filter(action="operation.cancel", target_id=str(new_vm.uuid)).exists()
    tasks.undo_cancelled(create.pk)  # what the node's queue runs
    new_vm.refresh_from_db()
    assert new_vm.state == VMState.ERROR
    assert test_session.domain_names() == []
    # The worker that hung wakes up: its outcome is refused, and it takes back what it made too.
    assert not claimed.finish(OperationStatus.SUCCEEDED, lease_owner="worker-a")
    assert not actions.cancel_operation(create, staff, "again")  # already ended


def test_a_worker_that_finds_its_operation_cancelled_takes_back_what_it_made(
    new_vm, test_session, monkeypatch
):
    create = operation_for(new_vm, OperationKind.CREATE)
    real_start = test_session.start

    def cancelled_meanwhile(name):
        real_start(name)
        Operation.objects.filter(pk=create.pk).update(
            status=OperationStatus.CANCELLED, error="Cancelled by staff"
        )

    monkeypatch.setattr(test_session, "start", cancelled_meanwhile)
    tasks.run_operation(FakeTask(), create.pk, tasks.WORK[OperationKind.CREATE])
    create.refresh_from_db()
    assert create.status == OperationStatus.CANCELLED
    assert test_session.domain_names() == []


def test_staff_retry_sends_a_stuck_operation_again_now(
    alice_vm, staff, sent, django_capture_on_commit_callbacks
):
    operation = operation_for(alice_vm)
    with django_capture_on_commit_callbacks(execute=True):
        assert actions.retry_operation(operation, staff) == operation
    assert [pk for _name, pk, _queue in sent] == [operation.pk]


def test_staff_retry_of_a_failed_operation_asks_for_it_again(alice_vm, staff, enqueued):
    failed = operation_for(alice_vm, OperationKind.SHUTDOWN, status=OperationStatus.FAILED, error="timed out")
    again = actions.retry_operation(failed, staff)
    assert again.pk != failed.pk and (again.kind, again.status, again.user) == ("shutdown", "queued", staff)


def test_staff_retry_refuses_an_operation_whose_password_is_gone(alice_vm, staff):
    failed = operation_for(
        alice_vm, OperationKind.REINSTALL, status=OperationStatus.FAILED, params={"had_password": True}
    )
    with pytest.raises(actions.ActionRefused, match="password"):
        actions.retry_operation(failed, staff)


def test_the_backoffice_lists_stuck_operations_and_cancels_with_a_reason(
    client, staff, alice_vm, sent, settings
):
    settings.KVMPANEL_OPERATION_STUCK_SECONDS = 0
    stuck = operation_for(alice_vm)
    Operation.objects.filter(pk=stuck.pk).update(created_at=timezone.now() - dt.timedelta(minutes=5))
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    listing = client.get(reverse("admin:vms_operation_changelist") + "?attention=stuck")
    assert listing.status_code == 200 and alice_vm.name in listing.content.decode()
    form = {"action": "cancel", "_selected_action": [stuck.pk], "index": 0}
    client.post(reverse("admin:vms_operation_changelist"), form)
    stuck.refresh_from_db()
    assert stuck.status == OperationStatus.QUEUED  # no reason, nothing done
    client.post(reverse("admin:vms_operation_changelist"), {**form, "reason": "node gone"})
    stuck.refresh_from_db()
    assert stuck.status == OperationStatus.CANCELLED and stuck.error.endswith("node gone")


# --- watchers never write a state backwards -------------------------------------------------------


def test_a_state_read_before_a_delete_does_not_bring_the_vm_back(alice_vm):
    seen = alice_vm.state  # the monitor read the row...
    alice_vm.set_state(VMState.DELETED)  # ...the delete task finished...
    assert not VirtualMachine.objects.set_state_if(alice_vm.pk, expected=seen, state=VMState.STOPPED)
    alice_vm.refresh_from_db()
    assert alice_vm.state == VMState.DELETED


def test_a_vm_being_deleted_is_left_to_its_delete(alice_vm, monkeypatch):
    monkeypatch.setattr(monitor, "publish_vm_changed", lambda vm: None)
    operation_for(alice_vm, OperationKind.DELETE, status=OperationStatus.RUNNING)
    assert not monitor.apply_domain_state(alice_vm.node, alice_vm.domain_name, hypervisor.PowerState.STOPPED)
    alice_vm.refresh_from_db()
    assert alice_vm.state == VMState.RUNNING


# --- pushes and the password's doorbell never fail an operation ---------------------------------


def test_a_push_that_fails_is_tried_again_on_fresh_connections_and_never_raises(alice_vm, monkeypatch):
    tries, closed = [], []

    class Layer:
        async def group_send(self, group, message):
            tries.append(group)
            if len(tries) == 1:
                raise redis.exceptions.ConnectionError("Connection closed by server.")

        async def close_pools(self):
            closed.append(1)

    monkeypatch.setattr(pushes, "get_channel_layer", Layer)  # vms.live sends through kvmpanel.pushes
    live.publish_vm_changed(alice_vm)
    assert closed == [1] and len(tries) == 4  # one failed send, then the three groups


def test_a_push_with_redis_gone_is_dropped_with_a_log_line(alice_vm, monkeypatch, caplog):
    class Layer:
        async def group_send(self, group, message):
            raise redis.exceptions.ConnectionError("Connection refused")

        async def close_pools(self):
            raise redis.exceptions.ConnectionError("Connection refused")

    monkeypatch.setattr(pushes, "get_channel_layer", Layer)  # vms.live sends through kvmpanel.pushes
    live.publish_vm_changed(alice_vm)
    assert "could not publish vm.changed" in caplog.text


def test_the_password_wait_reads_the_row_when_redis_is_away(alice_vm, monkeypatch, transactional_db):
    monkeypatch.setattr(first_boot, "_doorbell", lambda: redis.Redis(port=1, socket_connect_timeout=0.2))
    operation = operation_for(alice_vm, OperationKind.REINSTALL, params={"password_hash": first_boot.PENDING})

    def deliver_later():
        threading.Event().wait(1.5)
        Operation.objects.filter(pk=operation.pk).update(params={"password_hash": "$2b$09$hash"})

    threading.Thread(target=deliver_later).start()
    assert first_boot.settings_of(operation)["password_hash"] == "$2b$09$hash"


# --- the image library's long tasks ---------------------------------------------------------------


def test_a_second_delivery_of_a_download_that_is_running_looks_again_later(monkeypatch):
    from images import tasks as image_tasks

    image = make_image(source_url="https://images.example.com/debian.qcow2", status="downloading")
    fetched = []
    monkeypatch.setattr(image_tasks.fetch, "fetch_and_place", fetched.append)
    with image_tasks.held(f"image-fetch:{image.pk}"):  # the first delivery is downloading
        with pytest.raises(Exception) as retried:
            image_tasks.fetch_image(image.pk)
        assert type(retried.value).__name__ == "Retry"
    assert fetched == []
    image_tasks.fetch_image(image.pk)  # the first one finished or died: the lock is free
    assert fetched == [image]
