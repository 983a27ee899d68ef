"""The node monitor against the real libvirtd: events, a node that stops answering, a libvirtd restart."""

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

import hypervisor
from nodes.choices import NodeStatus
from nodes.models import Node, NodeUsage
from vms import monitor, provisioning
from vms.choices import VMState
from vms.models import VMUsage
from vms.tasks import domain_spec, reconcile_nodes

from ..factories import make_vm
from .conftest import virsh

pytestmark = pytest.mark.integration

LIBVIRT_SOCKET = "/var/run/libvirt/libvirt-sock"


@pytest.fixture
def start_watching():
    """Runs the monitor's loop in this process once called; stopped after the test."""
    stop = threading.Event()
    thread = threading.Thread(target=monitor.run, args=(stop, 0.5), daemon=True)
    yield thread.start
    stop.set()
    thread.join(10)


@pytest.fixture
def running_vm(node, demo_image, nano_plan, customer):
    """A VM row with its domain defined and started directly (no worker needed)."""
    vm = make_vm(customer, node=node, image=demo_image, plan=nano_plan, hostname="watched", state="running")
    with hypervisor.connect(node.uri) as session:
        provisioning.make_disk(session, vm)
        provisioning.make_seed(session, vm, {})  # a seed with no login: these guests are only watched
        session.define_domain(domain_spec(vm))
        session.start(vm.domain_name)
    yield vm
    with hypervisor.connect(node.uri) as session:
        session.undefine(vm.domain_name)
        session.delete_volume(node.pool_name, vm.disk_volume)
        session.delete_volume(node.pool_name, vm.seed_volume)


def state_of(vm) -> str:
    vm.refresh_from_db()
    return vm.state


def restart_libvirtd():
    if Path("/run/systemd/system").exists():
        subprocess.run(["systemctl", "restart", "libvirtd"], check=True)
        return
    subprocess.run(["pkill", "-x", "libvirtd"], check=False)
    for _ in range(100):
        if subprocess.run(["pgrep", "-x", "libvirtd"], capture_output=True).returncode != 0:
            break
        time.sleep(0.1)
    subprocess.run(["libvirtd", "-d"], check=True)


def test_events_reach_the_row_and_survive_a_libvirtd_restart(running_vm, start_watching, wait_until):
    start_watching()
    assert virsh("destroy", running_vm.domain_name).returncode == 0
    started = time.monotonic()  # virsh returns when the domain is off; the event follows
    wait_until(lambda: state_of(running_vm) == VMState.STOPPED, 5, "the row to show stopped")
    print(f"\nvirsh destroy -> row stopped: {time.monotonic() - started:.2f} s")

    restart_libvirtd()
    wait_until(lambda: virsh("version").returncode == 0, 30, "libvirtd back")
    assert virsh("start", running_vm.domain_name).returncode == 0
    wait_until(lambda: state_of(running_vm) == VMState.RUNNING, 30, "an event after the restart")
    assert virsh("destroy", running_vm.domain_name).returncode == 0
    wait_until(lambda: state_of(running_vm) == VMState.STOPPED, 5, "the next event, as fast as before")


def test_a_node_that_stops_answering_is_unreachable_until_it_answers(
    transactional_db, customer, nano_plan, demo_image, start_watching, wait_until, tmp_path
):
    socket_path = tmp_path / "libvirt-sock"  # nothing listens here yet
    node = Node.objects.create(
        name="test-flaky", uri=f"qemu+unix:///system?socket={socket_path}", virt_type="qemu"
    )
    vm = make_vm(customer, node=node, plan=nano_plan, image=demo_image, state="running")
    start_watching()
    wait_until(lambda: Node.objects.get(pk=node.pk).status == NodeStatus.UNREACHABLE, 10, "unreachable")
    assert state_of(vm) == VMState.UNKNOWN  # never "stopped": we do not know
    assert Node.objects.get(pk=node.pk).last_error

    os.symlink(LIBVIRT_SOCKET, socket_path)  # the node answers again
    wait_until(lambda: Node.objects.get(pk=node.pk).status == NodeStatus.ONLINE, 15, "back online")


def test_a_running_guest_gets_usage_readings_from_the_bulk_stats_call(running_vm, start_watching, wait_until):
    start_watching()  # readings every 2 s in tests
    busy = VMUsage.objects.filter(vm=running_vm, cpu_percent__gt=0, memory_bytes__gt=0)
    wait_until(lambda: busy.count() >= 2, 30, "two readings of the booting guest")
    reading = busy.latest("at")
    assert 0 < reading.cpu_percent <= 100
    assert 0 < reading.memory_bytes <= running_vm.plan.memory_mib * 1024 * 1024
    assert VMUsage.objects.filter(vm=running_vm, disk_read_bps__gt=0).exists()  # the guest reads its disk
    totals = NodeUsage.objects.filter(node=running_vm.node).latest("at")
    assert totals.running_vms >= 1


def test_the_periodic_reconcile_flags_a_gone_domain_and_leaves_strays_alone(
    node, customer, nano_plan, demo_image, celery_worker, wait_until, tmp_path
):
    gone = make_vm(customer, node=node, plan=nano_plan, image=demo_image, state="running")  # no domain
    stray = f"test-stray-{node.pk}-{os.getpid()}"
    stray_xml = tmp_path / "stray.xml"
    stray_xml.write_text(
        f"<domain type='qemu'><name>{stray}</name><memory unit='MiB'>64</memory>"
        "<os><type arch='x86_64'>hvm</type></os></domain>"
    )
    assert virsh("define", str(stray_xml)).returncode == 0
    try:
        reconcile_nodes.delay()  # what Celery beat sends every minute
        reconciled = Node.objects.filter(pk=node.pk, reconciled_at__isnull=False)
        wait_until(reconciled.exists, 30, "the reconcile to finish")
        assert state_of(gone) == VMState.MISSING
        node.refresh_from_db()
        assert {"name": stray, "state": "stopped", "panel_metadata": False} in node.stray_domains
        assert stray in virsh("list", "--all", "--name").stdout  # reported, never touched
    finally:
        virsh("undefine", stray)
