"""Making a VM's disk and its cloud-init seed on the node: what create and reinstall share."""

from . import cloudinit, hypervisor
from .models import VirtualMachine


def make_disk(node: hypervisor.NodeSession, vm: VirtualMachine) -> None:
    """The VM's disk from its image at the plan's size: an instant overlay, or a full copy per the plan."""
    pool = vm.node.pool_name
    if node.volume_exists(pool, vm.disk_volume):
        return  # a retried task: the disk was made before the failure
    make = node.create_full_copy if vm.plan.full_copy else node.create_overlay
    make(pool, vm.disk_volume, pool, vm.image.volume_name, vm.plan.disk_bytes)


def make_seed(node: hypervisor.NodeSession, vm: VirtualMachine, params: dict) -> None:
    """Build the NoCloud seed ISO for this install and upload it next to the disk (replacing an old one)."""
    if not vm.image.cloud_init:
        return
    spec = cloudinit.SeedSpec(
        instance_id=vm.instance_id,
        hostname=vm.hostname,
        default_user=vm.image.default_user,
        password_hash=params.get("password_hash", ""),
        ssh_keys=tuple(params.get("ssh_keys", ())),
        user_data=params.get("user_data", ""),
    )
    node.upload_bytes(vm.node.pool_name, vm.seed_volume, cloudinit.build_seed_iso(spec))


def seed_volumes(vm: VirtualMachine) -> tuple[str, ...]:
    """The CD-ROM volumes a VM's domain carries: its seed, when its image uses cloud-init."""
    return (vm.seed_volume,) if vm.image.cloud_init else ()
