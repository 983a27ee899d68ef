"""The one door to libvirt: only this package imports `libvirt`."""

from .console import ConsoleBusy, SerialConsole
from .errors import Conflict, HypervisorError, NodeUnreachable, NotFound, NotOurs, OperationFailed
from .events import NodeWatcher
from .host import detect_virt_type
from .session import NodeSession, connect
from .specs import DomainCounters, DomainSpec, DomainStatus, NodeInfo, PoolInfo, PowerState

__all__ = [
    "Conflict",
    "ConsoleBusy",
    "DomainCounters",
    "DomainSpec",
    "DomainStatus",
    "HypervisorError",
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
    "connect",
    "detect_virt_type",
]
