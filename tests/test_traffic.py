"""Port speed and monthly traffic: counting from the NIC counters, the throttle at 100 %, the month's
turn, staff's reset and lift, and where people see it (the VM page, the API, /metrics, the backoffice)."""

import datetime as dt

import pytest
from django.core import mail
from django.urls import reverse

import hypervisor
from accounts.models import AuditEntry
from hypervisor import DomainCounters, PowerState, xml
from network import allocation
from network.models import Pool
from vms import tasks, traffic, usage
from vms.models import NetworkInterface, TrafficMonth
from vms.provisioning import domain_spec

from .factories import make_node, make_plan, make_user, make_vm

pytestmark = pytest.mark.django_db

GIB = 1024**3
NOV = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
DEC = dt.datetime(2026, 12, 1, 0, 5, tzinfo=dt.UTC)


@pytest.fixture
def staff(db):
    return make_user("operator", is_staff=True, is_superuser=True)


@pytest.fixture
def sent(monkeypatch):
    """The apply_bandwidth tasks asked for (VM ids), instead of a broker."""
    asked = []

    class App:
        @staticmethod
        def send_task(name, args, queue):
            assert name == traffic.APPLY_TASK
            asked.append(args[0])

    monkeypatch.setattr(traffic, "current_app", App)
    return asked


@pytest.fixture
def now(monkeypatch):
    """A clock the test moves."""
    clock = {"now": NOV}
    monkeypatch.setattr(traffic.timezone, "now", lambda: clock["now"])
    return clock


def counters(vm, rx, tx, state=PowerState.RUNNING):
    return DomainCounters(name=vm.domain_name, state=state, cpu_time_ns=1, net_rx_bytes=rx, net_tx_bytes=tx)


def month_row(vm, month=NOV) -> TrafficMonth:
    return TrafficMonth.objects.get(vm=vm, month=traffic.month_of(month))


# --- counting ------------------------------------------------------------------------------


def test_a_counter_delta_is_the_growth_or_all_of_a_reset_counter():
    assert traffic.counter_delta(100, 250) == 150
    assert traffic.counter_delta(5000, 300) == 300  # the VM restarted: its counters began again at 0
    assert traffic.counter_delta(None, 300) == 0  # the first reading is only the starting point
    assert traffic.counter_delta(100, None) == 0


def test_the_billing_month_is_the_calendar_month_in_utc():
    late = dt.datetime(2026, 11, 30, 23, 59, tzinfo=dt.timezone(dt.timedelta(hours=-5)))  # Dec 1st UTC
    assert traffic.month_of(late) == dt.date(2026, 12, 1)
    assert traffic.month_of(NOV) == dt.date(2026, 11, 1)


def test_the_monitor_adds_each_intervals_growth_to_the_month(alice, sent):
    vm = make_vm(alice)
    recorder = usage.UsageRecorder(vm.node)
    recorder.record(NOV.timestamp(), [counters(vm, 1000, 500)])
    recorder.record(NOV.timestamp() + 10, [counters(vm, 4000, 1500)])
    row = month_row(vm)
    assert (row.rx_bytes, row.tx_bytes, row.last_rx, row.last_tx) == (3000, 1000, 4000, 1500)


def test_traffic_survives_a_restarted_monitor_and_a_restarted_vm(alice, sent):
    vm = make_vm(alice)
    usage.UsageRecorder(vm.node).record(NOV.timestamp(), [counters(vm, 1000, 1000)])
    usage.UsageRecorder(vm.node).record(NOV.timestamp() + 10, [counters(vm, 3000, 2000)])  # a new monitor
    usage.UsageRecorder(vm.node).record(NOV.timestamp() + 20, [counters(vm, 700, 100)])  # the VM restarted
    row = month_row(vm)
    assert (row.rx_bytes, row.tx_bytes) == (2000 + 700, 1000 + 100)


def test_a_stopped_vm_and_a_foreign_domain_count_nothing(alice, sent):
    vm = make_vm(alice)
    stranger = DomainCounters(name="someone-else", state=PowerState.RUNNING, net_rx_bytes=5, net_tx_bytes=5)
    usage.UsageRecorder(vm.node).record(NOV.timestamp(), [counters(vm, 10, 10, PowerState.STOPPED), stranger])
    assert not TrafficMonth.objects.exists()


def test_a_new_months_row_goes_on_from_the_last_counters(alice, sent):
    vm = make_vm(alice)
    traffic.record(NOV, {vm.pk: (1000, 1000)})
    traffic.record(DEC, {vm.pk: (1600, 1100)})
    assert (month_row(vm, DEC).rx_bytes, month_row(vm, DEC).tx_bytes) == (600, 100)
    assert month_row(vm).rx_bytes == 0  # November's first reading was only the starting point


# --- the throttle --------------------------------------------------------------------------


@pytest.fixture
def capped_vm(alice):
    alice.email = "alice@example.net"
    alice.save()
    plan = make_plan(traffic_gib=1, inbound_mbps=100, outbound_mbps=50)
    return make_vm(alice, plan=plan)


def test_a_vm_is_throttled_once_at_its_allowance_told_and_audited(
    capped_vm, sent, now, django_capture_on_commit_callbacks
):
    vm = capped_vm
    traffic.record(NOV, {vm.pk: (0, 0)})
    with django_capture_on_commit_callbacks(execute=True):
        assert traffic.record(NOV, {vm.pk: (GIB // 2, GIB // 2 - 1)}) == []  # one byte short
    assert not sent and not mail.outbox
    with django_capture_on_commit_callbacks(execute=True):
        crossed = traffic.record(NOV, {vm.pk: (GIB // 2, GIB // 2)})
    assert [row.vm_id for row in crossed] == [vm.pk]
    assert month_row(vm).throttled_at == NOV
    assert sent == [vm.pk]
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["alice@example.net"]
    assert "1 December 2026" in mail.outbox[0].body and "1 Mbit/s" in mail.outbox[0].body
    entry = AuditEntry.objects.get(action="vm.traffic_throttle")
    assert entry.owner == vm.owner and "1.00 GiB of 1 GiB" in entry.detail
    with django_capture_on_commit_callbacks(execute=True):
        traffic.record(NOV, {vm.pk: (GIB, GIB)})  # more traffic: no second throttle, mail or entry
    assert sent == [vm.pk] and len(mail.outbox) == 1
    assert AuditEntry.objects.filter(action="vm.traffic_throttle").count() == 1


def test_an_unlimited_plan_is_never_throttled(alice, sent, now):
    vm = make_vm(alice, plan=make_plan(traffic_gib=0))
    traffic.record(NOV, {vm.pk: (0, 0)})
    assert traffic.record(NOV, {vm.pk: (50 * GIB, 50 * GIB)}) == []
    assert month_row(vm).throttled_at is None


def test_the_speeds_are_the_plans_or_the_throttles(capped_vm, settings, now, sent):
    settings.KVMPANEL_THROTTLE_KBPS = 125
    assert traffic.bandwidth_of(capped_vm) == hypervisor.Bandwidth(100 * 125, 50 * 125)
    traffic.record(NOV, {capped_vm.pk: (0, 0)})
    traffic.record(NOV, {capped_vm.pk: (GIB, 0)})
    assert traffic.bandwidth_of(capped_vm) == hypervisor.Bandwidth(125, 125)
    unlimited = make_vm(capped_vm.owner, plan=make_plan())
    assert traffic.bandwidth_of(unlimited) == hypervisor.Bandwidth(0, 0)
    assert traffic.bandwidth_of(unlimited, throttled=True) == hypervisor.Bandwidth(125, 125)


def test_the_domain_definition_carries_each_nics_speeds(capped_vm):
    NetworkInterface.objects.create(vm=capped_vm)
    spec = domain_spec(capped_vm)
    found = xml.interface_bandwidth(xml.domain_xml(spec))
    assert list(found.values()) == [hypervisor.Bandwidth(12500, 6250)]
    assert '<inbound average="12500"/>' in xml.domain_xml(spec)


def test_an_unlimited_plan_adds_no_bandwidth_element(alice):
    vm = make_vm(alice)
    NetworkInterface.objects.create(vm=vm)
    assert "<bandwidth" not in xml.domain_xml(domain_spec(vm))


@pytest.fixture
def defined_vm(capped_vm, test_node, test_session):
    """The capped VM on the test driver's node, defined and running, with one NIC."""
    capped_vm.node = test_node
    capped_vm.save()
    NetworkInterface.objects.create(vm=capped_vm)
    test_session.define_domain(domain_spec(capped_vm))
    test_session.start(capped_vm.domain_name)
    return capped_vm


def test_the_throttle_is_applied_live_and_to_the_definition(defined_vm, test_session, sent, now, settings):
    settings.KVMPANEL_THROTTLE_KBPS = 64
    traffic.record(NOV, {defined_vm.pk: (0, 0)})
    traffic.record(NOV, {defined_vm.pk: (GIB, GIB)})
    assert tasks.apply_bandwidth.run(defined_vm.pk) == 1
    low = hypervisor.Bandwidth(64, 64)
    assert list(test_session.interface_bandwidth(defined_vm.domain_name).values()) == [low]
    assert list(test_session.interface_bandwidth(defined_vm.domain_name, live=False).values()) == [low]
    assert test_session.power_state(defined_vm.domain_name) == PowerState.RUNNING  # no restart


def test_a_new_month_lifts_the_throttle(
    defined_vm, test_session, sent, now, django_capture_on_commit_callbacks
):
    traffic.record(NOV, {defined_vm.pk: (0, 0)})
    traffic.record(NOV, {defined_vm.pk: (GIB, GIB)})
    tasks.apply_bandwidth.run(defined_vm.pk)
    sent.clear()
    assert traffic.turn_month(NOV + dt.timedelta(days=5)) == []  # the same month: nothing to lift
    now["now"] = DEC  # the clock moves into December
    with django_capture_on_commit_callbacks(execute=True):
        assert traffic.turn_month() == [defined_vm.pk]
    assert sent == [defined_vm.pk]
    tasks.apply_bandwidth.run(defined_vm.pk)
    plan_speeds = hypervisor.Bandwidth(12500, 6250)
    assert list(test_session.interface_bandwidth(defined_vm.domain_name).values()) == [plan_speeds]
    assert AuditEntry.objects.filter(action="vm.traffic_unthrottle").count() == 1
    assert traffic.turn_month() == []  # idempotent
    assert traffic.summary(defined_vm).used_bytes == 0


def test_a_resize_applies_the_new_plans_speeds(defined_vm, test_session, monkeypatch):
    test_session.destroy(defined_vm.domain_name)
    defined_vm.plan = make_plan(inbound_mbps=10, outbound_mbps=20, disk_gb=8)
    defined_vm.save()
    monkeypatch.setattr(test_session, "grow_volume", lambda *args: None)  # the test driver cannot
    tasks._resize(test_session, defined_vm, None)
    configured = test_session.interface_bandwidth(defined_vm.domain_name, live=False)
    assert list(configured.values()) == [hypervisor.Bandwidth(1250, 2500)]


# --- staff ---------------------------------------------------------------------------------


def test_staff_lift_a_throttle_for_the_rest_of_the_month(client, staff, capped_vm, sent, now):
    traffic.record(NOV, {capped_vm.pk: (0, 0)})
    traffic.record(NOV, {capped_vm.pk: (GIB, GIB)})
    client.force_login(staff)
    changelist = reverse("admin:vms_virtualmachine_changelist")
    response = client.post(changelist, {"action": "lift_throttle", "_selected_action": [capped_vm.pk]})
    assert response.status_code == 302, response.content.decode()[-3000:]
    row = month_row(capped_vm)
    assert row.lifted_at is not None and not traffic.is_throttled(capped_vm)
    assert traffic.record(NOV, {capped_vm.pk: (2 * GIB, 2 * GIB)}) == []  # not throttled again
    entry = AuditEntry.objects.get(action="vm.traffic_lift")
    assert entry.actor == staff


def test_staff_reset_the_counter(client, staff, capped_vm, sent, now):
    traffic.record(NOV, {capped_vm.pk: (0, 0)})
    traffic.record(NOV, {capped_vm.pk: (GIB, GIB)})
    client.force_login(staff)
    changelist = reverse("admin:vms_virtualmachine_changelist")
    client.post(changelist, {"action": "reset_counter", "_selected_action": [capped_vm.pk]})
    row = month_row(capped_vm)
    assert (row.rx_bytes, row.tx_bytes, row.throttled_at) == (0, 0, None)
    assert AuditEntry.objects.get(action="vm.traffic_reset").actor == staff
    assert traffic.record(NOV, {capped_vm.pk: (2 * GIB, 2 * GIB)})  # the allowance counts again


def test_customers_cannot_reach_the_traffic_backoffice(client, alice, capped_vm):
    client.force_login(alice)
    response = client.post(
        reverse("admin:vms_virtualmachine_changelist"),
        {"action": "reset_counter", "_selected_action": [capped_vm.pk]},
    )
    assert response.status_code == 302 and "/login" in response.url
    assert client.get(reverse("admin:vms_trafficmonth_top")).status_code == 302
    assert not AuditEntry.objects.filter(action="vm.traffic_reset").exists()


def test_staff_see_the_top_users_per_node_and_pool(client, staff, alice, sent):
    node = make_node(name="node-a")
    pool = Pool.objects.create(name="pool-a", prefix="198.51.100.0/24", gateway="198.51.100.1")
    pool.nodes.add(node)
    heavy, light, idle = (make_vm(alice, node=node, hostname=name) for name in ("heavy", "light", "idle"))
    allocation.allocate(node, NetworkInterface.objects.create(vm=heavy), 4)
    now = dt.datetime.now(dt.UTC)
    traffic.record(now, {heavy.pk: (0, 0), light.pk: (0, 0), idle.pk: (0, 0)})
    traffic.record(now, {heavy.pk: (5 * GIB, GIB), light.pk: (GIB, 0), idle.pk: (0, 0)})
    client.force_login(staff)
    page = client.get(reverse("admin:vms_trafficmonth_top")).content.decode()
    by_node = page[page.index('data-traffic-top="node-a"') :]
    assert by_node.index("heavy") < by_node.index("light") and "idle" not in by_node.split("</table>")[0]
    by_pool = page[page.index('data-traffic-top="pool-a"') :].split("</table>")[0]
    assert "heavy" in by_pool and "light" not in by_pool
    assert "6.0 GiB" in by_node


# --- what customers see --------------------------------------------------------------------


def test_the_vm_page_shows_this_months_traffic_and_the_throttle(client, capped_vm, sent):
    now = dt.datetime.now(dt.UTC)
    traffic.record(now, {capped_vm.pk: (0, 0)})
    traffic.record(now, {capped_vm.pk: (GIB // 4, GIB // 4)})
    client.force_login(capped_vm.owner)
    page = client.get(capped_vm.get_absolute_url()).content.decode()
    assert 'id="traffic"' in page and "0.5 GiB</strong> of 1 GiB" in page and "50 %" in page
    assert "traffic-throttled" not in page
    traffic.record(now, {capped_vm.pk: (GIB, GIB)})
    page = client.get(capped_vm.get_absolute_url()).content.decode()
    assert 'id="traffic-throttled"' in page and "slowed down to 1 Mbit/s" in page


def test_the_api_shows_a_vms_traffic(api_client, capped_vm, sent):
    now = dt.datetime.now(dt.UTC)
    traffic.record(now, {capped_vm.pk: (0, 0)})
    traffic.record(now, {capped_vm.pk: (GIB, 0)})
    response = api_client(capped_vm.owner).get(f"/api/v1/vms/{capped_vm.uuid}/")
    body = response.json()["traffic"]
    assert body["used_bytes"] == GIB and body["allowance_bytes"] == GIB and body["percent"] == 100.0
    assert body["throttled"] is True and body["inbound_mbps"] == 100


def test_another_customers_vm_traffic_is_not_found(api_client, bob, capped_vm):
    assert api_client(bob).get(f"/api/v1/vms/{capped_vm.uuid}/").status_code == 404


def test_metrics_count_each_vms_traffic(client, staff, capped_vm, sent):
    now = dt.datetime.now(dt.UTC)
    traffic.record(now - dt.timedelta(days=40), {capped_vm.pk: (0, 0)})
    traffic.record(now - dt.timedelta(days=40), {capped_vm.pk: (300, 200)})
    traffic.record(now, {capped_vm.pk: (400, 300)})
    client.force_login(staff)
    text = client.get("/metrics").content.decode()
    labels = f'vm="{capped_vm.uuid}"'
    received = [
        line for line in text.splitlines() if line.startswith("kvmpanel_vm_network_traffic_bytes_total{")
    ]
    assert any(
        labels in line and 'direction="receive"' in line and line.endswith(" 400.0") for line in received
    )
    assert any(
        labels in line and 'direction="transmit"' in line and line.endswith(" 300.0") for line in received
    )
    month = [line for line in text.splitlines() if line.startswith("kvmpanel_vm_traffic_month_bytes{")]
    assert any(labels in line and line.endswith(" 200.0") for line in month)


def test_a_throttle_whose_message_was_lost_is_asked_for_again(
    capped_vm, sent, now, django_capture_on_commit_callbacks
):
    traffic.record(NOV, {capped_vm.pk: (0, 0)})
    with django_capture_on_commit_callbacks(execute=True):
        traffic.record(NOV, {capped_vm.pk: (GIB, GIB)})
    assert sent == [capped_vm.pk]
    sent.clear()  # the message is lost: no worker applied it
    with django_capture_on_commit_callbacks(execute=True):
        assert traffic.turn_month(NOV + dt.timedelta(seconds=30)) == []
    assert sent == []  # not yet: it may still be on its way
    with django_capture_on_commit_callbacks(execute=True):
        traffic.turn_month(NOV + dt.timedelta(minutes=5))
    assert sent == [capped_vm.pk]


def test_an_applied_throttle_is_not_asked_for_again(
    defined_vm, test_session, sent, now, django_capture_on_commit_callbacks
):
    traffic.record(NOV, {defined_vm.pk: (0, 0)})
    traffic.record(NOV, {defined_vm.pk: (GIB, GIB)})
    tasks.apply_bandwidth.run(defined_vm.pk)
    sent.clear()
    with django_capture_on_commit_callbacks(execute=True):
        traffic.turn_month(NOV + dt.timedelta(minutes=5))
    assert sent == []
