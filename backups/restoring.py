"""Restoring a backup into a VM: the work of the `restore` operation (run by vms.tasks.run_operation).

The backup is written to a scratch volume beside the disk and checked (every byte's SHA-256 against
the one recorded at backup time) before anything of the VM is touched: a missing or damaged backup
fails the operation and leaves the VM as it was. Only then are its snapshots removed (they live in
the disk being replaced), its disk replaced by a qcow2 copy of the backup, its seed and definition
made again if the node lost them, and the VM started.
"""

import hashlib
import time

import hypervisor
from vms import provisioning, snapshots
from vms.choices import VMState
from vms.live import publish_vm_changed
from vms.models import Operation, VirtualMachine
from vms.tasks import _remove_domain_and_disks

from .models import Backup
from .restic import Repository, ResticError

PROGRESS_SECONDS = 1.0


class _Progress:
    """The share of the backup written so far, on the operation's params, at most once a second."""

    def __init__(self, operation: Operation, total: int):
        self.operation, self.total, self.done, self.last = operation, max(total, 1), 0, 0.0

    def __call__(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self.last >= PROGRESS_SECONDS:
            self.last = now
            self._write(round(self.done / self.total, 3))

    def finished(self) -> None:
        """All of it: on the row, where the operation's end keeps it (it reads its params from there)."""
        self._write(1.0)

    def _write(self, share: float) -> None:
        params = {**self.operation.params, "progress": share}
        Operation.objects.filter(pk=self.operation.pk).update(params=params)
        publish_vm_changed(self.operation.vm)  # an open VM page shows the new share


def restore(node: hypervisor.NodeSession, vm: VirtualMachine, operation: Operation) -> str:
    if not operation.params.get("new_vm"):
        return _restore(node, vm, operation)
    try:
        return _restore(node, vm, operation)
    except hypervisor.HypervisorError as error:
        if not error.transient:
            # A new VM that could not be made: nothing of it stays on the node, and it shows as failed.
            _remove_domain_and_disks(node, vm)
            vm.set_state(VMState.ERROR)
        raise


def _restore(node: hypervisor.NodeSession, vm: VirtualMachine, operation: Operation) -> str:
    backup = Backup.objects.usable().select_related("store").filter(pk=operation.params["backup_id"]).first()
    if backup is None:
        raise hypervisor.OperationFailed(
            "that backup is not complete (or was removed); the VM was left as it was"
        )
    pool = vm.node.pool_name
    progress = _Progress(operation, backup.disk_bytes)
    _write_checked(node, pool, vm, backup, progress)
    snapshots.remove_all(node, vm)
    if node.domain_exists(vm.domain_name):
        node.destroy(vm.domain_name)
    node.delete_volume(pool, vm.disk_volume)
    node.convert_volume(pool, vm.restore_volume, vm.disk_volume, "qcow2")
    node.delete_volume(pool, vm.restore_volume)
    node.grow_volume(pool, vm.disk_volume, vm.plan.disk_bytes)  # the VM was resized since the backup
    # The restored system is the instance the backup saw: cloud-init must not run its first boot again.
    provisioning.make_seed(node, vm, {}, instance_id=backup.instance_id or None)
    node.define_domain(provisioning.domain_spec(vm))
    node.start(vm.domain_name)
    progress.finished()
    return node.power_state(vm.domain_name)


def _write_checked(node, pool: str, vm: VirtualMachine, backup: Backup, progress: _Progress) -> None:
    """The backup's disk into the VM's restore volume, or an error (and no volume) if it is not intact."""
    digest = hashlib.sha256()
    try:
        with Repository(backup.store).dump(backup.restic_id) as read:

            def checked_read(size: int) -> bytes:
                data = read(size)
                digest.update(data)
                progress(len(data))
                return data

            node.write_volume(pool, vm.restore_volume, backup.disk_bytes, checked_read)
    except ResticError as error:
        node.delete_volume(pool, vm.restore_volume)
        raise hypervisor.OperationFailed(
            f"the backup could not be read from {backup.store}: {error}; the VM was left as it was"
        ) from error
    if progress.done != backup.disk_bytes or digest.hexdigest() != backup.sha256:
        node.delete_volume(pool, vm.restore_volume)
        checksum = "right" if digest.hexdigest() == backup.sha256 else "wrong"
        raise hypervisor.OperationFailed(
            f"the backup read from {backup.store} does not match what was backed up ({progress.done} of "
            f"{backup.disk_bytes} bytes, checksum {checksum}); the VM was left as it was"
        )
