"""Usage statistics: rates from counters, storage, roll-ups, pruning, graph data and metrics."""

import datetime as dt

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from hypervisor import DomainCounters, PowerState
from nodes import usage as graphs
from nodes.models import NodeUsage
from vms import usage
from vms.models import VMUsage

from .factories import make_node, make_vm

pytestmark = pytest.mark.django_db

GIB = 1024**3
T0 = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def ten_second_readings(settings):
    settings.KVMPANEL_STATS_INTERVAL = 10  # the production default; the test settings use 2


def reading(
    name="vm", cpu_s=0.0, read=0, written=0, rx=0, tx=0, memory=GIB, vcpus=2, state=PowerState.RUNNING
):
    return DomainCounters(
        name=name,
        state=state,
        vcpus=2,
        cpu_time_ns=int(cpu_s * 1e9),
        memory_used_bytes=memory,
        disk_read_bytes=read,
        disk_write_bytes=written,
        net_rx_bytes=rx,
        net_tx_bytes=tx,
    )


# --- rates ------------------------------------------------------------------------


def test_rates_are_counter_growth_per_second():
    rates = graphs.compute_rates(
        reading(cpu_s=100, read=1000, written=0, rx=50, tx=10),
        reading(cpu_s=105, read=11000, written=4096, rx=1050, tx=10),
        seconds=10,
    )
    assert rates.cpu_cores == pytest.approx(0.5)
    assert rates.cpu_percent == pytest.approx(25.0)  # half a core of two vCPUs
    assert (rates.disk_read_bps, rates.disk_write_bps) == (1000.0, 409.6)
    assert (rates.net_rx_bps, rates.net_tx_bps) == (100.0, 0.0)
    assert rates.memory_bytes == GIB


def test_a_counter_that_went_down_restarted_from_zero():
    # The VM was restarted between readings: its counters began again at 0.
    rates = graphs.compute_rates(reading(cpu_s=500, read=10**9), reading(cpu_s=2, read=3000), seconds=10)
    assert rates.cpu_cores == pytest.approx(0.2)
    assert rates.disk_read_bps == 300.0


def test_cpu_never_reads_above_one_hundred_percent():
    assert graphs.compute_rates(reading(cpu_s=0), reading(cpu_s=25), seconds=10).cpu_percent == 100.0


def test_missing_counters_count_as_no_activity():
    bare = DomainCounters(name="vm", state=PowerState.RUNNING, vcpus=1, cpu_time_ns=0)
    rates = graphs.compute_rates(bare, bare, seconds=10)
    assert (rates.disk_read_bps, rates.net_tx_bps, rates.memory_bytes) == (0.0, 0.0, None)


def test_the_first_reading_and_readings_after_a_gap_give_no_rate():
    recorder = usage.UsageRecorder(make_node(), interval=10)
    assert recorder.rates(1000.0, [reading(cpu_s=1)]) == {}
    assert set(recorder.rates(1010.0, [reading(cpu_s=2)])) == {"vm"}
    assert recorder.rates(1100.0, [reading(cpu_s=3)]) == {}  # the monitor was away for 90 s
    assert recorder.rates(1110.0, [reading(cpu_s=3, state=PowerState.STOPPED)]) == {}


# --- recording --------------------------------------------------------------------


def test_one_interval_writes_a_row_per_running_vm_and_one_of_node_totals(alice):
    node = make_node(cpus=4)
    vm_a, vm_b = make_vm(alice, node=node), make_vm(alice, node=node)
    recorder = usage.UsageRecorder(node, interval=10)
    names = [vm_a.domain_name, vm_b.domain_name, "someone-elses"]
    recorder.record(T0.timestamp(), [reading(name, cpu_s=0) for name in names])
    with CaptureQueriesContext(connection) as queries:
        written = recorder.record(T0.timestamp() + 10, [reading(name, cpu_s=10) for name in names])
    statements = [q["sql"].split()[0] for q in queries if "SAVEPOINT" not in q["sql"]]
    # The VM ids; the month's traffic rows (which exist, then locked) and their one update (vms/traffic.py);
    # the VMs' usage rows; the node's row. As many for two VMs as for two thousand.
    assert statements == ["SELECT", "SELECT", "SELECT", "UPDATE", "INSERT", "INSERT"]
    assert written == 3
    assert VMUsage.objects.filter(vm=vm_a).get().cpu_percent == pytest.approx(50.0)
    totals = NodeUsage.objects.get(node=node)
    # Three domains each kept one core busy: 3 of the node's 4 CPUs (strays load the host too).
    assert (totals.running_vms, totals.cpu_percent, totals.memory_bytes) == (3, pytest.approx(75.0), 3 * GIB)


# --- roll-ups and pruning -----------------------------------------------------------


def raw_samples(vm, start, seconds, step=10, **values):
    VMUsage.objects.bulk_create(
        VMUsage(vm=vm, at=start + dt.timedelta(seconds=s), **values) for s in range(0, seconds, step)
    )


def test_finished_buckets_roll_up_into_averages_once(alice):
    vm = make_vm(alice)
    raw_samples(vm, T0, 300, cpu_percent=10, memory_bytes=GIB)  # 12:00-12:05
    raw_samples(vm, T0 + dt.timedelta(minutes=5), 300, cpu_percent=30, memory_bytes=3 * GIB)
    now = T0 + dt.timedelta(minutes=7)  # the second bucket is still filling
    assert graphs.roll_up(VMUsage, now) == 1
    bucket = VMUsage.objects.get(bucket_seconds=300)
    assert (bucket.at, bucket.cpu_percent, bucket.memory_bytes) == (T0, 10.0, GIB)
    assert graphs.roll_up(VMUsage, now) == 0  # nothing new: never rolled twice
    later = T0 + dt.timedelta(minutes=11)
    assert graphs.roll_up(VMUsage, later) == 1
    assert list(VMUsage.objects.filter(bucket_seconds=300).values_list("cpu_percent", flat=True)) == [10, 30]


def test_five_minute_buckets_roll_up_into_hours(alice):
    vm = make_vm(alice)
    VMUsage.objects.bulk_create(
        VMUsage(vm=vm, bucket_seconds=300, at=T0 + dt.timedelta(minutes=5 * i), cpu_percent=i)
        for i in range(12)
    )
    graphs.roll_up(VMUsage, T0 + dt.timedelta(hours=1, minutes=1))
    hour = VMUsage.objects.get(bucket_seconds=3600)
    assert (hour.at, hour.cpu_percent) == (T0, pytest.approx(5.5))


def test_each_tier_is_pruned_to_its_retention(alice):
    vm = make_vm(alice)
    now = T0 + dt.timedelta(days=40)
    for bucket_seconds, age in [
        (0, dt.timedelta(hours=2)),
        (300, dt.timedelta(days=2)),
        (3600, dt.timedelta(days=32)),
    ]:
        VMUsage.objects.create(vm=vm, bucket_seconds=bucket_seconds, at=now - age)  # too old
        VMUsage.objects.create(vm=vm, bucket_seconds=bucket_seconds, at=now - age / 4)  # still kept
    assert graphs.prune(VMUsage, now) == 3
    assert VMUsage.objects.count() == 3


def test_maintain_rolls_up_and_prunes_nodes_and_vms(alice):
    vm = make_vm(alice)
    raw_samples(vm, T0, 300, cpu_percent=20)
    NodeUsage.objects.create(node=vm.node, at=T0, running_vms=1)
    result = usage.maintain(T0 + dt.timedelta(hours=2))
    # A 5-minute and an hourly row each; the 30 + 1 raw rows are past their hour.
    assert result == {"rolled_up": 4, "pruned": 31}
    assert sorted(NodeUsage.objects.values_list("bucket_seconds", flat=True)) == [300, 3600]


# --- graph series and their access ------------------------------------------------


def test_series_are_columns_with_a_gap_where_readings_are_missing(alice):
    vm = make_vm(alice)
    raw_samples(vm, T0, 30, cpu_percent=5)  # 12:00:00, :10, :20
    raw_samples(vm, T0 + dt.timedelta(minutes=5), 20, cpu_percent=7)  # the monitor was away
    data = graphs.series(VMUsage.objects.filter(vm=vm), "hour", now=T0 + dt.timedelta(minutes=10))
    assert data["series"]["cpu_percent"] == [5, 5, 5, None, 7, 7]
    assert data["series"]["t"][3] == (T0 + dt.timedelta(seconds=30)).timestamp()
    assert data["step"] == 10


def test_an_empty_day_or_month_says_when_its_first_point_comes(alice):
    vm = make_vm(alice)
    raw_samples(vm, T0 + dt.timedelta(minutes=1), 30)  # the VM has run since 12:01
    now = T0 + dt.timedelta(minutes=2)
    samples = VMUsage.objects.filter(vm=vm)
    wait = dt.timedelta(seconds=10 + 5) + graphs.ROLL_UP_EVERY  # the bucket, waited out, rolled up
    day, month = graphs.series(samples, "day", now=now), graphs.series(samples, "month", now=now)
    assert day["first_point_at"] == (T0 + dt.timedelta(minutes=5) + wait).timestamp()
    assert month["first_point_at"] == (T0 + dt.timedelta(hours=1) + wait).timestamp()
    assert graphs.series(samples, "hour", now=now)["first_point_at"] is None  # it has points
    assert graphs.series(VMUsage.objects.none(), "day", now=now)["first_point_at"] is None  # nothing runs


def test_a_stopped_vms_graph_data_says_it_is_not_running(client, alice, alice_vm):
    client.force_login(alice)
    assert client.get(reverse("vms:usage", args=[alice_vm.uuid])).json()["running"] is True
    alice_vm.set_state("stopped")
    assert client.get(reverse("vms:usage", args=[alice_vm.uuid])).json()["running"] is False


@pytest.mark.parametrize(("who", "status"), [("alice", 200), ("bob", 404), ("staff", 200)])
def test_only_the_owner_and_staff_get_a_vms_usage(client, alice, bob, staff, alice_vm, who, status):
    raw_samples(alice_vm, dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1), 20, cpu_percent=42)
    client.force_login({"alice": alice, "bob": bob, "staff": staff}[who])
    response = client.get(reverse("vms:usage", args=[alice_vm.uuid]), {"range": "hour"})
    assert response.status_code == status
    if status == 200:
        assert response.json()["series"]["cpu_percent"] == [42, 42]
        assert response.json()["memory_total"] == alice_vm.plan.memory_mib * 1024 * 1024


def test_an_unknown_range_is_refused_clearly(client, alice, alice_vm):
    client.force_login(alice)
    response = client.get(reverse("vms:usage", args=[alice_vm.uuid]), {"range": "year"})
    assert response.status_code == 400 and "hour, day, month" in response.json()["error"]


def test_node_totals_are_for_staff_only(client, alice, staff, alice_vm):
    url = reverse("nodes:usage", args=[alice_vm.node.pk])
    client.force_login(alice)
    assert client.get(url).status_code == 302  # to the backoffice sign-in
    client.force_login(staff)
    assert client.get(url).status_code == 200


# --- the metrics endpoint -----------------------------------------------------------


@pytest.fixture
def scraped(alice_vm):
    at = dt.datetime.now(dt.UTC)
    VMUsage.objects.create(vm=alice_vm, at=at, cpu_percent=12.5, memory_bytes=GIB, net_rx_bps=2048)
    NodeUsage.objects.create(node=alice_vm.node, at=at, cpu_percent=3.0, running_vms=1)
    return alice_vm


def test_metrics_show_each_vm_and_node_to_staff(client, staff, scraped):
    client.force_login(staff)
    response = client.get("/metrics")
    text = response.content.decode()
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    labels = f'name="{scraped.name}",node="{scraped.node.name}",owner="alice",vm="{scraped.uuid}"'
    assert f"kvmpanel_vm_cpu_percent{{{labels}}} 12.5" in text
    assert f'kvmpanel_node_running_vms{{node="{scraped.node.name}"}} 1.0' in text
    assert f'kvmpanel_node_up{{node="{scraped.node.name}",status="online"}} 1.0' in text


@override_settings(KVMPANEL_METRICS_TOKEN="s3cret-token-for-prometheus")
@pytest.mark.parametrize(
    ("header", "status"),
    [("Bearer s3cret-token-for-prometheus", 200), ("Bearer wrong", 401), ("", 401)],
)
def test_metrics_accept_the_configured_token(client, scraped, header, status):
    response = client.get("/metrics", HTTP_AUTHORIZATION=header)
    assert response.status_code == status


def test_metrics_are_closed_to_customers_and_without_a_token(client, alice, scraped):
    assert client.get("/metrics").status_code == 401
    client.force_login(alice)
    assert client.get("/metrics").status_code == 401


# --- the bulk stats call --------------------------------------------------------------


def test_a_qemu_stats_record_becomes_counters():
    from hypervisor.stats import _counters

    record = {
        "state.state": 1,
        "vcpu.current": 2,
        "cpu.time": 123,
        "balloon.available": 1000,
        "balloon.usable": 400,
        "balloon.rss": 5000,
        "block.count": 2,
        "block.0.rd.bytes": 10,
        "block.1.rd.bytes": 5,
        "block.0.wr.bytes": 1,
        "net.count": 1,
        "net.0.rx.bytes": 7,
        "net.0.tx.bytes": 8,
    }
    counters = _counters("vm", record)
    assert counters == DomainCounters("vm", PowerState.RUNNING, 2, 123, 600 * 1024, 15, 1, 7, 8)
    # Without the guest's balloon report, what QEMU holds on the host.
    del record["balloon.usable"]
    assert _counters("vm", record).memory_used_bytes == 5000 * 1024


def test_the_test_driver_answers_the_bulk_call(alice, test_node, test_session):
    from vms.tasks import domain_spec

    vm = make_vm(alice, node=test_node)
    test_session.define_domain(domain_spec(vm))
    test_session.start(vm.domain_name)
    [counters] = test_session.domain_counters()
    assert (counters.name, counters.state) == (vm.domain_name, PowerState.RUNNING)
