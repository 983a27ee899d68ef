"""Port speed and the traffic throttle on a real libvirtd: `virsh domiftune` must show what the panel set.

The domain is a running `test-` domain with a NIC on an isolated network of this test's own and a
blank disk (it sits in its firmware: enough for a live tap that tc shapes, no guest needed).
"""

import dataclasses
import datetime as dt
import re
import secrets
import subprocess

import pytest

import hypervisor
from nodes.registration import bridge_name
from vms import networking, tasks, traffic
from vms.models import NetworkInterface
from vms.provisioning import apply_filter, domain_spec

from ..factories import make_node, make_plan, make_user, make_vm

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

LOCAL_URI = "qemu:///system"
GIB = 1024**3


@pytest.fixture
def small_env():
    tag = secrets.token_hex(3)
    env = {
        "pool": f"test-speed-{tag}",
        "path": f"/var/lib/kvmpanel/test-pools/speed-{tag}",
        "net": f"test-speed-{tag}",
    }
    with hypervisor.connect(LOCAL_URI) as session:
        session.ensure_pool(env["pool"], env["path"])
        session.ensure_network(env["net"], bridge_name(env["net"]))
    env["domains"], env["filters"] = [], []
    try:
        yield env
    finally:  # also when the test failed half-way
        with hypervisor.connect(LOCAL_URI) as session:
            for name in env["domains"]:
                session.remove_domain(name)
            for name in env["filters"]:
                session.delete_filter(name)
            for volume in session.volume_names(env["pool"]):
                session.delete_volume(env["pool"], volume)
            session.delete_pool(env["pool"])
            session.delete_network(env["net"])


def domiftune(domain: str, mac: str, *flags: str) -> dict[str, int]:
    out = subprocess.run(
        ["virsh", "-c", LOCAL_URI, "domiftune", domain, mac, *flags],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {key: int(value) for key, value in re.findall(r"^(\S+)\s*:\s*(\d+)\s*$", out, re.M)}


def make_domain(env, *, running: bool):
    """A panel VM whose plan has port speeds and 1 GiB a month, defined on the real node."""
    node = make_node(
        uri=LOCAL_URI, pool_name=env["pool"], network_name=env["net"], virt_type="qemu", name="test-speed"
    )
    alice = make_user(f"alice-{secrets.token_hex(2)}", email="alice@example.net")
    vm = make_vm(alice, node=node, plan=make_plan(traffic_gib=1, inbound_mbps=100, outbound_mbps=20))
    nic = NetworkInterface.objects.create(vm=vm)
    env["domains"].append(vm.domain_name)
    env["filters"].append(networking.filter_name(vm))
    with hypervisor.connect(LOCAL_URI) as session:
        session.upload_bytes(env["pool"], vm.disk_volume, b"\0" * 1024 * 1024)
        apply_filter(session, vm)  # the NIC refers to the VM's anti-spoofing filter
        spec = dataclasses.replace(domain_spec(vm), disk_format="raw", memory_mib=64, cdrom_volumes=())
        session.define_domain(spec)
        if running:
            try:
                session.start(vm.domain_name)
            except hypervisor.OperationFailed as error:
                if "qdisc kind is unknown" in str(error) or "TC action" in str(error):
                    pytest.skip(f"this host's kernel cannot shape traffic (no sch_sfq/act_police): {error}")
                raise
    return vm, nic


def throttle_then_turn_the_month(vm, nic, *flags):
    """Plan speed; over the allowance: the throttle; a month later: the plan speed again."""
    plan_speed = domiftune(vm.domain_name, nic.mac, *flags)
    assert (plan_speed["inbound.average"], plan_speed["outbound.average"]) == (12500, 2500)

    now = dt.datetime.now(dt.UTC)
    traffic.record(now, {vm.pk: (0, 0)})
    assert [row.vm_id for row in traffic.record(now, {vm.pk: (GIB, 0)})] == [vm.pk]
    assert tasks.apply_bandwidth.run(vm.pk) == 1  # what the worker runs when the throttle rings
    throttled = domiftune(vm.domain_name, nic.mac, *flags)
    assert (throttled["inbound.average"], throttled["outbound.average"]) == (125, 125)

    next_month = now.replace(day=1) + dt.timedelta(days=32)  # the clock moves a month on
    assert traffic.turn_month(next_month) == [vm.pk]
    original = traffic.timezone.now
    traffic.timezone.now = lambda: next_month  # the worker applies the speeds of the month it runs in
    try:
        assert not traffic.is_throttled(vm)
        tasks.apply_bandwidth.run(vm.pk)
    finally:
        traffic.timezone.now = original
    again = domiftune(vm.domain_name, nic.mac, *flags)
    assert (again["inbound.average"], again["outbound.average"]) == (12500, 2500)


def test_virsh_domiftune_shows_a_stopped_vms_throttle_and_its_lifting(small_env, settings):
    settings.KVMPANEL_THROTTLE_KBPS = 125
    vm, nic = make_domain(small_env, running=False)
    throttle_then_turn_the_month(vm, nic, "--config")


def test_virsh_domiftune_shows_a_running_vms_throttle_without_a_restart(small_env, settings):
    settings.KVMPANEL_THROTTLE_KBPS = 125
    vm, nic = make_domain(small_env, running=True)
    throttle_then_turn_the_month(vm, nic, "--live")
    assert domiftune(vm.domain_name, nic.mac, "--config")["inbound.average"] == 12500
    with hypervisor.connect(LOCAL_URI) as session:
        assert session.power_state(vm.domain_name) == hypervisor.PowerState.RUNNING  # never restarted
