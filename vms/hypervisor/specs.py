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
