"""Scale: usage statistics for 1,000 VMs on one node, and the VM list with 10, 1,000 and 10,000 VMs.

    .venv/bin/python bench/scale.py

Everything runs in this one process, in a database of its own
(var/bench-scale.sqlite3, removed at the start and the end) and on libvirt's
test driver: no guests.

1. Statistics for 1,000 running domains named as the panel names them
   (bench-<uuid>): the one bulk call the node monitor makes per interval
   (getAllDomainStats) against the per-domain calls other panels make, once
   with the test driver in this process (test:///default: no round trips) and
   once in the local libvirtd (test+unix:///default: every call is an RPC over
   libvirtd's Unix socket, as every call to a real node is). The bench's
   domains are undefined at the end.
   The test driver reports only the state in bulk, so UsageRecorder is fed
   realistic counters built here; it records one simulated hour (360
   intervals of 10 s, every raw row of it through UsageRecorder itself, no
   bulk seeding), then ten more minutes with maintain() once a minute as
   Celery beat runs it, then one maintain() after a 70-minute pause.
2. The customer's VM list (/vms/: first page, last page, the live partial, a
   search by hostname, a state filter) for one customer with 10, 1,000 and
   10,000 VMs (every tenth stopped), through Django's test client.
   `--list-only` runs this part alone.
3. `--fleet [--seconds 40]`: 100 nodes x 100 VMs instead (bench/fleet.py): the node monitor's CPU,
   threads and database writes, an event's way to an open page, the staff lists, a drain's queue time.
"""

import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DB = ROOT / "var" / "bench-scale.sqlite3"
os.environ.update(
    DJANGO_SETTINGS_MODULE="kvmpanel.settings",
    DATABASE_URL=f"sqlite:///{DB}",
    REDIS_URL="redis://127.0.0.1:6379/13",
    KVMPANEL_DOMAIN_PREFIX="bench-",
    LOG_LEVEL="WARNING",
)

import django  # noqa: E402

django.setup()

import libvirt  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from accounts.models import User  # noqa: E402
from hypervisor import DomainCounters, PowerState  # noqa: E402
from hypervisor.stats import _GROUPS as STATS_GROUPS  # noqa: E402
from hypervisor.stats import read_counters  # noqa: E402
from images.models import Image  # noqa: E402
from nodes.models import Node, NodeUsage  # noqa: E402
from vms import live, usage  # noqa: E402
from vms.choices import OperationKind, OperationStatus, VMState  # noqa: E402
from vms.models import Operation, Plan, VirtualMachine, VMUsage  # noqa: E402
from vms.views import PAGE_SIZE  # noqa: E402

# libvirt's test driver: in this process, and inside the local libvirtd; never a real node.
URIS = ("test:///default", "test+unix:///default")
STATS_VMS = 1_000
INTERVAL = 10  # seconds between readings, as KVMPANEL_STATS_INTERVAL
HOUR_INTERVALS = 3600 // INTERVAL
STEADY_MINUTES = 10
LIST_SIZES = (10, 1_000, 10_000)
REPEATS = 10  # stats calls
REQUESTS = 20  # page loads
GIB = 1024**3


def remove_database() -> None:
    connection.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{DB}{suffix}").unlink(missing_ok=True)


def prepare() -> tuple[Node, Plan, Image]:
    remove_database()
    call_command("migrate", verbosity=0)
    node = Node.objects.create(
        name="bench-node", uri=URIS[0], virt_type="qemu", cpus=64, memory_mib=512 * 1024, hostname="bench"
    )
    plan = Plan.objects.create(name="bench", vcpus=2, memory_mib=2048, disk_gb=20)
    image = Image.objects.create(name="bench image", volume_name="bench-image.qcow2")
    return node, plan, image


def make_vms(
    owner, node, plan, image, count: int, first: int = 0, stopped_every: int = 0
) -> list[VirtualMachine]:
    """`count` running VMs (every `stopped_every`th stopped) with one finished create operation each, as a
    customer's list shows them."""

    def state(n: int) -> str:
        return VMState.STOPPED if stopped_every and n % stopped_every == 0 else VMState.RUNNING

    vms = VirtualMachine.objects.bulk_create(
        VirtualMachine(owner=owner, node=node, plan=plan, image=image, hostname=f"vm-{n:05d}", state=state(n))
        for n in range(first, first + count)
    )
    Operation.objects.bulk_create(
        Operation(vm=vm, user=owner, kind=OperationKind.CREATE, status=OperationStatus.SUCCEEDED)
        for vm in vms
    )
    return vms


def median_ms(seconds: list[float]) -> float:
    return 1000 * statistics.median(seconds)


def timed(function, repeats: int) -> list[float]:
    """Seconds of each of `repeats` calls, after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return times


# --- 1a. reading counters: one bulk call against per-domain calls -------------------


def mac(n: int) -> str:
    return f"52:54:00:{n >> 16 & 0xFF:02x}:{n >> 8 & 0xFF:02x}:{n & 0xFF:02x}"


def test_domain_xml(name: str, vm_uuid: str, n: int) -> str:
    return f"""<domain type='test'>
  <name>{name}</name><uuid>{vm_uuid}</uuid>
  <memory unit='MiB'>2048</memory><vcpu>2</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <source file='/bench/{name}.qcow2'/><target dev='vda' bus='virtio'/>
    </disk>
    <interface type='network'><mac address='{mac(n)}'/><source network='default'/></interface>
  </devices>
</domain>"""


def define_domains(conn, vms) -> dict[str, str]:
    """Start a test-driver domain for each VM; returns each domain's MAC by name."""
    macs = {}
    for n, vm in enumerate(vms):
        conn.defineXML(test_domain_xml(vm.domain_name, str(vm.uuid), n)).create()
        macs[vm.domain_name] = mac(n)
    return macs


def undefine_domains(conn, names) -> None:
    for name in names:
        domain = conn.lookupByName(name)
        domain.destroy()
        domain.undefine()


def per_vm_info(conn) -> None:
    for domain in conn.listAllDomains():
        domain.info()


def per_vm_full(conn, macs: dict[str, str]) -> None:
    """What a panel without the bulk call does: state, CPU, disk, network and memory, domain by domain."""
    for domain in conn.listAllDomains():
        domain.info()
        name = domain.name()
        if name in macs:
            domain.getCPUStats(True)
            domain.blockStats("vda")
            domain.interfaceStats(macs[name])
            domain.memoryStats()


def bench_reading(conn, macs, vm_ids) -> list[tuple[str, list[float], int]]:
    counters = read_counters(conn)
    mapped = sum(reading.name in vm_ids for reading in counters)
    assert mapped == STATS_VMS, f"only {mapped} of the domains map to VM rows"
    domains = len(counters)
    calls = 1 + domains + 4 * len(macs)
    return [  # (what, seconds of each run, libvirt calls per run)
        ("read_counters(conn): 1 bulk call", timed(lambda: read_counters(conn), REPEATS), 1),
        ("  of which getAllDomainStats", timed(lambda: conn.getAllDomainStats(STATS_GROUPS, 0), REPEATS), 1),
        ("list + info() per domain", timed(lambda: per_vm_info(conn), REPEATS), 1 + domains),
        ("list + info, CPU, disk, net, memory", timed(lambda: per_vm_full(conn, macs), REPEATS), calls),
    ]


def report_reading(uri: str, rows) -> None:
    print(f"\n1a. Reading counters of {STATS_VMS:,} running domains on {uri} (median of {REPEATS})")
    print(f"{'':<38}{'libvirt calls':>14}{'median ms':>11}{'max ms':>9}")
    for label, times, calls in rows:
        print(f"{label:<38}{calls:>14,}{median_ms(times):>11.2f}{1000 * max(times):>9.2f}")
    if uri.startswith("test:"):
        print("   (in-process test driver: no RPC; on a real libvirtd each call above is a round trip)")


# --- 1b. recording rates, 1c. roll-up and pruning ----------------------------------


def synthetic_counters(names: list[str], reading: int) -> list[DomainCounters]:
    """Cumulative counters after `reading` intervals: each VM with its own steady load."""
    seconds = reading * INTERVAL
    return [
        DomainCounters(
            name=name,
            state=PowerState.RUNNING,
            vcpus=2,
            cpu_time_ns=int(seconds * 1e9 * (n % 200) / 100),  # 0 to 2 cores busy
            memory_used_bytes=GIB + (n % 1024) * 1024**2 + (reading % 7) * 4096,
            disk_read_bytes=seconds * (n % 50) * 100_000,
            disk_write_bytes=seconds * (n % 30) * 50_000,
            net_rx_bytes=seconds * (n % 40) * 125_000,
            net_tx_bytes=seconds * (n % 20) * 25_000,
        )
        for n, name in enumerate(names)
    ]


class Recording:
    """One node's UsageRecorder fed one reading per interval, each record() call timed and counted."""

    def __init__(self, node: Node, names: list[str], start: float):
        self.recorder = usage.UsageRecorder(node, interval=INTERVAL)
        self.names, self.start, self.reading = names, start, 0
        self.samples: list[tuple[float, int, int]] = []  # (seconds, queries, rows) of intervals 2..N

    @property
    def clock(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.start + self.reading * INTERVAL, tz=dt.UTC)

    def record(self, intervals: int) -> None:
        for _ in range(intervals):
            counters = synthetic_counters(self.names, self.reading)
            with CaptureQueriesContext(connection) as queries:
                started = time.perf_counter()
                rows = self.recorder.record(self.start + self.reading * INTERVAL, counters)
                elapsed = time.perf_counter() - started
            if self.reading > 0:  # the first reading gives no rates
                self.samples.append((elapsed, len(queries), rows))
            self.reading += 1


def maintained(now: dt.datetime) -> tuple[float, int, dict[str, int]]:
    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        result = usage.maintain(now)
        elapsed = time.perf_counter() - started
    return elapsed, len(queries), result


def bench_usage(node: Node, names: list[str]):
    now = time.time()
    start = now - now % 3600 - 3 * 3600  # on the hour, far enough back for the 70-minute pause
    recording = Recording(node, names, start)
    started = time.perf_counter()
    recording.record(HOUR_INTERVALS + 1)
    hour_seconds = time.perf_counter() - started
    raw_rows = VMUsage.objects.count()
    runs = [("after 1 h of raw (first run)", [maintained(recording.clock + dt.timedelta(seconds=20))])]
    steady = []
    for _ in range(STEADY_MINUTES):
        recording.record(60 // INTERVAL)
        steady.append(maintained(recording.clock + dt.timedelta(seconds=20)))
    runs.append((f"once a minute, {STEADY_MINUTES} min", steady))
    runs.append(("after a 70-minute pause", [maintained(recording.clock + dt.timedelta(minutes=70))]))
    return recording.samples, hour_seconds, raw_rows, runs


def time_publish() -> list[float]:
    return timed(lambda: live.publish_usage_sampled(0), REPEATS)


def report_recording(samples, hour_seconds, raw_rows, publish) -> None:
    seconds = [s for s, _, _ in samples]
    queries = sorted({q for _, q, _ in samples})
    rows = sorted({r for _, _, r in samples})
    print(f"\n1b. UsageRecorder.record() for {STATS_VMS:,} running VMs, intervals 2..{len(samples) + 1}")
    print(f"{'intervals':<26}{len(samples):>10}")
    print(f"{'median ms':<26}{median_ms(seconds):>10.1f}")
    print(f"{'max ms':<26}{1000 * max(seconds):>10.1f}")
    print(f"{'queries per interval':<26}{'/'.join(map(str, queries)):>10}")
    print(f"{'rows per interval':<26}{'/'.join(map(str, rows)):>10}")
    print(f"{'of which Redis publish ms':<26}{median_ms(publish):>10.1f}")
    print(
        f"   the first hour ({HOUR_INTERVALS + 1} readings, {raw_rows:,} VM rows, all through record()) "
        f"took {hour_seconds:.1f} s"
    )


def report_maintenance(runs) -> None:
    print("\n1c. usage.maintain() (roll-up + prune) for those 1,000 VMs")
    print(f"{'':<30}{'calls':>6}{'median s':>10}{'max s':>8}{'queries':>9}{'rolled up':>11}{'pruned':>9}")
    for label, calls in runs:
        seconds = [s for s, _, _ in calls]
        queries = max(q for _, q, _ in calls)
        rolled = sum(result["rolled_up"] for _, _, result in calls)
        pruned = sum(result["pruned"] for _, _, result in calls)
        print(
            f"{label:<30}{len(calls):>6}{statistics.median(seconds):>10.3f}{max(seconds):>8.3f}"
            f"{queries:>9}{rolled:>11,}{pruned:>9,}"
        )
    left = {tier: VMUsage.objects.filter(bucket_seconds=tier).count() for tier in (0, 300, 3600)}
    print(
        f"   VM rows left: raw {left[0]:,}, 5-minute {left[300]:,}, hourly {left[3600]:,}; "
        f"node rows {NodeUsage.objects.count():,}"
    )
    print("   (rolled up and pruned are summed over the calls; queries is the most in one call)")


# --- 2. the VM list --------------------------------------------------------------


def get_page(client, path: str, partial: bool = False):
    headers = {"HX-Request": "true"} if partial else {}
    response = client.get(path, headers=headers)
    assert response.status_code == 200, (path, response.status_code)
    return response


def time_page(client, path: str, rows: int, partial: bool = False) -> tuple[list[float], list[dict]]:
    """Server time of `REQUESTS` loads of `path`, and the queries of one more."""
    assert get_page(client, path, partial).content.count(b"data-vm=") == rows, path
    times = timed(lambda: get_page(client, path, partial), REQUESTS)
    with CaptureQueriesContext(connection) as queries:
        get_page(client, path, partial)
    return times, queries.captured_queries


SEARCH = "vm-000"  # hostnames vm-00000 to vm-00099 (also inside the smaller lists)
PAGES = ("first", "last", "partial", "search", "stopped")


def bench_list(customer, node, plan, image) -> list[tuple[int, dict]]:
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(customer)
    results, have = [], 0
    for size in LIST_SIZES:
        make_vms(customer, node, plan, image, size - have, first=have, stopped_every=10)
        have = size
        last = -(-size // PAGE_SIZE)
        mine = VirtualMachine.objects.filter(owner=customer)
        found = mine.filter(hostname__icontains=SEARCH).count()
        stopped = mine.filter(state=VMState.STOPPED).count()
        results.append(
            (
                size,
                {
                    "first": time_page(client, "/vms/", min(size, PAGE_SIZE)),
                    "last": time_page(client, f"/vms/?page={last}", size - (last - 1) * PAGE_SIZE),
                    "partial": time_page(client, "/vms/", min(size, PAGE_SIZE), partial=True),
                    "search": time_page(client, f"/vms/?q={SEARCH}", min(found, PAGE_SIZE)),
                    "stopped": time_page(client, "/vms/?state=stopped", min(stopped, PAGE_SIZE)),
                },
            )
        )
    return results


def report_list(results) -> None:
    print(f"\n2. VM list (/vms/) of one customer, median server time of {REQUESTS} requests each")
    print(f"   search: ?q={SEARCH} (hostname or name contains); stopped: ?state=stopped (a tenth of the VMs)")
    header = "".join(f"{name + ' ms':>13}" for name in PAGES)
    print(f"{'VMs':>7}{header}{'queries':>16}")
    for size, pages in results:
        ms = "".join(f"{median_ms(pages[kind][0]):>13.1f}" for kind in PAGES)
        queries = "/".join(str(len(pages[kind][1])) for kind in PAGES)
        print(f"{size:>7,}{ms}{queries:>16}")
    print("   queries: " + " / ".join(PAGES))
    size, pages = results[-1]
    print(f"   queries of the last page at {size:,} VMs (ms each, as Django times them, one request):")
    for query in pages["last"][1]:
        print(f"   {float(query['time']) * 1000:>5.0f}  {query['sql'][:130]}")


def main(list_only: bool = False, fleet_seconds: float | None = None):
    run_started = time.perf_counter()
    conn = None
    try:
        node, plan, image = prepare()
        if fleet_seconds is not None:
            import fleet  # bench/fleet.py: 100 nodes x 100 VMs

            fleet.run(plan, image, fleet_seconds)
            return
        if list_only:
            customer = User.objects.create_user(username="bench-customer", password=None)
            report_list(bench_list(customer, node, plan, image))
            return
        operator = User.objects.create_user(username="bench-operator", password=None)
        stats_vms = make_vms(operator, node, plan, image, STATS_VMS)
        vm_ids = usage.UsageRecorder(node)._vm_ids()
        for uri in URIS:
            conn = libvirt.open(uri)
            macs = define_domains(conn, stats_vms)
            report_reading(uri, bench_reading(conn, macs, vm_ids))
            undefine_domains(conn, macs)
            conn.close()
            conn = None
        samples, hour_seconds, raw_rows, runs = bench_usage(node, list(macs))
        report_recording(samples, hour_seconds, raw_rows, time_publish())
        report_maintenance(runs)
        customer = User.objects.create_user(username="bench-customer", password=None)
        report_list(bench_list(customer, node, plan, image))
    finally:
        if conn is not None:
            conn.close()
        remove_database()
    print(f"\nwhole run: {time.perf_counter() - run_started:.0f} s")


if __name__ == "__main__":
    arguments = sys.argv[1:]
    seconds = float(arguments[arguments.index("--seconds") + 1]) if "--seconds" in arguments else 40.0
    main(list_only="--list-only" in arguments, fleet_seconds=seconds if "--fleet" in arguments else None)
