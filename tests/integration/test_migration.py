"""VMs moving between two real libvirtds (shared/TWO-NODES.md): node 1 is the host's libvirtd, node 2
a libvirtd in namespaces of its own (tests/netbed.py's routed node), reached through its socket.
QEMU's migration and disk (NBD) streams go over unix sockets in a directory both see.

One module, three small guests shared by every step, in this order: the customer creates the first
in the portal (Chromium), with a counter on its serial console as user data, and the other two come
from the API's function; a move that fails (node 2's pool made read-only) leaves the VM running on
node 1; a drain of node 1 moves all three live to node 2 and the counter carries on; a stopped VM
moves back by a copy of its disk and starts there; staff move the customer's VM back live from its
backoffice page, the counter carries on again and the page shows the downtime. Staff drain and move
from the backoffice pages in Chromium.

Running VMs move while they run: their disks are copied live; here, under emulation, their memory is
copied with the guest paused (hypervisor/migration.py says why), so the downtime is that copy.
"""

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import hypervisor
from hypervisor import xml
from images.models import ImagePlacement
from nodes.choices import NodeStatus
from nodes.registration import register_node
from vms import actions, draining
from vms.choices import OperationKind, VMState
from vms.models import Operation, VirtualMachine

from .. import netbed
from ..factories import make_plan, make_user
from .conftest import (
    GUEST_IMAGE,
    IMAGE_VOLUME,
    OUTPUT,
    SECOND_TEST_NODE,
    domain_state,
    fill_create_form,
    guest_view,
    nudge_serial_port,
    serial_text,
    sign_in_as_staff,
)

pytestmark = [pytest.mark.integration, pytest.mark.browser]  # browser: it runs with the Chromium tests, last

TAG = "m19"
NODE2_POOL = f"test-{TAG}-pool"
NODE2_POOL_PATH = f"/var/lib/kvmpanel/test-pools/{TAG}-node2"
MIGRATION_DIR = Path(f"/var/lib/kvmpanel/test-pools/{TAG}-sockets")  # both nodes' QEMUs see it
RUNNING_TIMEOUT = 300
MOVE_TIMEOUT = 600
COUNTER_TIMEOUT = 120
# A counter on the serial console from early in every boot, twice a second.
COUNTER = """#cloud-config
bootcmd:
  - [sh, -c, "setsid sh -c 'i=0; while :; do i=$((i+1)); echo tick-$i > /run/tick; \
echo tick-$i > /dev/ttyS0; sleep 0.5; done' >/dev/null 2>&1 </dev/null &"]
"""


@pytest.fixture(scope="module")
def second_bed():
    with netbed.guarded():
        try:
            with netbed.routed_node(TAG) as bed:
                yield bed
        finally:
            shutil.rmtree(NODE2_POOL_PATH, ignore_errors=True)
            shutil.rmtree(MIGRATION_DIR, ignore_errors=True)


@pytest.fixture
def node2(transactional_db, libvirt_env, second_bed, node):
    """Node 2, with the guest image in its pool; both nodes take moves through the shared socket
    directory (node 2's QEMUs cannot reach this machine's own addresses)."""
    MIGRATION_DIR.mkdir(parents=True, exist_ok=True)
    MIGRATION_DIR.chmod(0o1777)  # QEMU runs as libvirt-qemu on both nodes
    second = register_node(
        SECOND_TEST_NODE,
        second_bed.uri,
        pool_name=NODE2_POOL,
        pool_path=NODE2_POOL_PATH,
        network_name=libvirt_env["network"],
    )
    with hypervisor.connect(second.uri) as session:
        if not session.volume_exists(NODE2_POOL, IMAGE_VOLUME):
            session.upload_volume(NODE2_POOL, IMAGE_VOLUME, str(GUEST_IMAGE))
    for incoming in (node, second):
        incoming.migration_uri = f"unix://{MIGRATION_DIR}/{{vm}}-memory.sock"
        incoming.disks_uri = f"unix://{MIGRATION_DIR}/{{vm}}-disks.sock"
        incoming.save()
    return second


def ticks(log_text: str) -> list[int]:
    return [int(n) for n in re.findall(r"tick-(\d+)", log_text)]


def node2_serial(bed, vm) -> str:
    path = bed.path(xml.serial_log_path(vm.domain_name))
    return path.read_text(errors="replace") if path.exists() else ""


def node1_serial(vm) -> str:
    return serial_text(vm.domain_name)


def wait_for_counter(
    read, count: int, wait_until, what: str, uri: str, vm, qemu_log: Path | None = None
) -> None:
    """Wait until the serial log `read` returns holds `count` ticks. The guest may tick slowly on a
    loaded machine (three guests under emulation on two cores, beside Chromium): up to COUNTER_TIMEOUT.
    If it stalls, say what the guest and QEMU say; a guest whose serial port lost an interrupt (its
    ticks then wait in the guest) gets one nudge (conftest.nudge_serial_port) and another minute."""

    def enough() -> bool:
        return len(read()) >= count

    try:
        wait_until(enough, COUNTER_TIMEOUT, what)
        return
    except AssertionError as timeout_error:
        stalled = f"{timeout_error}; {guest_view(vm, uri)}; serial ticks seen: {read()[-5:]}"
    print(f"\nthe counter stalled: {stalled}")
    if qemu_log is not None and qemu_log.exists():
        print(f"QEMU's log, last lines: {qemu_log.read_text(errors='replace')[-1500:]}")
    try:
        print(f"nudged the guest's serial port: {nudge_serial_port(vm, uri)}")
        wait_until(enough, 60, f"{what}, after a nudge")
    except (AssertionError, subprocess.TimeoutExpired):
        raise AssertionError(stalled) from None


def wait_ended(operation, wait_until, timeout) -> Operation:
    wait_until(lambda: not Operation.objects.get(pk=operation.pk).is_active, timeout, operation.kind)
    operation.refresh_from_db()
    return operation


def remove_everywhere(vms, node2) -> None:
    from vms.tasks import _remove_domain_and_disks

    for vm in vms:
        vm.refresh_from_db()
        for node in (vm.node, node2):
            try:
                with hypervisor.connect(node.uri) as session:
                    there = vm
                    there.node = node
                    _remove_domain_and_disks(session, there)
            except hypervisor.HypervisorError:
                pass


def create_in_the_browser(page, sign_in, customer, plan, image, hostname: str) -> VirtualMachine:
    """The customer creates a VM through the portal's form, with the counter as its user data."""
    sign_in(page, customer)
    fill_create_form(page, plan, image, hostname, "mig-pass-1234", user_data=COUNTER)
    page.wait_for_url("**/vms/*/")
    return VirtualMachine.objects.get(hostname=hostname)


def drain_in_the_backoffice(page, panel_server, node) -> None:
    """Staff sign in and press Drain on the node's backoffice page."""
    sign_in_as_staff(page, panel_server, "sam", f"/backoffice/nodes/node/{node.pk}/change/")
    page.get_by_role("button", name="Drain: move every VM to other nodes").click()
    page.wait_for_selector("#maintenance[data-draining='yes']")


def move_in_the_backoffice(page, panel_server, vm, target) -> Operation:
    """Staff (signed in) pick the target on the VM's backoffice page and press Move; the move's operation."""
    page.goto(f"{panel_server}/backoffice/vms/virtualmachine/{vm.pk}/change/")
    page.select_option("#id_target", str(target.pk))
    page.click("#migrate-button")
    page.wait_for_selector(".messagelist .success")
    return Operation.objects.filter(vm=vm, kind=OperationKind.MIGRATE).latest("created_at")


def test_vms_move_live_and_stopped_between_two_real_nodes(
    node,
    node2,
    second_bed,
    customer,
    demo_image,
    celery_worker,
    wait_until,
    request,
    page,
    panel_server,
    sign_in,
):
    staff = make_user("stella", is_staff=True)
    plan = make_plan(name="Mig", vcpus=1, memory_mib=384, disk_gb=4)
    ImagePlacement.objects.update_or_create(image=demo_image, node=node2, defaults={"ready": True})

    # Node 2 in maintenance: every new VM goes to node 1, its customer none the wiser.
    draining.set_maintenance(node2, staff, True)
    vms = [create_in_the_browser(page, sign_in, customer, plan, demo_image, "mig-1")] + [
        actions.create_vm(
            owner=customer, plan=plan, image=demo_image, hostname=f"mig-{n}", password="mig-pass-1234"
        )
        for n in (2, 3)
    ]
    request.addfinalizer(lambda: remove_everywhere(vms, node2))
    assert {vm.node_id for vm in vms} == {node.pk}
    draining.set_maintenance(node2, staff, False)
    counted = vms[0]
    wait_until(
        lambda: all(VirtualMachine.objects.get(pk=vm.pk).state == VMState.RUNNING for vm in vms),
        RUNNING_TIMEOUT,
        "three VMs running on node 1",
    )
    for vm in vms:
        vm.refresh_from_db()
    started = time.monotonic()
    wait_until(lambda: len(ticks(node1_serial(counted))) >= 4, RUNNING_TIMEOUT, "the serial counter")
    print(f"\ncounter ticking {time.monotonic() - started:.0f} s after the domains ran")

    # 1. A move that fails: node 2's pool is read-only (inside node 2's own mount namespace).
    pid = str(second_bed.pid)
    read_only = ["mount", "--bind", "-o", "ro", NODE2_POOL_PATH, NODE2_POOL_PATH]
    subprocess.run(["nsenter", "-t", pid, "-m", *read_only], check=True)
    try:
        failed = wait_ended(actions.migrate(counted, staff, node2), wait_until, 180)
    finally:
        subprocess.run(["nsenter", "-t", pid, "-m", "umount", NODE2_POOL_PATH], check=True)
    print(f"failed move: {failed.error}")
    assert failed.status == "failed"
    assert "read-only" in failed.error.lower(), failed.error
    counted.refresh_from_db()
    assert counted.node_id == node.pk and counted.state == VMState.RUNNING
    assert domain_state(counted.domain_name) == "running"
    with hypervisor.connect(node2.uri) as session:
        assert not session.domain_exists(counted.domain_name)
        assert not [v for v in session.volume_names(NODE2_POOL) if v.startswith(counted.domain_name)]

    # 2. Staff drain node 1 from its backoffice page: all three move live to node 2, a few at a time.
    before = ticks(node1_serial(counted))[-1]
    drain_started = time.monotonic()
    drain_in_the_backoffice(page, panel_server, node)
    wait_until(lambda: not node.vms.live().exists(), MOVE_TIMEOUT, "node 1 drained")
    print(f"drain of 3 VMs: {time.monotonic() - drain_started:.1f} s")
    # The last move's end asks the drain for more: it finds none left and ends.
    wait_until(lambda: not type(node).objects.get(pk=node.pk).draining, 30, "the drain to end")
    node.refresh_from_db()
    assert node.status == NodeStatus.MAINTENANCE and not node.draining
    moves = Operation.objects.filter(
        kind=OperationKind.MIGRATE, status="succeeded", params__from_node_id=node.pk
    )
    assert moves.count() == 3
    for move in moves.order_by("pk"):
        assert move.params["downtime_ms"] is not None
        seconds, downtime = move.params["seconds"], move.params["downtime_ms"]
        print(f"{move.vm.hostname}: moved in {seconds} s, downtime {downtime} ms")
    for vm in vms:
        vm.refresh_from_db()
        assert vm.node_id == node2.pk and vm.state == VMState.RUNNING
        assert domain_state(vm.domain_name) == "absent"  # gone from node 1, disk too
        with hypervisor.connect(node2.uri) as session:
            assert session.power_state(vm.domain_name) == "running"
    with hypervisor.connect(node.uri) as session:
        left = [
            v for v in session.volume_names(node.pool_name) if any(v.startswith(vm.domain_name) for vm in vms)
        ]
    assert left == []
    # The counter carries on where it was: no reboot, no gap beyond the downtime.
    node2_qemu_log = second_bed.path(f"/var/log/libvirt/qemu/{counted.domain_name}.log")
    wait_for_counter(lambda: ticks(node2_serial(second_bed, counted)), 4, wait_until, "the counter on node 2",
                     second_bed.uri, counted, node2_qemu_log)  # fmt: skip
    after = ticks(node2_serial(second_bed, counted))
    last_on_node1 = ticks(node1_serial(counted))[-1] if node1_serial(counted) else before
    print(f"counter: last on node 1 {last_on_node1}, first on node 2 {after[0]}, now {after[-1]}")
    assert after[0] > before
    assert after[0] <= last_on_node1 + 4  # at most two seconds of ticks lost
    assert after == sorted(after)

    # 3. A stopped VM moves back by a copy of its disk (node 1 out of maintenance first), and starts.
    stopped = vms[2]
    stopped.refresh_from_db()
    wait_ended(actions.request(stopped, staff, OperationKind.FORCE_OFF), wait_until, 60)
    stopped.refresh_from_db()
    assert stopped.state == VMState.STOPPED
    with pytest.raises(actions.ActionRefused, match="maintenance"):
        actions.migrate(stopped, staff, node)
    draining.set_maintenance(node, staff, False)
    node.refresh_from_db()
    offline = wait_ended(actions.migrate(stopped, staff, node), wait_until, 300)
    assert offline.status == "succeeded", offline.error
    stopped.refresh_from_db()
    assert stopped.node_id == node.pk and stopped.state == VMState.STOPPED
    with hypervisor.connect(node2.uri) as session:
        assert not session.domain_exists(stopped.domain_name)
    started_op = wait_ended(actions.request(stopped, staff, OperationKind.START), wait_until, 120)
    assert started_op.status == "succeeded", started_op.error
    assert domain_state(stopped.domain_name) == "running"

    # 4. Staff move the customer's VM (made in the browser) back live, from its backoffice page: the
    # counter carries on once more, now on node 1, and the page shows the move with its downtime.
    last_on_node2 = ticks(node2_serial(second_bed, counted))[-1]
    move = wait_ended(move_in_the_backoffice(page, panel_server, counted, node), wait_until, MOVE_TIMEOUT)
    assert move.status == "succeeded", move.error
    counted.refresh_from_db()
    assert counted.node_id == node.pk and domain_state(counted.domain_name) == "running"

    def new_ticks() -> list[int]:
        return [tick for tick in ticks(node1_serial(counted)) if tick > last_on_node2 - 4]

    wait_for_counter(new_ticks, 4, wait_until, "the counter back on node 1", node.uri, counted)
    back, left_node2_at = new_ticks(), ticks(node2_serial(second_bed, counted))[-1]
    print(f"back by the page: last on node 2 {left_node2_at}, first on node 1 {back[0]}, "
          f"downtime {move.params['downtime_ms']} ms")  # fmt: skip
    assert back[0] <= left_node2_at + 4 and back == sorted(back)
    page.reload()
    shown = f"downtime {move.params['downtime_ms']} ms"
    assert page.get_by_text(shown).count() >= 1, shown
    page.screenshot(path=str(OUTPUT / "migration-moved-back-by-staff.png"), full_page=True)
