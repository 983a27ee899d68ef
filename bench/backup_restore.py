"""Backups and restores of a VM disk: a first and a second backup side by side, then a restore.

    .venv/bin/python bench/backup_restore.py [--change-mib 4] [--running]

A VM of the demo image (a 4 GiB overlay on the guest image, bench-…) is backed up into a directory
store of restic under var/, with the worker's own code in this process (no queue in between): a
first backup, then, after `--change-mib` MiB of random data were written into the disk (qemu-io),
a second one. For each: full or incremental, the wall time, the bytes read from the node (what
crossed the libvirt stream), and the bytes the store grew by. Then the second backup is restored
into the VM (into a scratch volume, checked, then the disk replaced) and timed. With `--running` the
VM is started first (not waited for: its disk is copied while it boots, through libvirt's backup
API, and the first backup leaves a checkpoint, so the second reads only the changed blocks) instead
of being copied stopped (a stopped VM's backups always read the whole disk). Everything is removed
at the end.
"""

import argparse
import os
import shutil
import subprocess
import tempfile
import time

from _setup import POOL, VAR, cleanup, prepare, start_vm

import hypervisor
from backups import actions, restoring, tasks
from backups.choices import BackupStatus
from backups.models import Backup, BackupStore
from vms import provisioning
from vms.models import VirtualMachine
from vms.tasks import run_operation

MIB = 1024 * 1024


class _Task:
    max_retries = 0

    class request:
        retries = 0


def back_up(vm) -> tuple[Backup, float]:
    started = time.monotonic()
    backup = actions.start_backup(vm, vm.owner)
    Backup.objects.filter(pk=backup.pk).update(status=BackupStatus.RUNNING)
    tasks.run_backup.run(backup.pk)
    backup.refresh_from_db()
    assert backup.status == BackupStatus.SUCCEEDED, backup.error
    return backup, time.monotonic() - started


def change_disk(vm, mib: int) -> None:
    with hypervisor.connect(vm.node.uri) as node:
        path = node.volume_path(POOL, vm.disk_volume)
    with tempfile.NamedTemporaryFile() as data:
        data.write(os.urandom(mib * MIB))
        data.flush()
        command = ["qemu-io", "-f", "qcow2", "-c", f"write -s {data.name} {512 * MIB} {mib * MIB}", path]
        subprocess.run(command, check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--change-mib", type=int, default=4)
    parser.add_argument("--running", action="store_true")
    args = parser.parse_args()
    repository = VAR / "bench-backups"
    shutil.rmtree(repository, ignore_errors=True)
    try:
        plan, image, user, node = prepare()
        BackupStore.objects.create(name="bench", path=str(repository), is_default=True)
        vm = VirtualMachine.objects.create(owner=user, node=node, plan=plan, image=image, hostname="bench-1")
        if args.running:
            start_vm(vm)
            vm.state = "running"
        else:
            with hypervisor.connect(node.uri) as session:
                provisioning.make_disk(session, vm)
                session.define_domain(provisioning.domain_spec(vm))
            vm.state = "stopped"
        vm.save()
        first, first_s = back_up(vm)
        if args.running:  # qemu-io may not write into a running VM's disk: stop it for the change
            with hypervisor.connect(node.uri) as session:
                session.destroy(vm.domain_name)
        change_disk(vm, args.change_mib)  # the checkpoint's bitmap in the qcow2 file records it
        if args.running:
            with hypervisor.connect(node.uri) as session:
                session.start(vm.domain_name)
        second, second_s = back_up(vm)
        started = time.monotonic()
        operation = actions.restore(vm, user, second)
        run_operation(_Task(), operation.pk, restoring.restore)
        operation.refresh_from_db()
        assert operation.status == "succeeded", operation.error
        restore_s = time.monotonic() - started
    finally:
        cleanup()
        shutil.rmtree(repository, ignore_errors=True)
    print(f"VM disk {first.disk_bytes / MIB:.0f} MiB ({'running' if args.running else 'stopped'}), "
          f"{args.change_mib} MiB changed between the backups")  # fmt: skip
    print(f"{'':34}{'first backup':>16}{'second backup':>16}")
    print(f"{'kind':34}{first.read_kind:>16}{second.read_kind:>16}")
    rows = [
        ("time (s)", first_s, second_s, "{:16.1f}"),
        ("read from the node (MiB)", first.bytes_read / MIB, second.bytes_read / MIB, "{:16.1f}"),
        ("added to the store (MiB)", first.bytes_added / MIB, second.bytes_added / MIB, "{:16.1f}"),
    ]
    for label, a, b, fmt in rows:
        print(f"{label:34}{fmt.format(a)}{fmt.format(b)}")
    print(f"restore of the second backup into the VM: {restore_s:.1f} s")


if __name__ == "__main__":
    main()
