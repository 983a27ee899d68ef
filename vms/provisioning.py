"""Making a VM's disk, its cloud-init seed and its definition on the node: what create, reinstall and
restore share."""

import secrets

import hypervisor

from . import cloudinit, networking, traffic
from .choices import OperationKind, OperationStatus
from .models import VirtualMachine


def make_disk(node: hypervisor.NodeSession, vm: VirtualMachine) -> None:
    """The VM's disk from its image at the plan's size: an instant overlay, or a full copy per the plan."""
    pool = vm.node.pool_name
    if node.volume_exists(pool, vm.disk_volume):
        return  # a retried task: the disk was made before the failure
    make = node.create_full_copy if vm.plan.full_copy else node.create_overlay
    make(pool, vm.disk_volume, pool, vm.image.volume_name, vm.plan.disk_bytes)


def make_seed(
    node: hypervisor.NodeSession, vm: VirtualMachine, params: dict, instance_id: str | None = None
) -> None:
    """Build the NoCloud seed ISO for this install and upload it next to the disk (replacing an old one).

    `instance_id`: another cloud-init instance than the VM's own (a restored disk's, so that its first
    boot is not run again)."""
    if not vm.image.cloud_init:
        return
    spec = cloudinit.SeedSpec(
        instance_id=instance_id or vm.instance_id,
        hostname=vm.hostname,
        default_user=vm.image.default_user,
        password_hash=params.get("password_hash", ""),
        ssh_keys=tuple(params.get("ssh_keys", ())),
        user_data=params.get("user_data", ""),
        network_config=networking.network_config(vm),
    )
    node.upload_bytes(vm.node.pool_name, vm.seed_volume, cloudinit.build_seed_iso(spec))


def apply_filter(node: hypervisor.NodeSession, vm: VirtualMachine) -> None:
    """The VM's traffic filter, before any NIC that refers to it (libvirt applies changes at once)."""
    if vm.interfaces.exists():
        node.define_filter(networking.filter_spec(vm))


def remove_filter(node: hypervisor.NodeSession, vm: VirtualMachine) -> None:
    if vm.interfaces.exists():
        node.delete_filter(networking.filter_name(vm))


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
            network_config=networking.network_config(vm),  # the rescue system answers on the VM's addresses
        )
        node.upload_bytes(pool, vm.rescue_seed_volume, cloudinit.build_seed_iso(spec))


def remove_rescue_system(node: hypervisor.NodeSession, vm: VirtualMachine) -> None:
    for volume in (vm.rescue_volume, vm.rescue_seed_volume):
        node.delete_volume(vm.node.pool_name, volume)


def domain_spec(vm: VirtualMachine) -> hypervisor.DomainSpec:
    node = vm.node
    bandwidth = traffic.bandwidth_of(vm)  # the plan's speeds, or the throttle's this month
    return hypervisor.DomainSpec(
        name=vm.domain_name,
        uuid=str(vm.uuid),
        title=vm.name,
        virt_type=node.virt_type,
        vcpus=vm.plan.vcpus,
        memory_mib=vm.plan.memory_mib,
        pool=node.pool_name,
        disk_volume=vm.disk_volume,
        network=node.network_name,
        vnc_password=vm.vnc_password,
        vnc_listen=node.console_host,
        hostname=vm.hostname,
        owner_id=vm.owner_id,
        cdrom_volumes=seed_volumes(vm),
        iso_volume=vm.iso.volume_name if vm.iso else None,
        boot_from_iso=vm.boot_from_iso and vm.iso is not None,
        rescue_volume=vm.rescue_volume if vm.rescue_image_id else None,
        nics=networking.nic_specs(vm, bandwidth),
        bandwidth=bandwidth,
    )


def last_seed_params(vm: VirtualMachine) -> dict:
    """What the VM's last install told the guest (its SSH keys and cloud-config; the password's hash is
    gone by now), so a seed rebuilt for new addresses says the same. The instance id stays, so the
    guest does not run its first-boot steps again; it reads the network part at its next start."""
    last = (
        vm.operations.filter(
            kind__in=(OperationKind.CREATE, OperationKind.REINSTALL), status=OperationStatus.SUCCEEDED
        )
        .order_by("-created_at", "-id")
        .first()
    )
    params = last.params if last else {}
    return {"ssh_keys": params.get("ssh_keys", []), "user_data": params.get("user_data", "")}
