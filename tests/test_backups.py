"""Backups without a node: schedules (with a moved clock), their spread, retention, the per-node limit,
dead backups, refusals, the store check (real restic on a directory store), and the VM page's part."""

import datetime as dt
import subprocess
from pathlib import Path

import pytest
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from backups import actions, retention, tasks
from backups.choices import BackupKind, BackupStatus, Frequency
from backups.models import Backup, BackupSchedule, BackupStore
from backups.restic import Repository
from vms.choices import OperationKind, VMState

from .factories import make_node, make_user, make_vm

pytestmark = pytest.mark.django_db
UTC = dt.UTC


@pytest.fixture
def store(tmp_path):
    return BackupStore.objects.create(name="local", path=str(tmp_path / "repo"), is_default=True)


@pytest.fixture
def sent(monkeypatch):
    """Backups handed to a worker (run_backup messages), instead of sending them."""
    started = []
    monkeypatch.setattr(tasks.run_backup, "apply_async", lambda args, queue: started.append((args[0], queue)))
    monkeypatch.setattr(actions, "ring", lambda: None)
    return started


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def schedule_for(vm, store, **fields) -> BackupSchedule:
    return BackupSchedule.objects.create(vm=vm, store=store, **fields)


# --- schedules ----------------------------------------------------------------------------------------


def test_a_daily_schedule_runs_once_a_day_after_its_time_plus_the_vms_offset(alice, store, settings):
    settings.TIME_ZONE = "UTC"
    schedule = schedule_for(make_vm(alice), store, at=dt.time(2, 0))
    first = schedule.next_after(at("2026-03-01T10:00"))
    assert first.date() == dt.date(2026, 3, 2)
    assert dt.timedelta(0) <= first - at("2026-03-02T02:00") < dt.timedelta(minutes=60)
    assert schedule.next_after(first) - first == dt.timedelta(days=1)


def test_a_weekly_schedule_runs_on_its_weekday(alice, store, settings):
    settings.TIME_ZONE = "UTC"
    schedule = schedule_for(make_vm(alice), store, frequency=Frequency.WEEKLY, weekday=2, at=dt.time(3, 30))
    run = schedule.next_after(at("2026-03-01T10:00"))  # a Sunday
    assert run.weekday() == 2 and run.date() == dt.date(2026, 3, 4)
    assert schedule.next_after(run) - run == dt.timedelta(days=7)


def test_a_hundred_vms_at_the_same_time_are_spread_over_the_hour(alice, store, settings):
    settings.TIME_ZONE = "UTC"
    starts = {
        schedule_for(make_vm(alice), store, at=dt.time(0, 0)).next_after(at("2026-03-01T12:00"))
        for _ in range(100)
    }
    minutes = {start.minute for start in starts}
    assert len(starts) > 90 and len(minutes) > 40
    assert all(at("2026-03-02T00:00") <= start < at("2026-03-02T01:00") for start in starts)


def test_due_schedules_become_backups_once_with_a_moved_clock(alice, store, sent, settings):
    settings.TIME_ZONE = "UTC"
    vm = make_vm(alice, state=VMState.RUNNING)
    schedule = actions.save_schedule(vm, alice, at=dt.time(2, 0), keep_last=3)
    due = schedule.next_run_at
    assert tasks.queue_due_schedules(now=due - dt.timedelta(seconds=1)) == 0
    assert tasks.queue_due_schedules(now=due) == 1
    assert tasks.queue_due_schedules(now=due + dt.timedelta(minutes=5)) == 0  # not again the same day
    backup = Backup.objects.get()
    assert (backup.kind, backup.status, backup.store) == (BackupKind.SCHEDULED, BackupStatus.QUEUED, store)
    schedule.refresh_from_db()
    assert schedule.next_run_at - due == dt.timedelta(days=1)


# --- retention -----------------------------------------------------------------------------------------


def _complete(vm, store, when: str) -> Backup:
    return Backup.objects.create(
        vm=vm,
        store=store,
        status=BackupStatus.SUCCEEDED,
        created_at=at(when),
        restic_id=when,
        kind="scheduled",
    )


def test_retention_keeps_the_last_n(alice, store):
    vm = make_vm(alice)
    backups = [_complete(vm, store, f"2026-03-{day:02d}T02:00") for day in range(1, 11)]
    schedule = schedule_for(vm, store, keep_last=3)
    assert {b.pk for b in retention.to_prune(backups, schedule)} == {b.pk for b in backups[:7]}


def test_retention_keeps_one_per_day_week_and_month(alice, store, settings):
    settings.TIME_ZONE = "UTC"
    vm = make_vm(alice)
    backups = [
        _complete(vm, store, f"2026-{m:02d}-{d:02d}T0{h}:00")
        for m in (1, 2, 3)
        for d in (1, 9, 20)
        for h in (1, 5)
    ]
    schedule = schedule_for(vm, store, keep_last=1, keep_daily=2, keep_weekly=0, keep_monthly=3)
    kept = {b.restic_id for b in backups} - {b.restic_id for b in retention.to_prune(backups, schedule)}
    # the newest; the newest of the last two days; the newest of each of three months
    assert kept == {"2026-03-20T05:00", "2026-03-09T05:00", "2026-02-20T05:00", "2026-01-20T05:00"}


def test_retention_never_removes_the_last_backup(alice, store):
    vm = make_vm(alice)
    only = _complete(vm, store, "2026-03-01T02:00")
    schedule = schedule_for(vm, store, keep_last=0, keep_daily=0)
    assert retention.to_prune([only], schedule) == []


# --- dispatching ---------------------------------------------------------------------------------------


def test_no_more_than_the_limit_run_at_once_on_a_node(alice, store, sent, settings):
    settings.KVMPANEL_BACKUPS_PER_NODE = 2
    busy, quiet = make_node(), make_node()
    for _ in range(4):
        actions.start_backup(make_vm(alice, node=busy), alice)
    actions.start_backup(make_vm(alice, node=quiet), alice)
    assert tasks.start_queued() == 3
    assert sorted(queue for _, queue in sent) == [busy.queue, busy.queue, quiet.queue]
    assert tasks.start_queued() == 0  # the running ones still hold the slots
    Backup.objects.filter(pk=sent[0][0]).update(status=BackupStatus.SUCCEEDED)
    assert tasks.start_queued() == 1


def test_a_running_backup_without_a_sign_of_life_is_failed(alice, store, sent, settings, monkeypatch):
    cleaned = []
    monkeypatch.setattr(tasks.taking, "cleanup", cleaned.append)
    backup = actions.start_backup(make_vm(alice), alice)
    tasks.start_queued()
    assert tasks.end_dead_backups() == 0
    Backup.objects.filter(pk=backup.pk).update(heartbeat_at=timezone.now() - dt.timedelta(minutes=10))
    assert tasks.end_dead_backups() == 1
    backup.refresh_from_db()
    assert backup.status == BackupStatus.FAILED and "stopped half-way" in backup.error
    assert [b.pk for b in cleaned] == [backup.pk]
    tasks.run_backup.run(backup.pk)  # the lost message, delivered late: nothing happens
    backup.refresh_from_db()
    assert backup.status == BackupStatus.FAILED


# --- refusals ------------------------------------------------------------------------------------------


def test_one_backup_of_a_vm_at_a_time(alice, store, sent):
    vm = make_vm(alice)
    actions.start_backup(vm, alice)
    with pytest.raises(actions.ActionRefused, match="already queued or running"):
        actions.start_backup(vm, alice)


def test_no_store_no_backup(alice, sent):
    with pytest.raises(actions.ActionRefused, match="No backup store"):
        actions.start_backup(make_vm(alice), alice)


def test_only_a_complete_backup_of_ones_own_can_be_restored(alice, bob, store, enqueued):
    vm = make_vm(alice, state=VMState.STOPPED)
    failed = Backup.objects.create(vm=vm, store=store, status=BackupStatus.FAILED)
    with pytest.raises(actions.ActionRefused, match="Only a complete backup"):
        actions.restore(vm, alice, failed)
    bobs = Backup.objects.create(vm=make_vm(bob), store=store, status=BackupStatus.SUCCEEDED)
    with pytest.raises(actions.ActionRefused, match="someone else"):
        actions.restore(vm, alice, bobs)
    assert enqueued == []


def test_restore_as_a_new_vm_counts_in_the_quota(alice, store, enqueued, django_capture_on_commit_callbacks):
    from images.models import ImagePlacement

    vm = make_vm(alice, state=VMState.RUNNING)
    ImagePlacement.objects.create(image=vm.image, node=vm.node, ready=True)
    backup = Backup.objects.create(vm=vm, store=store, status=BackupStatus.SUCCEEDED)
    with django_capture_on_commit_callbacks(execute=True):
        new = actions.restore_as_new(backup, alice, "copy-1")
    assert (new.owner, new.plan, new.state) == (alice, vm.plan, VMState.PROVISIONING)
    assert enqueued[-1].kind == OperationKind.RESTORE and enqueued[-1].params["new_vm"]
    alice.max_vms = 2
    alice.save()
    with pytest.raises(actions.ActionRefused, match="VM"):
        actions.restore_as_new(backup, alice, "copy-2")
    assert vm.owner.vms.count() == 2


# --- the store check, with real restic -----------------------------------------------------------------


def test_a_damaged_store_fails_its_check_and_staff_see_it(store, client):
    repository = Repository(store)
    repository.ensure_initialized()
    repository.backup_stream(lambda write: write(b"data " * 100_000), tags=["t"])
    assert tasks.check_store(store)
    store.refresh_from_db()
    assert store.check_ok and store.used_bytes > 0
    for pack in (Path(store.path) / "data").rglob("*"):
        if pack.is_file():
            pack.write_bytes(b"\x00" * pack.stat().st_size)
    with override_settings(KVMPANEL_BACKUP_CHECK_READ_PERCENT=100):
        assert not tasks.check_store(store)
    store.refresh_from_db()
    assert store.check_ok is False and store.check_message
    client.force_login(make_user("operator", is_staff=True, is_superuser=True))
    page = client.get(reverse("admin:backups_backupstore_changelist"))
    assert b"FAILED" in page.content


def test_restic_never_sees_the_password_on_its_command_line(store, monkeypatch):
    seen = []
    real_run = subprocess.run

    def spy(command, **kwargs):
        seen.append((command, kwargs.get("env", {})))
        return real_run(command, **kwargs)

    monkeypatch.setattr(subprocess, "run", spy)
    Repository(store).ensure_initialized()
    assert seen and all(store.repository_password not in " ".join(map(str, c)) for c, _ in seen)
    assert all(env["RESTIC_PASSWORD"] == store.repository_password for _, env in seen)


# --- the VM page's part --------------------------------------------------------------------------------


def test_the_owner_sees_the_backups_part_and_starts_one(alice, store, sent, client):
    vm = make_vm(alice)
    Backup.objects.create(
        vm=vm, store=store, status=BackupStatus.FAILED, error="the node could not copy the disk"
    )
    client.force_login(alice)
    part = client.get(reverse("backups:vm", args=[vm.uuid]))
    assert b"Back up now" in part.content and b"the node could not copy the disk" in part.content
    client.post(reverse("backups:start", args=[vm.uuid]))
    assert vm.backups.filter(status=BackupStatus.QUEUED).count() == 1


def test_replacing_the_disk_needs_the_hostname_typed(
    alice, store, enqueued, client, django_capture_on_commit_callbacks
):
    vm = make_vm(alice, state=VMState.RUNNING)
    backup = Backup.objects.create(vm=vm, store=store, status=BackupStatus.SUCCEEDED)
    client.force_login(alice)
    url = reverse("backups:restore", args=[vm.uuid, backup.pk])
    page = client.get(url)
    assert b"will be replaced" in page.content and b"will be lost" in page.content
    client.post(url, {"mode": "replace", "confirm_hostname": "wrong"})
    assert enqueued == []
    with django_capture_on_commit_callbacks(execute=True):
        client.post(url, {"mode": "replace", "confirm_hostname": vm.hostname})
    assert [op.kind for op in enqueued] == [OperationKind.RESTORE]


def test_a_schedule_is_saved_from_the_vm_page(alice, store, client):
    vm = make_vm(alice)
    client.force_login(alice)
    data = {"enabled": "on", "frequency": "weekly", "weekday": "3", "at": "04:15", "keep_last": "4"}
    data.update(keep_daily="0", keep_weekly="2", keep_monthly="0")
    client.post(reverse("backups:schedule", args=[vm.uuid]), data)
    schedule = BackupSchedule.objects.get(vm=vm)
    assert (schedule.frequency, schedule.weekday, schedule.at, schedule.keep_weekly) == (
        "weekly",
        3,
        dt.time(4, 15),
        2,
    )
    assert schedule.next_run_at is not None


def test_a_backup_of_a_vm_whose_node_is_gone_fails_with_the_reason(alice, store, sent):
    vm = make_vm(alice, node=make_node(uri="test:///no/such/node.xml"))
    backup = actions.start_backup(vm, alice)
    tasks.start_queued()
    tasks.run_backup.run(backup.pk)
    backup.refresh_from_db()
    assert backup.status == BackupStatus.FAILED
    assert backup.error.startswith("the node could not copy the disk: cannot connect")
    assert not Backup.objects.usable().exists()
    assert Repository(store).snapshot_ids(backup.tag) == []


def test_a_vm_in_rescue_or_busy_with_an_operation_is_not_backed_up(alice, store, sent):
    from images.models import Image

    rescued = make_vm(
        alice, rescue_image=Image.objects.create(name="rescue", volume_name="r.qcow2", rescue=True)
    )
    with pytest.raises(actions.ActionRefused, match="leave rescue first"):
        actions.start_backup(rescued, alice)
    busy = make_vm(alice)
    busy.operations.create(kind=OperationKind.REINSTALL, status="running")
    with pytest.raises(actions.ActionRefused, match="Wait until the reinstall"):
        actions.start_backup(busy, alice)
    assert not Backup.objects.exists()


def test_an_ssh_store_cannot_smuggle_options_into_ssh(store):
    from django.core.exceptions import ValidationError

    evil = BackupStore(
        name="evil", kind="sftp", path="/x", host="-oProxyCommand=touch /tmp/owned", username="u"
    )
    with pytest.raises(ValidationError):
        evil.full_clean()
    with pytest.raises(ValidationError):
        Repository(evil).ensure_initialized()
    assert not Path("/tmp/owned").exists()
