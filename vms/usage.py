"""Recording usage: the node monitor's counter readings become a row per running VM and one of node
totals (the machinery, tiers and graph series are in nodes/usage.py), and the periodic upkeep.

The node monitor reads every domain's cumulative counters in one bulk call per
node and interval; a UsageRecorder turns two consecutive readings into rates
and writes one row per running VM plus one row of node totals. A periodic task
rolls raw rows up into 5-minute and hourly averages and prunes each tier.
"""

import datetime as dt

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

import hypervisor
from nodes.models import Node, NodeUsage, UsageSample
from nodes.usage import MAX_GAP_INTERVALS, Rates, compute_rates, prune, roll_up

from . import live, traffic
from .models import VMUsage


class UsageRecorder:
    """Turns one node's successive counter readings into stored rates (one instance per node)."""

    def __init__(self, node: Node, interval: float | None = None):
        self.node = node
        self.interval = interval or settings.KVMPANEL_STATS_INTERVAL
        self._previous: dict[str, tuple[float, hypervisor.DomainCounters]] = {}

    def rates(self, sampled_at: float, counters: list[hypervisor.DomainCounters]) -> dict[str, Rates]:
        """Rates of each running domain since its previous reading, by domain name."""
        current, rates = {}, {}
        for reading in counters:
            if reading.state != hypervisor.PowerState.RUNNING or reading.cpu_time_ns is None:
                continue
            current[reading.name] = (sampled_at, reading)
            before = self._previous.get(reading.name)
            if before is None:
                continue
            seconds = sampled_at - before[0]
            if 0 < seconds <= MAX_GAP_INTERVALS * self.interval:
                rates[reading.name] = compute_rates(before[1], reading, seconds)
        self._previous = current
        return rates

    def record(self, sampled_at: float, counters: list[hypervisor.DomainCounters]) -> int:
        """Store this interval's rates: a row per panel VM and one of node totals, and add the traffic
        to each VM's month (vms/traffic.py). Returns usage rows written."""
        at = dt.datetime.fromtimestamp(sampled_at, tz=dt.UTC)
        vm_ids = self._vm_ids()
        traffic.record(at, _traffic_readings(counters, vm_ids))
        rates = self.rates(sampled_at, counters)
        if not rates:
            return 0
        rows = [
            VMUsage(vm_id=vm_ids[name], at=at, **_metrics(rate))
            for name, rate in rates.items()
            if name in vm_ids
        ]
        with transaction.atomic():  # one commit per interval
            VMUsage.objects.bulk_create(rows, ignore_conflicts=True)
            NodeUsage.objects.bulk_create([self._node_totals(at, rates.values())], ignore_conflicts=True)
        live.publish_usage_sampled(self.node.pk)
        return len(rows) + 1

    def _vm_ids(self) -> dict[str, int]:
        prefix = settings.KVMPANEL_DOMAIN_PREFIX
        return {f"{prefix}{vm_uuid}": pk for vm_uuid, pk in self.node.vms.live().values_list("uuid", "pk")}

    def _node_totals(self, at: dt.datetime, rates) -> NodeUsage:
        """Totals over every running domain on the node (strays too: they load the host as well)."""
        rates = list(rates)
        cores = sum(rate.cpu_cores for rate in rates)
        return NodeUsage(
            node=self.node,
            at=at,
            running_vms=len(rates),
            cpu_percent=min(100.0, 100.0 * cores / self.node.cpus) if self.node.cpus else 0.0,
            memory_bytes=sum(rate.memory_bytes or 0 for rate in rates),
            disk_read_bps=sum(rate.disk_read_bps for rate in rates),
            disk_write_bps=sum(rate.disk_write_bps for rate in rates),
            net_rx_bps=sum(rate.net_rx_bps for rate in rates),
            net_tx_bps=sum(rate.net_tx_bps for rate in rates),
        )


def _traffic_readings(counters: list[hypervisor.DomainCounters], vm_ids: dict[str, int]) -> dict:
    """The NIC counters of each panel VM that reports them (a running one)."""
    return {
        vm_ids[reading.name]: (reading.net_rx_bytes, reading.net_tx_bytes)
        for reading in counters
        if reading.name in vm_ids
        and reading.state == hypervisor.PowerState.RUNNING
        and (reading.net_rx_bytes is not None or reading.net_tx_bytes is not None)
    }


def _metrics(rate: Rates) -> dict:
    return {field: getattr(rate, field) for field in UsageSample.METRICS}


def maintain(now: dt.datetime | None = None) -> dict[str, int]:
    """Roll completed buckets up and prune every tier; run periodically (Celery beat)."""
    now = now or timezone.now()
    rolled = sum(roll_up(model, now) for model in (VMUsage, NodeUsage))
    pruned = sum(prune(model, now) for model in (VMUsage, NodeUsage))
    return {"rolled_up": rolled, "pruned": pruned}


def latest_samples() -> tuple[dict[int, NodeUsage], list[VMUsage]]:
    """The newest raw reading of each node and of the VMs read with it (for the metrics endpoint)."""
    newest = NodeUsage.objects.filter(bucket_seconds=UsageSample.RAW).values("node").annotate(at=Max("at"))
    nodes, vms = {}, []
    for row in newest:
        nodes[row["node"]] = NodeUsage.objects.get(node_id=row["node"], bucket_seconds=0, at=row["at"])
        vms.extend(
            VMUsage.objects.filter(vm__node_id=row["node"], bucket_seconds=0, at=row["at"]).select_related(
                "vm__node", "vm__owner"
            )
        )
    return nodes, vms
