"""A VM's NICs and addresses as the node and the guest see them.

The panel's records (NetworkInterface, network.Address, the node's mode) become: the domain's
interfaces (hypervisor.NicSpec), the VM's traffic filter (hypervisor.FilterSpec), and the guest's
cloud-init network-config (version 2, matched by MAC, static: no DHCP wait at boot).
"""

from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import F

import hypervisor
from accounts import audit
from network import allocation, rdns
from network.choices import ROUTED_GATEWAY_V4, ROUTED_GATEWAY_V6
from network.models import Address
from nodes.choices import NetworkMode

from .models import NetworkInterface, VirtualMachine
from .signals import firewall_wanted

UNLIMITED = hypervisor.Bandwidth()
NIC_MODES = {NetworkMode.BRIDGED: "bridge", NetworkMode.ROUTED: "routed"}


@dataclass(frozen=True)
class NicAddresses:
    """One NIC and the addresses it holds, by family."""

    nic: NetworkInterface
    ipv4: tuple[Address, ...]
    ipv6: tuple[Address, ...]


def filter_name(vm: VirtualMachine) -> str:
    """The VM's own traffic filter (tests' names start with their prefix, like their domains)."""
    return f"{settings.KVMPANEL_DOMAIN_PREFIX}kvmpanel-{vm.uuid}"


def _by_nic(vm: VirtualMachine) -> list[NicAddresses]:
    nics = list(vm.interfaces.all())
    held: dict[int, list[Address]] = {nic.pk: [] for nic in nics}
    for address in vm.addresses().select_related("pool"):
        held[address.assigned_object_id].append(address)
    return [
        NicAddresses(
            nic,
            tuple(a for a in held[nic.pk] if a.family == 4),
            tuple(a for a in held[nic.pk] if a.family == 6),
        )
        for nic in nics
    ]


def _guest_cidr(address: Address, routed: bool) -> str:
    """What the guest puts on its NIC: a routed node's addresses stand alone (/32, /64 or /128); a
    bridged node's carry the pool's prefix length, so the gateway and neighbours are on-link."""
    if address.is_network:
        return f"{address.host_address}/{address.prefix_length}"
    if routed:
        return f"{address.address}/{address.prefix_length}"
    return f"{address.address}/{address.pool.network.prefixlen}"


def nic_specs(
    vm: VirtualMachine, bandwidth: hypervisor.Bandwidth = UNLIMITED
) -> tuple[hypervisor.NicSpec, ...]:
    """The domain's NICs, each at `bandwidth`; none for a VM without NIC rows (its old NIC on the
    panel's network)."""
    node = vm.node
    mode = NIC_MODES.get(node.network_mode, "network")
    source = node.bridge if mode == "bridge" else node.network_name
    return tuple(
        hypervisor.NicSpec(
            mac=entry.nic.mac,
            mode=mode,
            source=source,
            filter_name=filter_name(vm),
            ipv4=tuple(a.address for a in entry.ipv4),
            ipv6=tuple(a.cidr for a in entry.ipv6),
            gateway_v4=ROUTED_GATEWAY_V4,
            gateway_v6=ROUTED_GATEWAY_V6,
            bandwidth=bandwidth,
        )
        for entry in _by_nic(vm)
    )


def filter_spec(vm: VirtualMachine) -> hypervisor.FilterSpec:
    """The VM's whole filter, read from the rows each time: its addresses and its firewall (from the
    firewall app, through a signal), so no definition of the filter ever drops either."""
    addresses = list(vm.addresses())
    return hypervisor.FilterSpec(
        name=filter_name(vm),
        ipv4=tuple(a.address for a in addresses if a.family == 4),
        ipv6=tuple(a.cidr for a in addresses if a.family == 6),
        firewall=_firewall(vm),
    )


def _firewall(vm: VirtualMachine) -> hypervisor.FirewallSpec | None:
    answers = [answer for _receiver, answer in firewall_wanted.send(sender=VirtualMachine, vm=vm) if answer]
    return answers[0] if answers else None


# cloud-init configures no network at all: nothing is brought up, nothing waits at boot.
NETWORK_DISABLED = {"config": "disabled"}


def network_config(vm: VirtualMachine) -> dict | None:
    """cloud-init network-config version 2: each NIC matched by its MAC, static addresses, gateways
    and resolvers. For a VM without NICs: on an isolated node, no network (no address and no DHCP
    server there, so a DHCP try would only hold the boot, about a minute and a half); elsewhere None,
    cloud-init's DHCP fallback (a VM made before NICs were recorded, on a bridge that may have one)."""
    entries = _by_nic(vm)
    if not entries:
        return NETWORK_DISABLED if vm.node.network_mode == NetworkMode.ISOLATED else None
    routed = vm.node.network_mode == NetworkMode.ROUTED
    ethernets = {}
    for index, entry in enumerate(entries):
        ethernets[f"eth{index}"] = _ethernet(entry, f"eth{index}", routed)
    return {"version": 2, "ethernets": ethernets}


def _ethernet(entry: NicAddresses, name: str, routed: bool) -> dict:
    config: dict = {"match": {"macaddress": entry.nic.mac}, "set-name": name}
    config["addresses"] = [_guest_cidr(a, routed) for a in (*entry.ipv4, *entry.ipv6)]
    if entry.ipv4:
        config["gateway4"] = ROUTED_GATEWAY_V4 if routed else entry.ipv4[0].pool.gateway
    if entry.ipv6:
        config["gateway6"] = ROUTED_GATEWAY_V6 if routed else entry.ipv6[0].pool.gateway
    config = {key: value for key, value in config.items() if value}
    resolvers = _resolvers(entry)
    if resolvers:
        config["nameservers"] = {"addresses": resolvers}
    return config


def _resolvers(entry: NicAddresses) -> list[str]:
    found: list[str] = []
    for address in (*entry.ipv4, *entry.ipv6):
        found += [r for r in address.pool.resolver_list() if r not in found]
    return found


# --- giving and taking addresses --------------------------------------------------


def allocate_for_new_vm(vm: VirtualMachine) -> list[Address]:
    """The NIC of a VM being created and the addresses its plan gives, inside the create's transaction.

    Nodes in isolated mode give none (the panel's own network). Raises allocation.AllocationError
    (nothing is kept: the caller's transaction rolls back).
    """
    if vm.node.network_mode == NetworkMode.ISOLATED:
        return []
    nic = NetworkInterface.objects.create(vm=vm)
    wanted = [(4, vm.plan.ipv4_addresses), (6, vm.plan.ipv6_networks)]
    addresses = [allocation.allocate(vm.node, nic, family) for family, count in wanted for _ in range(count)]
    rdns.give_default(addresses, vm.hostname)  # published once the create's transaction commits
    return addresses


def add_address(vm: VirtualMachine, family: int, user, pool=None) -> Address:
    """Staff give the VM one more address (a VM made before NICs existed gets its NIC now)."""
    with transaction.atomic():
        nic = vm.interfaces.first() or NetworkInterface.objects.create(vm=vm)
        address = allocation.allocate(vm.node, nic, family, pool=pool)
        rdns.give_default([address], vm.hostname)
    audit.record("address.allocate", vm, actor=user, outcome="succeeded", detail=address.cidr)
    return address


def remove_address(vm: VirtualMachine, address: Address, user) -> None:
    """Staff take one address back from the VM; it cools down before anyone else gets it."""
    with transaction.atomic():
        allocation.release(Address.objects.filter(pk=address.pk, interface__vm=vm))
    audit.record("address.release", vm, actor=user, outcome="succeeded", detail=address.cidr)


def release_all(vm: VirtualMachine) -> list[Address]:
    """On delete: every address of the VM starts its cool-down."""
    with transaction.atomic():
        released = allocation.release(vm.addresses())
    if released:
        detail = ", ".join(a.cidr for a in released)
        audit.record("address.release", vm, actor=None, outcome="succeeded", detail=detail)
    return released


def audit_allocated(vm: VirtualMachine, addresses: list[Address], user) -> None:
    if addresses:
        detail = ", ".join(a.cidr for a in addresses)
        audit.record("address.allocate", vm, actor=user, outcome="succeeded", detail=detail)


def addresses_by_vm(vms) -> dict[int, list[Address]]:
    """The addresses of many VMs in one query (a list page), each VM's in the order they were given."""
    found: dict[int, list[Address]] = {}
    rows = (
        Address.objects.filter(interface__vm__in=list(vms))
        .annotate(holder_vm=F("interface__vm"))
        .order_by("assigned_at", "pk")
    )
    for address in rows:
        found.setdefault(address.holder_vm, []).append(address)
    return found


def ssh_target(addresses: list[Address]) -> str:
    """The address a customer types after `ssh debian@`: the first IPv4, else the first IPv6."""
    for address in addresses:
        if address.family == 4:
            return address.address
    return addresses[0].host_address if addresses else ""
