"""The one door to libvirt: only this package imports `libvirt`."""

from .console import ConsoleBusy, SerialConsole
from .errors import Busy, Conflict, HypervisorError, NodeUnreachable, NotFound, NotOurs, OperationFailed
from .events import NodeWatcher
from .host import detect_virt_type
from .migration import MigrationResult
from .session import NodeSession, connect
from .specs import (
    Bandwidth,
    DiskExport,
    DomainCounters,
    DomainSpec,
    DomainStatus,
    FilterSpec,
    FirewallRuleSpec,
    FirewallSpec,
    NicSpec,
    NodeInfo,
    PoolInfo,
    PowerState,
    SnapshotInfo,
)
from .xml import domain_xml

__all__ = [
    "Bandwidth",
    "Busy",
    "Conflict",
    "ConsoleBusy",
    "DiskExport",
    "DomainCounters",
    "DomainSpec",
    "DomainStatus",
    "FilterSpec",
    "FirewallRuleSpec",
    "FirewallSpec",
    "HypervisorError",
    "MigrationResult",
    "NicSpec",
    "NodeInfo",
    "NodeSession",
    "NodeUnreachable",
    "NodeWatcher",
    "NotFound",
    "NotOurs",
    "OperationFailed",
    "PoolInfo",
    "PowerState",
    "SerialConsole",
    "SnapshotInfo",
    "connect",
    "detect_virt_type",
    "domain_xml",
]
