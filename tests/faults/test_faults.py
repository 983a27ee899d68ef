"""Fault injection against a running panel: every operation ends, whatever dies under it.

Each case kills or cuts a real process (the worker, the web process, Redis, the database's
connection) at a named step, then checks that every operation ended (succeeded, or failed with its
reason) within a bound, that no volume or domain is left that no live VM owns, that each VM's row
matches libvirt, and that the quota counts only live VMs. The faults, how often each was injected and
the longest time from the fault to the operation's end are printed at the end of the run (and kept in
test-output/faults-report.txt).

Bound: with this suite's timings (lease 5 s, sweep 1 s, resend 3 s), an operation whose worker died
ends at most lease + sweep + resend + a worker's start + its work after the fault; we allow 60 s.
"""

import concurrent.futures
import contextlib
import functools
import subprocess
import threading
import time
from collections import defaultdict

import pytest
import websocket
from django.utils import timezone

import hypervisor
from accounts.models import SSHKey
from api import tokens
from images.models import Image
from nodes.registration import register_node
from vms import quotas
from vms.choices import OperationStatus, VMState
from vms.models import Operation, Plan, VirtualMachine

from ..factories import make_user
from ..integration.conftest import OUTPUT, virsh
from ..test_console import session_cookie_for
from .conftest import LOCAL_URI, wait_until

# django_db: pytest-django sets the test database up only for tests that ask for it. The tests'
# own writes would stay in their transaction, unseen by the panel's processes: they write nothing
# (everything goes through the panel's API); the module's fixtures write outside of them.
pytestmark = [pytest.mark.faults, pytest.mark.django_db]
BOUND_SECONDS = 60
PASSWORD = "fault-Injection-2026"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl faults@test"
RESULTS: dict[str, list[float]] = defaultdict(list)
NOTES: list[str] = []


@pytest.fixture(scope="module")
def world(fault_panel, libvirt_pool, tmp_path_factory, django_db_blocker, request):
    """The node, a small image with data in it (full copies take a while), plans and a customer."""
    with django_db_blocker.unblock():
        node = register_node(
            fault_panel.node_name,
            LOCAL_URI,
            pool_name=libvirt_pool["pool"],
            pool_path=libvirt_pool["pool_path"],
            network_name=libvirt_pool["network"],
            virt_type="qemu",
        )
        image = _image(node, tmp_path_factory.mktemp("image"))
        carol = make_user("carol", max_vms=40, max_vcpus=40, max_memory_mib=40 * 1024, max_disk_gb=400)
        key = SSHKey.objects.create(user=carol, name="laptop", public_key=KEY, fingerprint="SHA256:faults")
        _token, secret = tokens.create(carol, name="faults", scope="write")
        fault_panel.api.headers["Authorization"] = f"Bearer {secret}"
        world = {
            "node": node,
            "image": image,
            "overlay": Plan.objects.create(name="Fault overlay", vcpus=1, memory_mib=64, disk_gb=1),
            "copy": Plan.objects.create(name="Fault copy", vcpus=1, memory_mib=64, disk_gb=1, full_copy=True),
            "carol": carol,
            "key": key,
            "panel": fault_panel,
            "cookie": session_cookie_for(carol),
        }
        yield world
        _report(request)


def _image(node, folder):
    """96 MiB of random data in a qcow2: no OS (the VM stops in SeaBIOS, asking nothing of the CPU),
    but a full copy of it takes the pool a moment, long enough to collide with other jobs."""
    raw, qcow2 = folder / "data.raw", folder / "data.qcow2"
    subprocess.run(["dd", "if=/dev/urandom", f"of={raw}", "bs=1M", "count=96", "status=none"], check=True)
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(qcow2)], check=True)
    with hypervisor.connect(node.uri) as session:
        session.upload_volume(node.pool_name, "test-faults-image.qcow2", str(qcow2))
    image = Image.objects.create(name="Faults", volume_name="test-faults-image.qcow2", min_disk_gb=1)
    image.placements.create(node=node, ready=True, placed_at=timezone.now())
    return image


def _report(request) -> None:
    lines = ["fault-injection results (fault: times injected, longest time from fault to operation's end)"]
    lines += [f"  {fault}: {len(times)} x, longest {max(times):.1f} s" for fault, times in RESULTS.items()]
    lines += [f"  {note}" for note in NOTES]
    OUTPUT.mkdir(exist_ok=True)
    (OUTPUT / "faults-report.txt").write_text("\n".join(lines) + "\n")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        for line in lines:
            reporter.write_line(line)


# --- the customer's side: the API of the panel's real web process --------------------------------


def create(world, hostname: str, plan: str = "overlay", password: bool = True) -> VirtualMachine:
    body = {
        "plan": world[plan].pk,
        "image": world["image"].pk,
        "hostname": hostname,
        "ssh_keys": [world["key"].pk],
    }
    if password:
        body["password"] = PASSWORD
    answer = world["panel"].api.post(f"{world['panel'].base}/api/v1/vms/", json=body, timeout=30)
    assert answer.status_code == 201, answer.text
    return VirtualMachine.objects.get(uuid=answer.json()["uuid"])


def ask(world, vm: VirtualMachine, verb: str, body: dict | None = None) -> Operation:
    url = f"{world['panel'].base}/api/v1/vms/{vm.uuid}/" + (f"{verb}/" if verb != "delete" else "")
    call = world["panel"].api.delete if verb == "delete" else world["panel"].api.post
    answer = call(url, json=body or {}, timeout=30)
    assert answer.status_code == 202, answer.text
    return Operation.objects.get(pk=answer.json()["id"])


def latest(vm: VirtualMachine) -> Operation:
    return vm.operations.order_by("-created_at", "-id").first()


def ended(*operations: Operation, timeout: float = BOUND_SECONDS) -> list[Operation]:
    def all_ended():
        fresh = [Operation.objects.get(pk=operation.pk) for operation in operations]
        return fresh if not any(operation.is_active for operation in fresh) else None

    return wait_until(all_ended, timeout, f"operations {[o.pk for o in operations]} to end", interval=0.25)


def fault_to_end(fault: str, started: float, operation: Operation) -> float:
    """Record how long the operation took to end after the fault (wall clock)."""
    seconds = operation.finished_at.timestamp() - started
    RESULTS[fault].append(seconds)
    return seconds


def running(world, hostname: str, **kwargs) -> VirtualMachine:
    vm = create(world, hostname, **kwargs)
    (operation,) = ended(latest(vm))
    assert operation.status == OperationStatus.SUCCEEDED, operation.error
    vm.refresh_from_db()
    assert vm.state == VMState.RUNNING
    return vm


def delete_all(world) -> None:
    """Delete every live VM (what a test left), and check the node is clean again."""
    vms = list(VirtualMachine.objects.live())
    operations = [ask(world, vm, "delete") for vm in vms if not vm.operations.active().exists()]
    for operation in ended(*operations):
        assert operation.status == OperationStatus.SUCCEEDED, operation.error
    assert_consistent(world)


def assert_consistent(world) -> None:
    """No operation left active; nothing on the node that no live VM owns; rows match libvirt; the
    quota counts only live VMs."""
    assert not Operation.objects.active().exists()
    live = list(VirtualMachine.objects.live())
    node = world["node"]
    owned = {world["image"].volume_name}
    for vm in live:
        owned.update((vm.disk_volume, vm.seed_volume))
    with hypervisor.connect(node.uri) as session:
        volumes = set(session.volume_names(node.pool_name))
        domains = {
            name
            for name in session.domain_names()
            if name.startswith("test-")
            and any(pool == node.pool_name for pool, _ in _volumes_of(session, name))
        }
        states = {
            vm.domain_name: session.power_state(vm.domain_name) for vm in live if vm.state != VMState.ERROR
        }
    assert volumes <= owned, f"volumes no live VM owns: {volumes - owned}"
    assert domains <= {vm.domain_name for vm in live}, f"domains no live VM owns: {domains}"
    for vm in live:
        if vm.state != VMState.ERROR:
            assert states[vm.domain_name] == vm.state, (
                f"{vm}: row {vm.state}, libvirt {states[vm.domain_name]}"
            )
    usage = quotas.usage_of(world["carol"])
    assert usage.vms == len([vm for vm in live if vm.owner_id == world["carol"].pk])


def _volumes_of(session, name):
    from hypervisor import xml

    try:
        return xml.domain_volumes(session.domain_xml(name))
    except (hypervisor.NotFound, hypervisor.NotOurs):
        return []


# --- the faults --------------------------------------------------------------------------------------

CREATE_STEPS = ["claimed", "disk_made", "defined", "seeded", "started", "worked"]


@pytest.mark.parametrize("step", CREATE_STEPS)
def test_a_worker_killed_at_each_step_of_a_create(world, step):
    panel = world["panel"]
    panel.pause_at(f"create.{step}")
    vm = create(world, f"create-{step.replace('_', '-')}")
    panel.wait_paused()
    killed = time.time()
    panel.worker.kill()  # its supervisor starts it again
    (operation,) = ended(latest(vm))
    assert operation.status == OperationStatus.SUCCEEDED, operation.error
    assert operation.attempt == 2  # the dead worker's attempt, then the one that finished it
    seconds = fault_to_end("worker SIGKILL during a create", killed, operation)
    assert seconds < BOUND_SECONDS
    vm.refresh_from_db()
    assert vm.state == VMState.RUNNING
    assert_consistent(world)


@pytest.mark.parametrize("step", ["claimed", "domain_removed", "worked"])
def test_a_worker_killed_at_each_step_of_a_delete(world, step):
    panel = world["panel"]
    vm = running(world, f"delete-{step.replace('_', '-')}")
    panel.pause_at(f"delete.{step}")
    operation = ask(world, vm, "delete")
    panel.wait_paused()
    killed = time.time()
    panel.worker.kill()  # its supervisor starts it again
    (operation,) = ended(operation)
    assert operation.status == OperationStatus.SUCCEEDED, operation.error
    fault_to_end("worker SIGKILL during a delete", killed, operation)
    vm.refresh_from_db()
    assert vm.state == VMState.DELETED
    assert_consistent(world)


@pytest.mark.parametrize("step", ["stopped", "disk_deleted", "seeded", "worked"])
def test_a_worker_killed_at_each_step_of_a_reinstall(world, step):
    panel = world["panel"]
    vm = running(world, f"reinstall-{step.replace('_', '-')}")
    panel.pause_at(f"reinstall.{step}")
    body = {"image": world["image"].pk, "confirm_hostname": vm.hostname, "password": PASSWORD}
    operation = ask(world, vm, "reinstall", body)
    panel.wait_paused()
    killed = time.time()
    panel.worker.kill()  # its supervisor starts it again
    (operation,) = ended(operation)
    assert operation.status == OperationStatus.SUCCEEDED, operation.error
    fault_to_end("worker SIGKILL during a reinstall", killed, operation)
    vm.refresh_from_db()
    assert (vm.state, vm.installs) == (VMState.RUNNING, 2)  # one new install, however many tries
    delete_all(world)


def test_the_web_process_killed_right_after_the_commit(world):
    """The operation is recorded, but the process dies before it sends the task: the sweeper does."""
    panel = world["panel"]
    panel.pause_at("request.committed")
    threading.Thread(target=lambda: _create_ignoring_errors(world, "web-killed"), daemon=True).start()
    panel.wait_paused()
    operation = Operation.objects.get(vm__hostname="web-killed")
    assert (operation.status, operation.sends) == (OperationStatus.QUEUED, 0)  # recorded, never sent
    killed = time.time()
    panel.web.kill()  # started again by its supervisor
    (operation,) = ended(operation)
    assert operation.status == OperationStatus.SUCCEEDED, operation.error
    fault_to_end("web process SIGKILL after the commit", killed, operation)
    assert_consistent(world)


def _create_ignoring_errors(world, hostname):
    # The request dies with the web process: no answer comes back (and the password never would,
    # so this create gives only an SSH key).
    with contextlib.suppress(Exception):  # the connection breaks, as it should
        create(world, hostname, password=False)


def test_redis_killed_with_messages_queued_loses_none_of_them(world):
    panel = world["panel"]
    panel.worker.stop()  # nothing takes the messages: they wait in Redis
    # Nor does the sweeper send any again (on a busy machine it would, a create taking longer than
    # its resend time): the queue holds exactly what the requests sent, so a lost one would show.
    panel.beat.stop()
    try:
        vms = [create(world, f"queued-{n}") for n in range(3)]
        # A create may queue more than its own operation for the node (follow-up tasks): every message
        # the requests left must still be there after the kill.
        queued = int(panel.redis.command("llen", f"node.{panel.node_name}"))
        assert queued >= 3
        time.sleep(1.5)  # appendfsync everysec: the last second may be lost, as it may in production
        killed = time.time()
        panel.redis.kill()
        panel.redis.start()
        assert int(panel.redis.command("llen", f"node.{panel.node_name}")) == queued  # the AOF kept them
    finally:
        panel.beat.start()  # a failure here must not leave the next tests without their sweeper
    panel.worker.start()
    for operation in ended(*(latest(vm) for vm in vms)):
        assert operation.status == OperationStatus.SUCCEEDED, operation.error
        fault_to_end("Redis SIGKILL with messages queued", killed, operation)
    assert_consistent(world)


def test_a_flushed_redis_costs_seconds_not_operations(world):
    panel = world["panel"]
    panel.worker.stop()
    vms = [create(world, f"flushed-{n}") for n in range(3)]
    flushed = time.time()
    panel.redis.command("flushall")  # everything queued is gone: only the rows remember
    panel.worker.start()
    for operation in ended(*(latest(vm) for vm in vms)):
        assert operation.status == OperationStatus.SUCCEEDED, operation.error
        assert operation.sends >= 2  # the sweeper sent it again
        fault_to_end("Redis flushed with messages queued", flushed, operation)
    delete_all(world)


def test_a_create_while_redis_is_down_is_answered_and_runs_once_it_is_back(world):
    """The request records the operation and answers (nothing it does needs Redis to succeed: the
    send, the push, the password's doorbell and the rate limit each give way); the sweeper sends
    the task once Redis is back."""
    panel = world["panel"]
    panel.redis.stop()
    down = time.time()
    try:
        vm = create(world, "redis-down")  # asserts 201
        operation = latest(vm)
        assert operation.status == OperationStatus.QUEUED and operation.params["password_hash"].startswith(
            "$2b$"
        )
    finally:
        panel.redis.start()
    (operation,) = ended(operation)
    assert operation.status == OperationStatus.SUCCEEDED, operation.error
    fault_to_end("Redis down during a create request", down, operation)
    delete_all(world)


def test_redis_restarted_operations_and_live_pushes_carry_on(world):
    panel = world["panel"]
    vm = running(world, "pushes")
    restarted = time.time()
    panel.redis.stop()
    panel.redis.start()
    socket = _live_socket(world)  # a page that (re)connected after the restart
    try:
        operation = ask(world, vm, "force-off")
        (operation,) = ended(operation)
        assert operation.status == OperationStatus.SUCCEEDED, operation.error
        fault_to_end("Redis restarted", restarted, operation)
        heard = wait_until(lambda: _heard(socket, vm), 10, "a live push after the restart")
        assert heard["vm"] == str(vm.uuid)
    finally:
        socket.close()
    delete_all(world)


def _live_socket(world):
    """The live socket of an open page (whose script connects again until it is taken)."""
    url = world["panel"].base.replace("http", "ws") + "/ws/live/"

    def connected():
        try:
            return websocket.create_connection(
                url, header=[f"Cookie: {world['cookie']}"], origin="http://127.0.0.1", timeout=1
            )
        except websocket.WebSocketException:
            return None

    return wait_until(connected, 10, "the live socket", interval=1)


def _heard(socket, vm):
    try:
        import json

        message = json.loads(socket.recv())
    except websocket.WebSocketTimeoutException:
        return None
    return message if message.get("vm") == str(vm.uuid) else None


def test_the_database_cut_off_while_a_task_records_its_outcome(world):
    panel = world["panel"]
    panel.pause_at("create.worked", seconds=4)  # the work is done; the outcome is written after this
    vm = create(world, "database-cut")
    panel.wait_paused()
    cut = time.time()
    panel.proxy.cut()
    time.sleep(10)  # longer than the lease: another worker may take the operation over meanwhile
    panel.proxy.heal()
    (operation,) = ended(latest(vm))
    assert operation.status == OperationStatus.SUCCEEDED, operation.error
    fault_to_end("database cut off for 10 s during a task", cut, operation)
    vm.refresh_from_db()
    assert vm.state == VMState.RUNNING
    delete_all(world)


def test_deletes_racing_the_node_monitor_never_bring_a_vm_back(world):
    """Each delete makes libvirt events the monitor writes down; none may overwrite "deleted"."""
    rounds, per_round = 3, 8
    for round_number in range(rounds):
        with concurrent.futures.ThreadPoolExecutor(per_round) as pool:
            vms = list(
                pool.map(functools.partial(_create_keyed, world, f"race-{round_number}"), range(per_round))
            )
        for operation in ended(*(latest(vm) for vm in vms), timeout=120):
            assert operation.status == OperationStatus.SUCCEEDED, operation.error
        started = time.time()
        operations = [ask(world, vm, "delete") for vm in vms]
        for operation in ended(*operations):
            assert operation.status == OperationStatus.SUCCEEDED, operation.error
            fault_to_end("delete racing the node monitor", started, operation)
        time.sleep(3)  # the monitor's events for the last deletes arrive
        for vm in vms:
            vm.refresh_from_db()
            assert vm.state == VMState.DELETED, f"{vm} came back as {vm.state}"
        listed = world["panel"].api.get(f"{world['panel'].base}/api/v1/vms/", timeout=10).json()
        assert not {item["uuid"] for item in listed["results"]} & {str(vm.uuid) for vm in vms}
    assert_consistent(world)


def _create_keyed(world, prefix: str, n: int) -> VirtualMachine:
    return create(world, f"{prefix}-{n}", password=False)


def test_parallel_full_copy_creates_against_a_busy_pool_all_succeed(world):
    log = world["panel"].worker.log_path
    busy_before = log.read_text(errors="replace").count("was busy with another job")
    started = time.time()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        vms = list(pool.map(lambda n: create(world, f"busy-{n}", plan="copy", password=False), range(8)))
    operations = ended(*(latest(vm) for vm in vms), timeout=180)
    for operation in operations:
        assert operation.status == OperationStatus.SUCCEEDED, operation.error
        fault_to_end("parallel full-copy creates (busy pool)", started, operation)
    retried = [operation for operation in operations if operation.attempt > 1]
    waits = log.read_text(errors="replace").count("was busy with another job") - busy_before
    NOTES.append(
        f"busy pool: {waits} refreshes waited out another job; "
        f"{len(retried)} of {len(operations)} parallel full-copy creates were retried as a whole"
    )
    delete_all(world)


def test_delete_of_a_running_domain_undefined_behind_the_panels_back(world):
    vm = running(world, "undefined")
    assert virsh("undefine", vm.domain_name).returncode == 0  # still running, now transient
    undefined = time.time()
    (operation,) = ended(ask(world, vm, "delete"))
    assert operation.status == OperationStatus.SUCCEEDED, operation.error
    fault_to_end("out-of-band undefine, then Delete", undefined, operation)
    assert_consistent(world)
