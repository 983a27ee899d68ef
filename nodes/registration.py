"""Registering nodes and keeping their facts (capacity, reachability) current."""

import hashlib

from django.conf import settings
from django.utils import timezone

import hypervisor

from . import remote
from .choices import NetworkMode, NodeStatus
from .models import Node
from .signals import node_answered


def bridge_name(network: str) -> str:
    """A Linux bridge name (15 characters at most) that is stable for a network name."""
    return "kvp-" + hashlib.sha256(network.encode()).hexdigest()[:10]


# Routed taps need libvirt to set up the host's side (addresses and routes on the tap): verified with
# libvirt 9.0 (Debian 12), so older versions are not offered routed mode.
ROUTED_MIN_LIBVIRT = (9, 0, 0)


class NetworkCheckFailed(Exception):
    """The node cannot carry its network mode as the host is now; the message says what to change."""


def register_node(
    name: str,
    uri: str,
    *,
    pool_name: str | None = None,
    pool_path: str | None = None,
    network_name: str | None = None,
    virt_type: str | None = None,
    network_mode: str | None = None,
    bridge: str | None = None,
    host_key: str | None = None,
) -> Node:
    """Create (or update) the node row and prepare the node: storage pool and isolated network, and a
    check of its network mode (the host's bridge, or what routing needs). Nothing on the host's uplink
    is ever changed.

    A qemu+ssh:// node is reached only with the host key staff confirmed (`host_key`, "ssh-ed25519
    AAAA…", or the one pinned on its row before); nodes/remote.py pins it.

    Raises hypervisor.NodeUnreachable when the node does not answer (HostKeyRefused when it presents
    another key), NetworkCheckFailed when the host cannot carry the network mode or lacks what VMs
    need (the row is kept, with the problems on it).
    """
    pool_name = pool_name or settings.KVMPANEL_POOL_NAME
    pool_path = pool_path or settings.KVMPANEL_POOL_PATH
    network_name = network_name or settings.KVMPANEL_NETWORK_NAME
    existing = Node.objects.filter(uri=uri).first()
    network_mode = network_mode or (existing.network_mode if existing else NetworkMode.ISOLATED)
    bridge = bridge if bridge is not None else (existing.bridge if existing else "")
    host_key = host_key or (existing.ssh_host_key if existing else "")
    if remote.is_ssh(uri):
        if not host_key:
            raise remote.HostKeyProblem("an SSH node's host key must be confirmed before the panel connects")
        pinned = Node(uri=uri, ssh_host_key=host_key)
        remote.write_known_hosts(pinned)  # before the first connection: only this key is accepted
    with hypervisor.connect(uri) as session:
        info = session.node_info()
        pool = session.ensure_pool(pool_name, pool_path)
        session.ensure_network(network_name, bridge_name(network_name))
        problem = "\n".join(
            p for p in (host_problem(info), network_problem(session, info, network_mode, bridge)) if p
        )
    node, _ = Node.objects.update_or_create(
        uri=uri,
        defaults={
            "name": name,
            "pool_name": pool_name,
            "network_name": network_name,
            "network_mode": network_mode,
            "bridge": bridge,
            "network_problem": problem,
            "ssh_host_key": host_key or "",
            "ssh_host_key_fingerprint": remote.fingerprint(host_key) if host_key else "",
            "virt_type": hypervisor.detect_virt_type(
                info, virt_type or settings.KVMPANEL_VIRT_TYPE, local=_is_local(uri)
            ),
        },
    )
    _record_facts(node, info, pool)
    if problem:
        raise NetworkCheckFailed(problem)
    # A new node gets the library's images before VMs are placed on it.
    node_answered.send(sender=Node, node=node, registered=True)
    return node


def refresh_node(node: Node) -> Node:
    """Read the node's capacity; mark it unreachable (with the reason) when it does not answer."""
    try:
        with hypervisor.connect(node.uri) as session:
            info = session.node_info()
            pool = session.pool_info(node.pool_name)
            node.network_problem = network_problem(session, info, node.network_mode, node.bridge)
    except hypervisor.HypervisorError as error:
        node.status = NodeStatus.UNREACHABLE
        node.last_error = str(error)
        node.save(update_fields=["status", "last_error"])
        return node
    _record_facts(node, info, pool)
    node_answered.send(sender=Node, node=node, registered=False)
    return node


# Live migration with local disks over separate sockets (VIR_MIGRATE_PARAM_DISKS_URI): libvirt 6.8.
MIN_LIBVIRT = (6, 8, 0)


def host_problem(info: hypervisor.NodeInfo) -> str:
    """What the host lacks for the panel's VMs, whatever its network mode ("" when nothing)."""
    problems = []
    version = tuple(int(part) for part in info.libvirt_version.split("."))
    if version < MIN_LIBVIRT:
        wanted = ".".join(map(str, MIN_LIBVIRT))
        problems.append(f"The node runs libvirt {info.libvirt_version}; the panel needs {wanted} or newer.")
    if not {"kvm", "qemu", "test"} & set(info.domain_types):  # "test": libvirt's test driver
        problems.append("The node's libvirt offers neither KVM nor QEMU emulation: install qemu-system-x86.")
    return "\n".join(problems)


def network_problem(
    session: hypervisor.NodeSession, info: hypervisor.NodeInfo, mode: str, bridge: str
) -> str:
    """What stops the node from carrying `mode` now ("" when nothing does). Read only."""
    if mode == NetworkMode.BRIDGED:
        return _bridge_problem(session, bridge)
    if mode == NetworkMode.ROUTED:
        return _routing_problem(session, info)
    return ""


def _bridge_problem(session: hypervisor.NodeSession, bridge: str) -> str:
    if not bridge:
        return "Bridged mode needs the name of an existing bridge on the host (e.g. br0)."
    kind = session.host_interface_type(bridge)
    if kind is None:
        return (
            f"The host has no interface named {bridge}. Create the bridge on the host (with the "
            "uplink in it) and refresh the node: the panel never changes the host's network."
        )
    if kind != "bridge":
        return f"{bridge} on the host is an interface of type {kind}, not a bridge: name the bridge VMs join."
    return ""


def _routing_problem(session: hypervisor.NodeSession, info: hypervisor.NodeInfo) -> str:
    version = tuple(int(part) for part in info.libvirt_version.split("."))
    if version < ROUTED_MIN_LIBVIRT:
        wanted = ".".join(map(str, ROUTED_MIN_LIBVIRT))
        return f"Routed mode needs libvirt {wanted} or newer on the node (it has {info.libvirt_version})."
    try:
        session.filter_names()
    except hypervisor.HypervisorError as error:
        return (
            f"The node's libvirt has no traffic filter (nwfilter) driver, which every VM NIC needs: {error}"
        )
    return ""


def _record_facts(node: Node, info: hypervisor.NodeInfo, pool: hypervisor.PoolInfo) -> None:
    node.hostname = info.hostname
    node.cpus = info.cpus
    node.memory_mib = info.memory_mib
    node.libvirt_version = info.libvirt_version
    node.storage_capacity_bytes = pool.capacity_bytes
    node.storage_available_bytes = pool.available_bytes
    node.last_seen_at = timezone.now()
    node.last_error = ""
    if node.status == NodeStatus.UNREACHABLE:
        node.status = NodeStatus.ONLINE
    node.save()


def _is_local(uri: str) -> bool:
    """A URI without a host part talks to this machine's libvirtd."""
    return "://" in uri and uri.split("://", 1)[1].startswith("/")
