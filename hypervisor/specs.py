"""Plain data that goes into and comes out of the hypervisor door."""

from dataclasses import dataclass, field
from enum import StrEnum


class PowerState(StrEnum):
    """A domain's power state, as the panel names it."""

    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    CRASHED = "crashed"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Bandwidth:
    """A NIC's speed limits in libvirt's unit, kilobytes (1000 bytes) per second; 0 is unlimited.

    Inbound is what the guest receives, outbound what it sends (libvirt's <bandwidth>).
    """

    inbound_kbps: int = 0
    outbound_kbps: int = 0


@dataclass(frozen=True)
class NicSpec:
    """One VM NIC and how it reaches the world.

    `mode` is "network" (join the libvirt network `source`), "bridge" (join the host bridge
    `source`) or "routed" (a tap of its own: the host answers on it for `gateway_v4`/`gateway_v6`
    and routes the VM's addresses to it). `ipv4` holds addresses, `ipv6` CIDRs (a /64 or a /128;
    routed taps carry /64 networks only).
    """

    mac: str
    mode: str = "network"
    source: str = ""
    filter_name: str | None = None
    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()
    gateway_v4: str = "169.254.0.1"
    gateway_v6: str = "fe80::1"
    bandwidth: Bandwidth = Bandwidth()


@dataclass(frozen=True)
class FirewallRuleSpec:
    """One inbound allow rule of a VM's firewall.

    `protocol` is tcp, udp, icmp or any; `source` a normalized CIDR of either family, or "" for
    anywhere (both families); ports only for tcp and udp (`port_end` >= `port_start`).
    """

    protocol: str
    source: str = ""
    port_start: int | None = None
    port_end: int | None = None


@dataclass(frozen=True)
class FirewallSpec:
    """A VM's inbound firewall: with `default_deny`, only what a rule allows (and replies to the VM's
    own traffic) reaches it; without, everything does and the rules change nothing."""

    default_deny: bool = False
    rules: tuple[FirewallRuleSpec, ...] = ()


@dataclass(frozen=True)
class FilterSpec:
    """What one VM's traffic filter lets through: each NIC's own MAC, and the VM's addresses; and, when
    the VM has a firewall, the inbound traffic its rules allow."""

    name: str
    ipv4: tuple[str, ...] = ()  # addresses
    ipv6: tuple[str, ...] = ()  # CIDRs (a /64 network, or a /128)
    firewall: FirewallSpec | None = None


@dataclass(frozen=True)
class DomainSpec:
    """Everything needed to define one VM's domain.

    `name` is the panel's UUID (tests prefix it); `title` is the human name. Disks are
    referenced by storage pool and volume name, never by user-given paths.
    """

    name: str
    uuid: str
    title: str
    virt_type: str  # "kvm" or "qemu"
    vcpus: int
    memory_mib: int
    pool: str
    disk_volume: str
    network: str
    vnc_password: str
    hostname: str = ""
    owner_id: int | None = None
    disk_format: str = "qcow2"
    machine: str = "pc"
    vnc_listen: str = "127.0.0.1"
    cdrom_volumes: tuple[str, ...] = field(default_factory=tuple)
    iso_volume: str | None = None  # the customer's ISO in the VM's ISO drive; None: the drive is empty
    boot_from_iso: bool = False
    rescue_volume: str | None = None  # rescue mode: boot this disk; the VM's own disk becomes the second
    nics: tuple[NicSpec, ...] = ()  # none: one NIC on `network` (VMs made before NICs were recorded)
    bandwidth: Bandwidth = Bandwidth()  # for the one NIC of a VM without recorded NICs


@dataclass(frozen=True)
class DomainStatus:
    name: str
    state: PowerState
    vcpus: int
    memory_kib: int
    cpu_time_ns: int


@dataclass(frozen=True)
class NodeInfo:
    hostname: str
    cpus: int
    memory_mib: int
    cpu_model: str
    libvirt_version: str
    hypervisor_version: str
    domain_types: tuple[str, ...]


@dataclass(frozen=True)
class PoolInfo:
    name: str
    path: str
    capacity_bytes: int
    available_bytes: int


@dataclass(frozen=True)
class DomainCounters:
    """One domain's cumulative counters at one moment, from the node's bulk stats call.

    A counter is None when the domain does not report it (stopped, or a driver without it).
    """

    name: str
    state: PowerState
    vcpus: int = 0
    cpu_time_ns: int | None = None
    memory_used_bytes: int | None = None
    disk_read_bytes: int | None = None
    disk_write_bytes: int | None = None
    net_rx_bytes: int | None = None
    net_tx_bytes: int | None = None


@dataclass(frozen=True)
class SnapshotInfo:
    """An internal snapshot as libvirt reports it. `with_memory`: the running machine was saved too."""

    name: str
    created_epoch: int
    domain_state: str  # "running", "shutoff", …
    with_memory: bool


@dataclass(frozen=True)
class DiskExport:
    """A point-in-time copy of a VM's disk as a raw volume on the node, ready to be read.

    `consistency`: "frozen" (file systems frozen by the guest agent at the copy's instant),
    "crash" (the agent did not answer: as after a power cut), "stopped" (the VM was off).
    `checkpoint`: the checkpoint made at the copy's instant ("" when none could be: a stopped VM, or
    one with snapshots). `since`: for an incremental copy, the checkpoint it starts from; the volume
    is then a qcow2 file holding only the blocks written since (its backing file is the VM's disk,
    so what it does not hold is unchanged), not a raw disk.
    """

    pool: str
    volume: str
    capacity_bytes: int
    consistency: str
    checkpoint: str = ""
    since: str = ""
