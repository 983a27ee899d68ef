"""The backup pages in Chromium without a guest (rows only): the VM page's Backups part with a running
backup, a failed one and a schedule, and the staff's store list with a failed check and failed backups."""

import datetime as dt

import pytest
from django.utils import timezone

from backups.choices import BackupStatus, StoreKind
from backups.models import Backup, BackupSchedule, BackupStore
from vms.choices import VMState
from vms.models import Snapshot

from ..factories import make_user, make_vm
from .conftest import OUTPUT, sign_in_as_staff

pytestmark = [pytest.mark.integration, pytest.mark.browser]
GIB = 1024**3


@pytest.fixture
def stores(transactional_db):
    local = BackupStore.objects.create(
        name="panel-disk", path="/srv/kvmpanel-backups", is_default=True, used_bytes=41 * GIB,
        checked_at=timezone.now(), check_ok=True, check_message="no errors were found",
    )  # fmt: skip
    remote = BackupStore.objects.create(
        name="backup-host", kind=StoreKind.SFTP, host="backup.example.com", username="kvmpanel",
        path="/tank/kvmpanel", used_bytes=380 * GIB, checked_at=timezone.now(), check_ok=False,
        check_message="pack 3fa2c1d9 contains 2 errors: ciphertext verification failed",
    )  # fmt: skip
    return local, remote


def test_the_backups_part_and_the_staff_store_list(page, panel_server, sign_in, stores, customer):
    local, remote = stores
    vm = make_vm(customer, hostname="web-1", state=VMState.RUNNING)
    now = timezone.now()
    for days, status, read, added, error in [
        (3, BackupStatus.SUCCEEDED, 419 * 2**20, 140 * 2**20, ""),
        (2, BackupStatus.SUCCEEDED, 3 * 2**20, 2 * 2**20, ""),  # incremental: the changed blocks only
        (
            1,
            BackupStatus.FAILED,
            0,
            0,
            "the worker stopped half-way (killed or lost); nothing of this try was kept",
        ),
    ]:
        Backup.objects.create(
            vm=vm, store=local, status=status, kind="scheduled", created_at=now - dt.timedelta(days=days),
            disk_bytes=4 * GIB if status == BackupStatus.SUCCEEDED else 0, bytes_read=read, bytes_added=added,
            consistency="frozen" if status == BackupStatus.SUCCEEDED else "", error=error, restic_id="abc",
            incremental=days == 2,
        )  # fmt: skip
    Backup.objects.create(vm=vm, store=local, status=BackupStatus.RUNNING, progress=0.42, user=customer)
    Backup.objects.create(vm=make_vm(make_user("dave")), store=remote, status=BackupStatus.FAILED, error="x")
    BackupSchedule.objects.create(vm=vm, store=local, next_run_at=now + dt.timedelta(hours=5))
    Snapshot.objects.create(vm=vm, name="snap-1", vm_state=VMState.STOPPED, description="before the upgrade")

    sign_in(page, customer)
    page.goto(f"{panel_server}{vm.get_absolute_url()}")
    page.wait_for_selector("#backup-list tr[data-status=running]")
    assert "42 %" in page.inner_text("#backup-list")
    assert "crash" not in page.inner_text("#backup-list")
    assert page.locator("#backup-list [data-read=incremental]").count() == 1
    assert page.locator("#backup-list [data-read=full]").count() == 1
    assert "3.0 MB read" in page.inner_text("#backup-list").replace("\xa0", " ")
    page.locator("#backups summary").click()
    page.screenshot(path=str(OUTPUT / "b17-vm-page-backup-part.png"), full_page=True)

    sign_in_as_staff(page, panel_server, "b17-staff", "/backoffice/backups/backupstore/")
    listing = page.inner_text("#result_list")
    assert "FAILED" in listing and "ciphertext verification failed" in listing and "380.0" in listing
    page.screenshot(path=str(OUTPUT / "b17-staff-stores-failed-check.png"), full_page=True)
    page.goto(f"{panel_server}/backoffice/backups/backup/")
    listing = page.inner_text("#result_list").replace("\xa0", " ")
    assert "incremental: 3.0 MB, +2.0 MB stored" in listing, listing
    assert "full: 419.0 MB" in listing
    page.screenshot(path=str(OUTPUT / "b17-staff-backups-full-and-incremental.png"), full_page=True)
    page.goto(f"{panel_server}/backoffice/backups/backup/?status__exact=failed")
    assert "stopped half-way" in page.inner_text("#result_list")
    page.screenshot(path=str(OUTPUT / "b17-staff-failed-backups.png"), full_page=True)
