"""The backoffice's first page: the platform at a glance, from the database only (one query per block).

Nodes and whether they answer, VMs by state, what the VMs on each node are given (vCPUs, memory, disk)
against the node's capacity, each address pool's use, and the operations that failed in the last day.
The page follows VM changes live (static/js/live.js re-fetches the block, swapped only when its
version changed).
"""

import datetime as dt
import hashlib
from dataclasses import dataclass

from django.contrib.admin.views.decorators import staff_member_required
from django.db.models import Count, Q, Sum
from django.shortcuts import render
from django.utils import timezone

from network.models import Pool
from nodes.choices import NodeStatus
from nodes.models import Node

from .choices import OperationStatus, VMState
from .models import GIB, Operation, TrafficMonth, VirtualMachine
from .traffic import month_of


@dataclass
class Allocation:
    """One resource of one node: what its VMs are given against what it has."""

    label: str
    given: float
    capacity: float
    unit: str

    @property
    def percent(self) -> int:
        return round(100 * self.given / self.capacity) if self.capacity else 0


def node_rows() -> list[tuple[Node, list[Allocation]]]:
    live = ~Q(vms__state=VMState.DELETED)
    nodes = Node.objects.order_by("name").annotate(
        vm_count=Count("vms", filter=live),
        vcpus=Sum("vms__plan__vcpus", filter=live),
        memory_mib_given=Sum("vms__plan__memory_mib", filter=live),
        disk_gb=Sum("vms__plan__disk_gb", filter=live),
    )
    return [
        (
            node,
            [
                Allocation("vCPUs", node.vcpus or 0, node.cpus, ""),
                Allocation("Memory", (node.memory_mib_given or 0) / 1024, node.memory_mib / 1024, " GiB"),
                Allocation("Disk", node.disk_gb or 0, node.storage_capacity_bytes / GIB, " GiB"),
            ],
        )
        for node in nodes
    ]


def summary(now: dt.datetime | None = None) -> dict:
    now = now or timezone.now()
    nodes = node_rows()
    by_state = dict(
        VirtualMachine.objects.live().values_list("state").annotate(count=Count("id")).order_by("state")
    )
    failed = Operation.objects.filter(
        status=OperationStatus.FAILED, created_at__gte=now - dt.timedelta(days=1)
    )
    data = {
        "nodes": nodes,
        "node_count": len(nodes),
        "unreachable": [node for node, _ in nodes if node.status != NodeStatus.ONLINE],
        "vms_by_state": [(VMState(state).label, state, count) for state, count in sorted(by_state.items())],
        "vm_count": sum(by_state.values()),
        "failed_last_day": failed.count(),
        "pools": list(Pool.objects.with_usage(now).order_by("family", "name")),
        "throttled": TrafficMonth.objects.filter(
            month=month_of(now), throttled_at__isnull=False, lifted_at__isnull=True
        ).count(),
    }
    data["version"] = _version(data)
    return data


def _version(data: dict) -> str:
    shown = (
        [(node.pk, node.status, node.vm_count, [a.given for a in rows]) for node, rows in data["nodes"]],
        data["vms_by_state"],
        data["failed_last_day"],
        [(pool.pk, pool.used, pool.reserved, pool.cooling, pool.capacity) for pool in data["pools"]],
        data["throttled"],
    )
    return hashlib.sha256(repr(shown).encode()).hexdigest()[:16]


@staff_member_required
def dashboard_block(request):
    """The dashboard's block alone, for the page's live refresh."""
    return render(request, "admin/_dashboard.html", {"dashboard": summary()})
