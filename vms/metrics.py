"""The Prometheus metrics endpoint: the newest usage reading of every node and VM, from the database."""

import hashlib
import hmac

from django.conf import settings
from django.db.models import F
from django.http import HttpResponse
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from nodes.choices import NodeStatus
from nodes.models import Node

from . import traffic
from .models import TrafficMonth, VirtualMachine
from .usage import latest_samples

# (metric name suffix, help, sample field)
_GAUGES = (
    ("cpu_percent", "CPU use over the last interval, percent of the capacity", "cpu_percent"),
    ("memory_bytes", "Memory in use", "memory_bytes"),
    ("disk_read_bytes_per_second", "Disk reads", "disk_read_bps"),
    ("disk_write_bytes_per_second", "Disk writes", "disk_write_bps"),
    ("network_receive_bytes_per_second", "Network received", "net_rx_bps"),
    ("network_transmit_bytes_per_second", "Network sent", "net_tx_bps"),
)


class UsageCollector:
    """Reads the newest stored samples when scraped (never libvirt)."""

    def collect(self):
        node_samples, vm_samples = latest_samples()
        names = dict(Node.objects.values_list("pk", "name"))
        yield _node_up()
        for suffix, help_text, field in _GAUGES:
            yield _gauge(
                f"kvmpanel_node_{suffix}",
                f"{help_text} (node total)",
                ["node"],
                field,
                [([names[node_id]], sample) for node_id, sample in node_samples.items()],
            )
            yield _gauge(
                f"kvmpanel_vm_{suffix}",
                help_text,
                ["vm", "name", "node", "owner"],
                field,
                [(_vm_labels(sample.vm), sample) for sample in vm_samples],
            )
        yield _gauge(
            "kvmpanel_node_running_vms",
            "Running domains",
            ["node"],
            "running_vms",
            [([names[node_id]], sample) for node_id, sample in node_samples.items()],
        )
        yield from _traffic()


def _traffic():
    """Each VM's traffic: a counter over its whole life, and this month's use against its allowance."""
    totals = traffic.totals_by_vm()
    month = traffic.month_of(timezone.now())
    this_month = dict(
        TrafficMonth.objects.filter(month=month, vm_id__in=totals)
        .annotate(total=F("rx_bytes") + F("tx_bytes"))
        .values_list("vm_id", "total")
    )
    vms = VirtualMachine.objects.filter(pk__in=totals).select_related("node", "owner", "plan")
    counter = CounterMetricFamily(
        "kvmpanel_vm_network_traffic_bytes",
        "Traffic counted for the VM's monthly allowance, over all months",
        labels=["vm", "name", "node", "owner", "direction"],
    )
    month_gauge = GaugeMetricFamily(
        "kvmpanel_vm_traffic_month_bytes",
        "Traffic this calendar month (UTC), in and out together",
        labels=["vm", "name", "node", "owner"],
    )
    allowance = GaugeMetricFamily(
        "kvmpanel_vm_traffic_allowance_bytes",
        "The plan's monthly traffic allowance (0: unlimited)",
        labels=["vm", "name", "node", "owner"],
    )
    for vm in vms:
        labels = _vm_labels(vm)
        received, sent = totals[vm.pk]
        counter.add_metric([*labels, "receive"], float(received))
        counter.add_metric([*labels, "transmit"], float(sent))
        month_gauge.add_metric(labels, float(this_month.get(vm.pk, 0)))
        allowance.add_metric(labels, float(vm.plan.traffic_bytes))
    yield counter
    yield month_gauge
    yield allowance


def _gauge(name: str, help_text: str, labels: list[str], field: str, rows) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, help_text, labels=labels)
    for label_values, sample in rows:
        gauge.add_metric(label_values, _value(sample, field))
    return gauge


def _vm_labels(vm) -> list[str]:
    return [str(vm.uuid), vm.name, vm.node.name, vm.owner.get_username()]


def _node_up() -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(
        "kvmpanel_node_up", "1 when the node answers libvirt", labels=["node", "status"]
    )
    for name, status in Node.objects.values_list("name", "status"):
        gauge.add_metric([name, status], 1.0 if status == NodeStatus.ONLINE else 0.0)
    return gauge


def _value(sample, field: str) -> float:
    value = getattr(sample, field)
    return float("nan") if value is None else float(value)


def authorized(request) -> bool:
    """Staff sessions, or the configured bearer token (compared in constant time)."""
    user = request.user
    if user.is_authenticated and user.is_active and user.is_staff:
        return True
    token = settings.KVMPANEL_METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if not token or not header.startswith("Bearer "):
        return False
    given = hashlib.sha256(header.removeprefix("Bearer ").encode()).digest()
    return hmac.compare_digest(given, hashlib.sha256(token.encode()).digest())


def metrics_view(request):
    if not authorized(request):
        response = HttpResponse("Staff sign-in or a metrics bearer token is required.\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="kvmpanel metrics"'
        return response
    registry = CollectorRegistry(auto_describe=False)
    registry.register(UsageCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
