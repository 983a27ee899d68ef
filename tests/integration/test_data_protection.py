"""A real guest, in the browser: a marker file written through the guest agent comes back from a snapshot
(take, change, revert) and from a backup (back up, delete, restore), and the guest boots from the
restored disk. The backup restored is the second, incremental one: only the blocks written since the
first were read from the node, and the store's copy (the first backup with those blocks laid over it)
is a whole disk that boots with both markers. The same guest (booted once) gives the closing numbers:
the first and second backup of the demo VM (time, bytes read from the node, bytes added to the store)
and the restore time.
"""

import time

import pytest

from backups import tasks as backup_tasks
from backups.choices import BackupStatus, StoreKind
from backups.models import Backup, BackupStore
from vms import actions
from vms.choices import OperationKind
from vms.models import Operation, VirtualMachine

from .conftest import OUTPUT, agent, domain_state, in_guest, settled, sign_in_as_staff, virsh

pytestmark = [pytest.mark.integration, pytest.mark.browser]
BOOT_TIMEOUT = 300
PASSWORD = "protect-me-Secret-42"


def wait_for_agent(vm, wait_until, timeout=BOOT_TIMEOUT):
    wait_until(lambda: agent(vm, "guest-ping", timeout=5) is not None, timeout, "the guest agent")


def finished(operation, wait_until, timeout=300) -> Operation:
    wait_until(lambda: not Operation.objects.get(pk=operation.pk).is_active, timeout, operation.kind)
    operation.refresh_from_db()
    assert operation.status == "succeeded", operation.error
    return operation


def newest(vm, kind) -> Operation:
    return vm.operations.filter(kind=kind).order_by("-created_at", "-id").first()


def backup_done(wait_until, timeout=600) -> Backup:
    def ended():
        backup_tasks.dispatch()  # beat's job; here the test rings it (the worker does too, after each backup)
        return not Backup.objects.active().exists()

    wait_until(ended, timeout, "the backup", interval=2)
    backup = Backup.objects.order_by("-created_at", "-id").first()
    assert backup.status == BackupStatus.SUCCEEDED, backup.error
    return backup


@pytest.fixture
def directory_store(tmp_path):
    return BackupStore.objects.create(
        name="backups on the panel host",
        kind=StoreKind.DIRECTORY,
        path=str(tmp_path / "repo"),
        is_default=True,
    )


def test_a_marker_file_comes_back_from_a_snapshot_and_from_a_backup(
    page,
    sign_in,
    panel_server,
    customer,
    node,
    demo_image,
    nano_plan,
    celery_worker,
    wait_until,
    directory_store,
):
    vm = actions.create_vm(
        owner=customer, plan=nano_plan, image=demo_image, hostname="keep-1", password=PASSWORD
    )
    finished(newest(vm, OperationKind.CREATE), wait_until, 180)
    wait_for_agent(vm, wait_until)
    in_guest(vm, "echo before-snapshot > /root/snapshot-marker && sync")
    sign_in(page, customer)
    page.goto(f"{panel_server}{vm.get_absolute_url()}")
    settled(page)  # a click never lands in a live swap

    # Snapshot: take (in the browser), change, revert (after the confirmation), the file is back.
    page.fill("#snapshots input[name=description]", "before the cleanup")
    page.get_by_role("button", name="Take snapshot").click()
    finished(newest(vm, OperationKind.SNAPSHOT), wait_until)
    in_guest(vm, "rm /root/snapshot-marker && echo changed > /root/after-snapshot && sync")
    page.goto(f"{panel_server}{vm.get_absolute_url()}")
    settled(page)  # a click never lands in a live swap
    page.wait_for_selector("#snapshots tr[data-snapshot]")
    page.screenshot(path=str(OUTPUT / "b17-vm-page-snapshots.png"), full_page=True)
    page.get_by_role("link", name="Revert…").click()
    assert "will be lost" in page.inner_text("#revert-loss")
    page.screenshot(path=str(OUTPUT / "b17-snapshot-revert-confirmation.png"), full_page=True)
    page.get_by_role("button", name="Revert").click()
    finished(newest(vm, OperationKind.REVERT_SNAPSHOT), wait_until)
    assert domain_state(vm.domain_name) == "running"  # it was running: it resumes with its memory
    wait_for_agent(vm, wait_until, 60)
    assert in_guest(vm, "cat /root/snapshot-marker; ls /root") == "before-snapshot\nsnapshot-marker\n"

    # A snapshot and a backup checkpoint cannot live side by side (libvirt 9.0): with the snapshot
    # there, backups read the whole disk. Deleted, the chain of incremental backups can start.
    snapshot = vm.snapshots.get()
    finished(actions.delete_snapshot(VirtualMachine.objects.get(pk=vm.pk), customer, snapshot), wait_until)

    # Backup: write, back up (in the browser): a full read, and a checkpoint on the node.
    in_guest(vm, "echo in-the-backup > /root/backup-marker && sync")
    page.goto(f"{panel_server}{vm.get_absolute_url()}")
    settled(page)  # a click never lands in a live swap
    started = time.monotonic()
    page.get_by_role("button", name="Back up now").click()
    first = backup_done(wait_until)
    first_seconds = time.monotonic() - started
    assert first.consistency == "frozen"  # the agent froze the file systems for the copy
    assert not first.incremental and first.checkpoint == f"kvmpanel-{first.pk}"
    assert virsh_checkpoints(vm) == [first.checkpoint]

    # About 1 MiB written in the guest, and a second marker; the second backup reads only what changed.
    written = in_guest(
        vm,
        "head -c 1048576 /dev/urandom > /root/changed.bin && echo in-the-second > /root/second-marker "
        "&& sync && sha256sum /root/changed.bin",
    ).split()[0]
    started = time.monotonic()
    second = _second_backup(vm, customer, wait_until)
    second_seconds = time.monotonic() - started
    assert second.incremental, "the second backup read the whole disk"
    assert second.bytes_read < first.bytes_read / 10, (second.bytes_read, first.bytes_read)
    assert second.bytes_added < 32 * 1024 * 1024, (
        second.bytes_added
    )  # ~1 MiB of new data, and restic's chunks
    assert virsh_checkpoints(vm) == [second.checkpoint]  # only the newest is kept
    in_guest(vm, "rm /root/backup-marker /root/second-marker /root/changed.bin && sync")

    page.goto(f"{panel_server}{vm.get_absolute_url()}")
    settled(page)  # a click never lands in a live swap
    page.wait_for_selector("#backup-list tr[data-status=succeeded]")
    assert page.locator("#backup-list [data-read=incremental]").count() == 1
    page.locator("#backups summary").click()
    page.select_option("#id_frequency", "weekly")
    page.select_option("#id_weekday", "6")
    page.fill("#id_at", "03:30")
    page.fill("#id_keep_last", "4")
    page.screenshot(path=str(OUTPUT / "b17-vm-page-backups.png"), full_page=True)
    page.get_by_role("button", name="Save schedule").click()
    page.wait_for_selector("#backup-schedule-summary")
    assert "Weekly on Sunday at 03:30" in page.inner_text("#backup-schedule-summary")
    # Restore the second, incremental backup (the newest, first in the list), after typing the hostname.
    page.locator("#backup-list a", has_text="Restore…").first.click()
    page.fill("#id_confirm_hostname", "keep-1")
    page.screenshot(path=str(OUTPUT / "b17-restore-confirmation.png"), full_page=True)
    page.get_by_role("button", name="Replace the disk").click()
    restore = finished(newest(vm, OperationKind.RESTORE), wait_until)
    assert restore.params["backup_id"] == second.pk
    wait_for_agent(vm, wait_until)  # the guest boots from the restored disk
    assert in_guest(vm, "cat /root/backup-marker /root/second-marker") == "in-the-backup\nin-the-second\n"
    assert in_guest(vm, "sha256sum /root/changed.bin").split()[0] == written
    assert not vm.snapshots.exists()
    assert virsh_checkpoints(vm) == []  # the disk they described was replaced

    _closing_numbers(first, first_seconds, second, second_seconds, restore)
    _staff_store_view(page, panel_server, directory_store)
    actions.request(VirtualMachine.objects.get(pk=vm.pk), customer, OperationKind.DELETE)
    wait_until(lambda: domain_state(vm.domain_name) == "absent", 120, "the VM's deletion")


def virsh_checkpoints(vm) -> list[str]:
    result = virsh("checkpoint-list", vm.domain_name, "--name", "--topological")
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def _second_backup(vm, customer, wait_until) -> Backup:
    from backups import actions as backup_actions

    backup_actions.start_backup(VirtualMachine.objects.get(pk=vm.pk), customer)
    return backup_done(wait_until)


def _closing_numbers(first, first_seconds, second, second_seconds, restore) -> None:
    mib = 1024 * 1024
    lines = [
        f"demo VM disk: {first.disk_bytes / mib:.0f} MiB (guest view)",
        f"first backup:  {first_seconds:6.1f} s, read {first.bytes_read / mib:7.1f} MiB from the node, "
        f"added {first.bytes_added / mib:7.1f} MiB to the store",
        f"second backup: {second_seconds:6.1f} s, read {second.bytes_read / mib:7.1f} MiB from the node, "
        f"added {second.bytes_added / mib:7.1f} MiB to the store "
        f"({'incremental' if second.incremental else 'full'}, after ~1 MiB written in the guest)",
        f"restore of the second backup (replace the disk, start): {restore.duration.total_seconds():.1f} s",
    ]
    OUTPUT.mkdir(exist_ok=True)
    (OUTPUT / "b17-closing-numbers.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _staff_store_view(page, panel_server, store) -> None:
    backup_tasks.check_store(store)
    sign_in_as_staff(page, panel_server, "b17-operator", "/backoffice/backups/backupstore/")
    assert "✔" in page.inner_text("#result_list")
    page.screenshot(path=str(OUTPUT / "b17-staff-stores.png"), full_page=True)
