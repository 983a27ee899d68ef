"""Usage counters for every domain of a node from one bulk call (virConnectGetAllDomainStats)."""

import libvirt

from .power import POWER_STATES
from .specs import DomainCounters, PowerState

_GROUPS = (
    libvirt.VIR_DOMAIN_STATS_STATE
    | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
    | libvirt.VIR_DOMAIN_STATS_BALLOON
    | libvirt.VIR_DOMAIN_STATS_VCPU
    | libvirt.VIR_DOMAIN_STATS_INTERFACE
    | libvirt.VIR_DOMAIN_STATS_BLOCK
)


def read_counters(conn: libvirt.virConnect) -> list[DomainCounters]:
    """Counters of all domains on the node, in one round trip. Raises libvirtError."""
    return [_counters(domain.name(), record) for domain, record in conn.getAllDomainStats(_GROUPS, 0)]


def _counters(name: str, record: dict) -> DomainCounters:
    return DomainCounters(
        name=name,
        state=POWER_STATES.get(record.get("state.state"), PowerState.UNKNOWN),
        vcpus=record.get("vcpu.current", 0),
        cpu_time_ns=record.get("cpu.time"),
        memory_used_bytes=_memory_used_bytes(record),
        disk_read_bytes=_sum_indexed(record, "block", "rd.bytes"),
        disk_write_bytes=_sum_indexed(record, "block", "wr.bytes"),
        net_rx_bytes=_sum_indexed(record, "net", "rx.bytes"),
        net_tx_bytes=_sum_indexed(record, "net", "tx.bytes"),
    )


def _memory_used_bytes(record: dict) -> int | None:
    """What the guest uses, when its balloon driver reports it; else what QEMU holds on the host."""
    available, usable = record.get("balloon.available"), record.get("balloon.usable")
    if available is not None and usable is not None:
        return (available - usable) * 1024
    rss = record.get("balloon.rss")
    return rss * 1024 if rss is not None else None


def _sum_indexed(record: dict, group: str, field: str) -> int | None:
    """Sum `group.<i>.field` over the domain's disks or interfaces; None when it has none reporting."""
    values = [record.get(f"{group}.{i}.{field}") for i in range(record.get(f"{group}.count", 0))]
    values = [value for value in values if value is not None]
    return sum(values) if values else None
