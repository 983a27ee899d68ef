"""Making a VM's disk and its cloud-init seed on the node: what create and reinstall share."""

import secrets

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
    """The CD-ROM volumes a VM's domain carries: its seed (the rescue system's, in rescue mode)."""
    if vm.rescue_image_id:
        return (vm.rescue_seed_volume,) if vm.rescue_image.cloud_init else ()
    return (vm.seed_volume,) if vm.image.cloud_init else ()


def make_rescue_disk(node: hypervisor.NodeSession, vm: VirtualMachine, image) -> None:
    """A fresh overlay of the rescue image."""
    pool = vm.node.pool_name
    node.delete_volume(pool, vm.rescue_volume)  # a rescue always starts clean
    node.create_overlay(pool, vm.rescue_volume, pool, image.volume_name, 0)


def make_rescue_seed(node: hypervisor.NodeSession, vm: VirtualMachine, image, params: dict) -> None:
    """The rescue system's seed: the customer's password and keys, a hostname of its own."""
    pool = vm.node.pool_name
    if image.cloud_init:
        spec = cloudinit.SeedSpec(
            instance_id=f"{vm.uuid}-rescue-{secrets.token_hex(4)}",  # cloud-init runs at every rescue
            hostname=f"rescue-{vm.hostname.split('.')[0]}",
            default_user=image.default_user,
            password_hash=params.get("password_hash", ""),
            ssh_keys=tuple(params.get("ssh_keys", ())),
        )
        node.upload_bytes(pool, vm.rescue_seed_volume, cloudinit.build_seed_iso(spec))


def remove_rescue_system(node: hypervisor.NodeSession, vm: VirtualMachine) -> None:
    for volume in (vm.rescue_volume, vm.rescue_seed_volume):
        node.delete_volume(vm.node.pool_name, volume)
