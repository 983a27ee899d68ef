"""Backups against the real libvirtd and real restic: a directory store, and an SSH store served by an
sshd the test starts on 127.0.0.1 (its own host key, its own key pair). VMs here are not booted (their
disks are real overlays of the guest image); tests/integration/test_data_protection.py boots a guest.
"""

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import hypervisor
from backups import actions, tasks
from backups.choices import BackupStatus, StoreKind
from backups.models import Backup, BackupStore
from backups.restic import Repository
from vms.choices import OperationKind, OperationStatus, VMState
from vms.models import Operation
from vms.tasks import run_operation

from .conftest import BIN, OUTPUT, free_port, panel_process, virsh

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def store(tmp_path):
    return BackupStore.objects.create(
        name="local", kind=StoreKind.DIRECTORY, path=str(tmp_path / "repo"), is_default=True
    )


class _Task:
    """run_operation's view of its Celery task (no retries in-process)."""

    max_retries = 0

    class request:
        retries = 0


@contextlib.contextmanager
def no_worker():
    """Nothing is handed to a worker: a session worker started by an earlier test would otherwise run
    the same backup or restore beside this process."""
    from unittest import mock

    from vms import actions as vm_actions

    with mock.patch.object(actions, "ring"), mock.patch.object(vm_actions, "enqueue"):
        yield


def back_up(vm, store=None, kind="manual") -> Backup:
    """One backup, taken in this process (the worker's code, without the worker)."""
    with no_worker():
        backup = actions.start_backup(vm, vm.owner, kind=kind, store=store)
    Backup.objects.filter(pk=backup.pk).update(status=BackupStatus.RUNNING)
    tasks.run_backup.run(backup.pk)
    backup.refresh_from_db()
    return backup


def restore(vm, backup) -> Operation:
    with no_worker():
        operation = actions.restore(vm, vm.owner, backup)
    from backups import restoring

    run_operation(_Task(), operation.pk, restoring.restore)
    operation.refresh_from_db()
    vm.refresh_from_db()
    return operation


def pool_volumes(node):
    with hypervisor.connect(node.uri) as session:
        return session.volume_names(node.pool_name)


def write_into_disk(vm, offset: int, data: bytes):
    """Change the (stopped) VM's disk as the guest would: through qemu-io on its qcow2 file."""
    with hypervisor.connect(vm.node.uri) as session:
        path = session.volume_path(vm.node.pool_name, vm.disk_volume)
    with tempfile.NamedTemporaryFile() as source:
        source.write(data)
        source.flush()
        subprocess.run(
            ["qemu-io", "-f", "qcow2", "-c", f"write -s {source.name} {offset} {len(data)}", path],
            check=True,
            capture_output=True,
        )


def disk_holds(vm, offset: int, length: int, pattern: int) -> bool:
    """Whether the VM's disk holds `pattern` over the range (qemu-io reads it, sharing the file)."""
    with hypervisor.connect(vm.node.uri) as session:
        path = session.volume_path(vm.node.pool_name, vm.disk_volume)
    result = subprocess.run(
        ["qemu-io", "-r", "-U", "-f", "qcow2", "-c", f"read -P {pattern} {offset} {length}", path],
        capture_output=True,
        text=True,
    )
    return result.returncode == 0 and "failed" not in result.stdout + result.stderr


MIB = 1024**2


def repository_bytes(store) -> int:
    return sum(f.stat().st_size for f in Path(store.path).rglob("*") if f.is_file())


def test_a_second_backup_of_a_barely_changed_disk_stores_a_fraction(stopped_vm, store):
    first = back_up(stopped_vm)
    after_first = repository_bytes(store)
    assert first.status == BackupStatus.SUCCEEDED, first.error
    assert first.consistency == "stopped"
    assert first.disk_bytes == stopped_vm.plan.disk_bytes
    write_into_disk(stopped_vm, 100 * MIB, os.urandom(4 * MIB))  # 4 MiB changed (incompressible)
    second = back_up(stopped_vm)
    assert second.status == BackupStatus.SUCCEEDED, second.error
    grown = repository_bytes(store) - after_first
    report = (
        f"first: read {first.bytes_read} B from the node, added {first.bytes_added} B to the store "
        f"(the repository holds {after_first} B); second: read {second.bytes_read} B, added "
        f"{second.bytes_added} B (the repository grew by {grown} B)"
    )
    OUTPUT.mkdir(exist_ok=True)
    (OUTPUT / "backup-sizes.txt").write_text(report + "\n")
    print(report)
    assert first.bytes_added > 50 * MIB  # the guest image's data
    assert second.bytes_added < first.bytes_added / 10
    assert first.bytes_added == pytest.approx(after_first, rel=0.05)  # what the store really grew by
    assert second.bytes_added == pytest.approx(grown, rel=0.05)
    assert 4 * MIB <= second.bytes_added < 8 * MIB
    assert second.sha256 != first.sha256
    [snapshot] = Repository(store).snapshot_ids(second.tag)
    assert snapshot.startswith(second.restic_id)


def test_restore_brings_the_disk_back_even_after_the_pool_lost_it(stopped_vm, store):
    write_into_disk(stopped_vm, 200 * MIB, b"\x11" * MIB)
    backup = back_up(stopped_vm)
    assert backup.status == BackupStatus.SUCCEEDED, backup.error
    with hypervisor.connect(stopped_vm.node.uri) as session:  # the node's disk is gone
        session.delete_volume(stopped_vm.node.pool_name, stopped_vm.disk_volume)
        session.delete_volume(stopped_vm.node.pool_name, stopped_vm.seed_volume)
    started = time.monotonic()
    operation = restore(stopped_vm, backup)
    elapsed = time.monotonic() - started
    assert operation.status == OperationStatus.SUCCEEDED, operation.error
    print(f"restore of a {backup.disk_bytes}-byte disk took {elapsed:.1f} s")
    OUTPUT.mkdir(exist_ok=True)
    (OUTPUT / "restore-time.txt").write_text(f"{elapsed:.1f} s for {backup.disk_bytes} bytes\n")
    assert stopped_vm.state == VMState.RUNNING
    virsh("destroy", stopped_vm.domain_name)
    assert disk_holds(stopped_vm, 200 * MIB, MIB, 0x11)
    assert stopped_vm.restore_volume not in pool_volumes(stopped_vm.node)
    assert operation.params.get("progress") == 1.0


def test_restore_from_a_corrupt_backup_fails_clearly_and_leaves_the_vm_as_it_was(stopped_vm, store):
    backup = back_up(stopped_vm)
    write_into_disk(stopped_vm, 300 * MIB, b"\x22" * MIB)  # the VM has moved on since
    for pack in (Path(store.path) / "data").rglob("*"):
        if pack.is_file() and pack.stat().st_size > MIB:
            with open(pack, "r+b") as damaged:
                damaged.seek(pack.stat().st_size // 2)
                damaged.write(b"\x00" * 4096)
    operation = restore(stopped_vm, backup)
    assert operation.status == OperationStatus.FAILED
    assert "could not be read" in operation.error or "does not match" in operation.error, operation.error
    assert "left as it was" in operation.error
    assert disk_holds(stopped_vm, 300 * MIB, MIB, 0x22)
    assert stopped_vm.restore_volume not in pool_volumes(stopped_vm.node)
    assert stopped_vm.state == VMState.STOPPED


def test_restore_from_a_missing_backup_fails_clearly(stopped_vm, store):
    backup = back_up(stopped_vm)
    Repository(store).forget([backup.restic_id])  # gone from the store behind the panel's back
    operation = restore(stopped_vm, backup)
    assert operation.status == OperationStatus.FAILED
    assert "could not be read" in operation.error and "left as it was" in operation.error
    assert stopped_vm.disk_volume in pool_volumes(stopped_vm.node)


# --- real worker processes: killed half-way, and a VM deleted during its backup ---------------------


@contextlib.contextmanager
def backup_worker(process_env, queue: str):
    command = [
        str(BIN / "celery"), "-A", "kvmpanel", "worker", "-Q", queue, "--concurrency", "1",
        "--loglevel", "INFO", "--hostname", f"test-b17-{queue}-{time.monotonic_ns()}@%h",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    with panel_process(f"b17-worker-{queue}", command, process_env, lambda log: "ready." in log) as worker:
        yield worker


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def reading(backup) -> bool:
    backup.refresh_from_db()
    return backup.status != BackupStatus.RUNNING or backup.progress > 0.35


def restic_processes(store) -> list[str]:
    found = subprocess.run(["pgrep", "-af", "restic"], capture_output=True, text=True).stdout.splitlines()
    return [line for line in found if store.path in line]


def test_a_backup_whose_worker_is_killed_is_never_offered_and_the_next_one_works(
    stopped_vm, store, process_env, settings
):
    node = stopped_vm.node
    node.name = "test-b17-kill"  # a queue only this test's workers read
    node.save(update_fields=["name"])
    first = actions.start_backup(stopped_vm, stopped_vm.owner)
    with backup_worker(process_env, node.queue) as worker:
        tasks.start_queued()
        wait_for(lambda: reading(first), 60, "the backup to stream")
        assert first.status == BackupStatus.RUNNING
        for pid in [*children(worker.pid), worker.pid]:  # the pool process first, then the worker
            os.kill(pid, signal.SIGKILL)
        worker.wait(10)
    wait_for(lambda: not restic_processes(store), 10, "restic to die with its worker")
    settings.KVMPANEL_BACKUP_STALE_SECONDS = 1
    time.sleep(2.5)
    assert tasks.end_dead_backups() == 1
    first.refresh_from_db()
    assert first.status == BackupStatus.FAILED and "stopped half-way" in first.error
    assert not Backup.objects.usable().exists()
    assert stopped_vm.export_volume not in pool_volumes(node)
    assert Repository(store).snapshot_ids(first.tag) == []
    settings.KVMPANEL_BACKUP_STALE_SECONDS = 300
    second = actions.start_backup(stopped_vm, stopped_vm.owner)
    with backup_worker(process_env, node.queue):
        tasks.start_queued()
        wait_for(
            lambda: Backup.objects.get(pk=second.pk).status != BackupStatus.RUNNING, 120, "the next backup"
        )
    second.refresh_from_db()
    assert second.status == BackupStatus.SUCCEEDED, second.error
    assert list(Backup.objects.usable()) == [second]


def test_a_vm_deleted_during_its_backup_leaves_no_backup_and_nothing_on_the_node(
    stopped_vm, store, celery_worker, wait_until
):
    from vms import actions as vm_actions

    backup = actions.start_backup(stopped_vm, stopped_vm.owner)
    tasks.start_queued()
    wait_for(lambda: reading(backup), 60, "the backup to stream")
    deletion = vm_actions.request(stopped_vm, stopped_vm.owner, OperationKind.DELETE)
    wait_for(
        lambda: Backup.objects.get(pk=backup.pk).status != BackupStatus.RUNNING, 120, "the backup to end"
    )
    wait_for(lambda: not Operation.objects.get(pk=deletion.pk).is_active, 60, "the delete")
    backup.refresh_from_db()
    assert backup.status == BackupStatus.FAILED
    assert "deleted while it was backed up" in backup.error
    assert Operation.objects.get(pk=deletion.pk).status == OperationStatus.SUCCEEDED
    assert not [v for v in pool_volumes(stopped_vm.node) if v.startswith(stopped_vm.domain_name)]
    assert Repository(store).snapshot_ids(backup.tag) == []


# --- a store over SSH ---------------------------------------------------------------------------------


@pytest.fixture
def sshd(tmp_path):
    """An sshd of the test's own on 127.0.0.1: its own host key, and only the test's key may sign in."""
    folder = tmp_path / "sshd"
    folder.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", folder / "host_key"], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", folder / "client_key"], check=True)
    (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
    port = free_port()
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPidFile {folder / 'sshd.pid'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        "PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    server = subprocess.Popen(
        ["/usr/sbin/sshd", "-D", "-e", "-f", folder / "sshd_config"], stderr=subprocess.PIPE
    )
    wait_for(
        lambda: subprocess.run(["ssh-keyscan", "-p", str(port), "127.0.0.1"], capture_output=True).stdout,
        10,
        "sshd",
    )
    host_key = (folder / "host_key.pub").read_text().split()
    yield {
        "port": port,
        "private_key": (folder / "client_key").read_text(),
        "known_hosts": f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}",
        "path": str(tmp_path / "remote-repo"),
    }
    server.terminate()
    server.wait(10)


def test_a_store_over_ssh_backs_up_and_restores(stopped_vm, sshd):
    remote = BackupStore.objects.create(
        name="remote", kind=StoreKind.SFTP, host="127.0.0.1", port=sshd["port"], username="root",
        path=sshd["path"], ssh_private_key=sshd["private_key"], ssh_known_hosts=sshd["known_hosts"],
    )  # fmt: skip
    write_into_disk(stopped_vm, 50 * MIB, b"\x33" * MIB)
    backup = back_up(stopped_vm, store=remote)
    assert backup.status == BackupStatus.SUCCEEDED, backup.error
    assert (Path(sshd["path"]) / "config").exists()  # the repository is on the SSH host's side
    write_into_disk(stopped_vm, 50 * MIB, b"\x44" * MIB)
    operation = restore(stopped_vm, backup)
    assert operation.status == OperationStatus.SUCCEEDED, operation.error
    virsh("destroy", stopped_vm.domain_name)
    assert disk_holds(stopped_vm, 50 * MIB, MIB, 0x33)
    assert tasks.check_store(remote)
    remote.refresh_from_db()
    assert remote.used_bytes > 50 * MIB


WRONG_HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGuvmm1Ve3Hx5TS7zcdFZjw6HeUd3zgxoOTdXGNxc8Vb"


def test_a_store_over_ssh_refuses_a_host_with_another_key(stopped_vm, sshd):
    other = BackupStore.objects.create(
        name="spoofed", kind=StoreKind.SFTP, host="127.0.0.1", port=sshd["port"], username="root",
        path=sshd["path"], ssh_private_key=sshd["private_key"],
        ssh_known_hosts=f"[127.0.0.1]:{sshd['port']} {WRONG_HOST_KEY}",
    )  # fmt: skip
    backup = back_up(stopped_vm, store=other)
    assert backup.status == BackupStatus.FAILED
    assert "store refused" in backup.error
    assert not (Path(sshd["path"]) / "config").exists()


def test_restore_as_a_new_vm_gives_the_owner_a_copy_and_leaves_the_vm_alone(stopped_vm, store):
    write_into_disk(stopped_vm, 60 * MIB, os.urandom(MIB))
    backup = back_up(stopped_vm)
    original = read_range(stopped_vm, 60 * MIB, MIB)
    write_into_disk(stopped_vm, 60 * MIB, os.urandom(MIB))  # the VM moves on
    with no_worker():
        new = actions.restore_as_new(backup, stopped_vm.owner, "copy-1")
    from backups import restoring

    operation = new.operations.get()
    run_operation(_Task(), operation.pk, restoring.restore)
    operation.refresh_from_db()
    new.refresh_from_db()
    try:
        assert operation.status == OperationStatus.SUCCEEDED, operation.error
        assert (new.owner, new.plan, new.state) == (stopped_vm.owner, stopped_vm.plan, VMState.RUNNING)
        virsh("destroy", new.domain_name)
        assert read_range(new, 60 * MIB, MIB) == original
        assert read_range(stopped_vm, 60 * MIB, MIB) != original
    finally:
        from vms.tasks import _remove_domain_and_disks

        with hypervisor.connect(new.node.uri) as session:
            _remove_domain_and_disks(session, new)


def test_retention_forgets_what_the_schedule_no_longer_keeps(stopped_vm, store):
    from backups.models import BackupSchedule

    BackupSchedule.objects.create(vm=stopped_vm, store=store, keep_last=1)
    first = back_up_scheduled(stopped_vm)
    write_into_disk(stopped_vm, 70 * MIB, os.urandom(MIB))
    second = back_up_scheduled(stopped_vm)
    first.refresh_from_db()
    assert (first.status, second.status) == (BackupStatus.PRUNED, BackupStatus.SUCCEEDED)
    repository = Repository(store)
    assert repository.snapshot_ids(first.tag) == []  # forgotten, and its data pruned
    assert len(repository.snapshot_ids(second.tag)) == 1


def back_up_scheduled(vm) -> Backup:
    return back_up(vm, kind="scheduled")


def test_a_full_store_fails_the_backup_clearly_and_the_next_one_works(stopped_vm, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "test-b17-full", small], check=True)
    try:
        full = BackupStore.objects.create(name="full", path=str(small / "repo"), is_default=True)
        backup = back_up(stopped_vm, store=full)
        assert backup.status == BackupStatus.FAILED
        assert "store refused" in backup.error and "space" in backup.error, backup.error
        assert not Backup.objects.usable().exists()
        assert stopped_vm.export_volume not in pool_volumes(stopped_vm.node)
        subprocess.run(["mount", "-o", "remount,size=512m", small], check=True)  # the operator makes room
        assert back_up(stopped_vm, store=full).status == BackupStatus.SUCCEEDED
    finally:
        subprocess.run(["umount", "-l", small], check=False)


def read_range(vm, offset: int, length: int) -> bytes:
    """The guest's view of part of the VM's disk (qemu-img converts it to raw, sharing the file)."""
    with hypervisor.connect(vm.node.uri) as session:
        path = session.volume_path(vm.node.pool_name, vm.disk_volume)
    with tempfile.TemporaryDirectory() as folder:
        whole = Path(folder) / "disk.raw"
        subprocess.run(["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", path, whole], check=True)
        with open(whole, "rb") as disk:
            disk.seek(offset)
            return disk.read(length)
