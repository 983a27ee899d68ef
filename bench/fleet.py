"""Scale, many machines: 100 nodes x 100 VMs on libvirt's test driver (one node file each).

    .venv/bin/python bench/scale.py --fleet [--seconds 40]

Run from bench/scale.py (its database of its own, removed at the start and the end). Measures:
1. the node monitor over all 100 nodes (one watcher thread and one libvirt connection per node, the
   bulk stats call every KVMPANEL_STATS_INTERVAL): its CPU, its threads, the database writes per
   second it makes (every INSERT/UPDATE/DELETE on any connection, counted by a wrapper);
2. an event reaching an open page while it runs: a domain's new state applied as the monitor applies
   it, until the message is in the VM's Channels group (what the page's socket receives);
3. the staff VM list (/backoffice/vms/virtualmachine/, 10,000 VMs) and the node list;
4. a drain's queue time: a node of 100 VMs drained with KVMPANEL_DRAIN_PARALLEL 2 and 10, each move
   finished at once (no libvirt), so what is timed is the panel's own work: placement and queueing.
"""

import asyncio
import resource
import statistics
import threading
import time
import uuid
from pathlib import Path

from django.conf import settings
from django.db import connection
from django.db.backends.signals import connection_created
from django.test import Client

from accounts.models import User
from images.models import ImagePlacement
from nodes.models import Node, NodeUsage
from vms import actions, draining, monitor
from vms.choices import OperationStatus, VMState
from vms.live import vm_group
from vms.models import Operation, VirtualMachine, VMUsage

NODES, VMS_PER_NODE = 100, 100
NODE_DIR = Path(settings.VAR_DIR) / "bench-fleet"
WRITES = {"count": 0}


def count_writes(execute, sql, params, many, context):
    if sql.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE"):
        WRITES["count"] += 1
    return execute(sql, params, many, context)


def _wrap(sender, connection, **kwargs):
    if count_writes not in connection.execute_wrappers:
        connection.execute_wrappers.append(count_writes)


def node_file(index: int, vms: list[VirtualMachine]) -> str:
    domains = "".join(
        f"<domain type='test'><name>{vm.domain_name}</name><uuid>{vm.uuid}</uuid>"
        "<memory unit='MiB'>1024</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os></domain>"
        for vm in vms
    )
    path = NODE_DIR / f"node-{index:03d}.xml"
    path.write_text(
        f"<node><cpu><nodes>1</nodes><sockets>1</sockets><cores>32</cores><threads>1</threads></cpu>"
        f"<memory>268435456</memory>{domains}</node>"
    )
    return f"test://{path}"


def build(plan, image) -> tuple[list[Node], User]:
    NODE_DIR.mkdir(parents=True, exist_ok=True)
    owner = User.objects.create_user(username="bench-fleet", password=None)
    nodes = []
    for index in range(NODES):
        node = Node.objects.create(
            name=f"fleet-{index:03d}", uri=f"test:///pending-{index}", virt_type="qemu", cpus=32,
            memory_mib=256 * 1024, hostname=f"fleet-{index:03d}",
        )  # fmt: skip
        vms = VirtualMachine.objects.bulk_create(
            VirtualMachine(
                owner=owner,
                node=node,
                plan=plan,
                image=image,
                hostname=f"f{index:03d}-{n:03d}",
                state=VMState.RUNNING,
                uuid=uuid.uuid4(),
            )
            for n in range(VMS_PER_NODE)
        )
        node.uri = node_file(index, vms)
        node.save(update_fields=["uri"])
        ImagePlacement.objects.create(image=image, node=node, ready=True)
        nodes.append(node)
    return nodes, owner


def bench_monitor(seconds: float) -> dict:
    stop = threading.Event()
    connection_created.connect(_wrap)
    threads_before = threading.active_count()
    cpu_before = time.process_time()
    rows_before = VMUsage.objects.count() + NodeUsage.objects.count()
    started = time.monotonic()
    runner = threading.Thread(target=monitor.run, args=(stop, 5.0), name="monitor", daemon=True)
    runner.start()
    peak_threads = 0
    latencies = []
    WRITES["count"] = 0
    time.sleep(8)  # every watcher connected and reported its domains
    while time.monotonic() - started < seconds:
        peak_threads = max(peak_threads, threading.active_count())
        latencies.append(event_to_group())
        time.sleep(0.5)
    elapsed = time.monotonic() - started
    cpu = time.process_time() - cpu_before
    stop.set()
    runner.join(30)
    connection_created.disconnect(_wrap)
    rows = VMUsage.objects.count() + NodeUsage.objects.count() - rows_before
    return {
        "seconds": elapsed,
        "cpu_percent": 100 * cpu / elapsed,
        "threads": peak_threads - threads_before,
        "writes_per_s": WRITES["count"] / (elapsed - 8),
        "usage_rows": rows,
        "event_ms": latencies,
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def event_to_group() -> float:
    """A domain's new state applied as the monitor does, until the message is in the VM's group."""
    from channels.layers import get_channel_layer

    vm = VirtualMachine.objects.select_related("node").order_by("?").first()
    layer = get_channel_layer()

    async def round_trip() -> float:
        channel = await layer.new_channel()
        await layer.group_add(vm_group(vm.uuid), channel)
        new = VMState.PAUSED if vm.state == VMState.RUNNING else VMState.RUNNING
        started = time.perf_counter()
        await asyncio.to_thread(monitor.apply_domain_state, vm.node, vm.domain_name, new)
        await asyncio.wait_for(layer.receive(channel), 5)
        took = time.perf_counter() - started
        await layer.group_discard(vm_group(vm.uuid), channel)
        return took

    return asyncio.run(round_trip())


def bench_lists(operator) -> dict:
    from django.core.management import call_command

    call_command("collectstatic", interactive=False, verbosity=0)  # pages render as in production
    settings.KVMPANEL_STAFF_2FA_REQUIRED = False  # a signed-in operator, without typing a code here
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(operator)
    results = {}
    for name, path in (
        ("staff VM list", "/backoffice/vms/virtualmachine/"),
        ("node list", "/backoffice/nodes/node/"),
    ):
        times, queries = [], 0
        for _ in range(6):
            started = time.perf_counter()
            with CaptureQueries() as captured:
                response = client.get(path)
            times.append(time.perf_counter() - started)
            queries = captured.count
            assert response.status_code == 200, (path, response.status_code)
        results[name] = (1000 * statistics.median(times[1:]), queries)
    return results


class CaptureQueries:
    def __enter__(self):
        from django.test.utils import CaptureQueriesContext

        self.context = CaptureQueriesContext(connection)
        self.context.__enter__()
        return self

    def __exit__(self, *exc):
        self.context.__exit__(*exc)
        self.count = len(self.context.captured_queries)


def bench_drain(node: Node, operator, parallel: int) -> dict:
    """Drain `node` with each move finished at once: the panel's placement and queueing only."""
    settings.KVMPANEL_DRAIN_PARALLEL = parallel
    actions.enqueue = lambda operation: None  # no worker: the moves are finished here
    draining.ring = lambda node_id: None
    started = time.perf_counter()
    draining.start(node, operator)
    rounds, top_ups = 0, []
    while True:
        began = time.perf_counter()
        asked = draining.top_up(node)
        top_ups.append(time.perf_counter() - began)
        node.refresh_from_db()
        if not node.draining:
            break
        rounds += 1
        for operation in asked:  # the worker's outcome, at once
            Operation.objects.filter(pk=operation.pk).update(status=OperationStatus.SUCCEEDED)
            VirtualMachine.objects.filter(pk=operation.vm_id).update(
                node_id=operation.params["target_node_id"]
            )
        if not asked and not draining.moves_under_way(node).exists():
            raise RuntimeError(f"drain stuck: {node.drain_note}")
    return {
        "parallel": parallel,
        "total_s": time.perf_counter() - started,
        "rounds": rounds,
        "top_up_ms": 1000 * statistics.median(top_ups),
        "top_up_max_ms": 1000 * max(top_ups),
    }


def run(plan, image, seconds: float) -> None:
    operator = User.objects.create_user(
        username="bench-staff", password=None, is_staff=True, is_superuser=True
    )
    started = time.perf_counter()
    nodes, _owner = build(plan, image)
    print(f"\n== fleet: {NODES} nodes x {VMS_PER_NODE} VMs on test:/// node files (built in "
          f"{time.perf_counter() - started:.1f} s)")  # fmt: skip
    watch = bench_monitor(seconds)
    events = sorted(watch["event_ms"])
    print(
        f"node monitor, {watch['seconds']:.0f} s, stats every {settings.KVMPANEL_STATS_INTERVAL} s: "
        f"CPU {watch['cpu_percent']:.0f} % of one core (this whole process), {watch['threads']} threads, "
        f"{watch['writes_per_s']:.0f} database writes/s ({watch['usage_rows']} usage rows), "
        f"max RSS {watch['max_rss_mib']:.0f} MiB"
    )
    print(
        f"event -> page (state applied -> message in the VM's group), {len(events)} events under that load: "
        f"median {1000 * statistics.median(events):.1f} ms, "
        f"p90 {1000 * events[int(len(events) * 0.9)]:.1f} ms, "
        f"max {1000 * events[-1]:.1f} ms"
    )
    for name, (ms, queries) in bench_lists(operator).items():
        print(f"{name}: {ms:.0f} ms, {queries} queries")
    for parallel, node in ((2, nodes[0]), (10, nodes[1])):
        drained = bench_drain(node, operator, parallel)
        print(
            f"drain of {VMS_PER_NODE} VMs, {parallel} at a time: queued in {drained['total_s']:.1f} s over "
            f"{drained['rounds']} rounds; one top-up (placement + {parallel} operations) median "
            f"{drained['top_up_ms']:.0f} ms, max {drained['top_up_max_ms']:.0f} ms"
        )
    for path in NODE_DIR.glob("node-*.xml"):
        path.unlink()
