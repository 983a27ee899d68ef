"""Time from "Create" in the portal to a running domain, against the same steps done directly with libvirt.

    .venv/bin/python bench/create_to_running.py [--runs 5] [--boot]

Both columns run in this one process, on this machine's libvirtd, in a pool and
network of the benchmark's own (bench-…), removed at the end. The panel column
goes through everything a customer's click does: the create view, the
Operation row, Redis, a real Celery worker process, the hypervisor door, and
the state written back to the database (polled every 5 ms here).
`--boot` also times one guest from the start call to its login prompt.
"""

import argparse
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
VAR = ROOT / "var"
os.environ.update(
    DJANGO_SETTINGS_MODULE="kvmpanel.settings",
    DATABASE_URL=f"sqlite:///{VAR / 'bench.sqlite3'}",
    REDIS_URL="redis://127.0.0.1:6379/14",
    KVMPANEL_DOMAIN_PREFIX="bench-",
    LOG_LEVEL="WARNING",
)
GUEST_IMAGE = Path(os.environ.get("KVMPANEL_GUEST_IMAGE", "/var/cache/kvmpanel/images/debian-12-cloud.qcow2"))
URI = "qemu:///system"
TAG = secrets.token_hex(3)
POOL, NETWORK, NODE = f"bench-kvmpanel-{TAG}", f"bench-kvmpanel-{TAG}", "bench-node"
IMAGE_VOLUME = "bench-image.qcow2"

import django  # noqa: E402

django.setup()

import libvirt  # noqa: E402
import redis  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402

from vms import hypervisor  # noqa: E402
from vms.hypervisor import xml  # noqa: E402
from vms.models import Image, Plan, VirtualMachine  # noqa: E402
from vms.nodes import bridge_name, register_node  # noqa: E402


def prepare():
    call_command("migrate", verbosity=0)
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    with hypervisor.connect(URI) as node:
        node.ensure_pool(POOL, f"/var/lib/kvmpanel/bench-pools/{TAG}")
        node.ensure_network(NETWORK, bridge_name(NETWORK))
        node.upload_volume(POOL, IMAGE_VOLUME, str(GUEST_IMAGE))
    register_node(NODE, URI, pool_name=POOL, network_name=NETWORK)
    plan, _ = Plan.objects.get_or_create(name="bench", vcpus=1, memory_mib=512, disk_gb=4)
    image, _ = Image.objects.update_or_create(volume_name=IMAGE_VOLUME, defaults={"name": "bench image"})
    from accounts.models import User

    user, _ = User.objects.get_or_create(username="bench")
    return plan, image, user


def start_worker():
    log = open(VAR / "bench-worker.log", "w")  # noqa: SIM115 - lives as long as the worker
    worker = subprocess.Popen(
        [str(Path(sys.executable).with_name("celery")), "-A", "kvmpanel", "worker",
         "-Q", f"default,node.{NODE}", "--concurrency", "2", "--loglevel", "INFO",
         "--without-gossip", "--without-mingle", "--without-heartbeat", "--hostname", f"bench-{TAG}@%h"],
        cwd=ROOT, env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while "ready." not in (VAR / "bench-worker.log").read_text():
        if time.monotonic() > deadline:
            raise SystemExit("worker did not start; see var/bench-worker.log")
        time.sleep(0.1)
    return worker


def wait_for(condition, timeout=120.0, poll=0.005):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(poll)


def panel_create(client, plan, image, n) -> tuple[float, VirtualMachine]:
    started = time.perf_counter()
    response = client.post("/vms/new/", {"plan": plan.pk, "image": image.pk, "hostname": f"bench-{n}"})
    assert response.status_code == 302, response.content[:500]
    vm = VirtualMachine.objects.get(hostname=f"bench-{n}", deleted_at__isnull=True)
    wait_for(lambda: VirtualMachine.objects.filter(pk=vm.pk, state="running").exists())
    return time.perf_counter() - started, vm


def panel_delete(client, vm):
    client.post(f"/vms/{vm.uuid}/delete/", {"confirm_hostname": vm.hostname})
    wait_for(lambda: VirtualMachine.objects.filter(pk=vm.pk, state="deleted").exists())


def raw_create(conn) -> tuple[float, str]:
    """The same steps with libvirt directly: overlay volume, define, start."""
    vm_uuid = str(uuid.uuid4())
    name = f"bench-raw-{vm_uuid}"
    started = time.perf_counter()
    pool = conn.storagePoolLookupByName(POOL)
    backing = pool.storageVolLookupByName(IMAGE_VOLUME)
    pool.createXML(xml.volume_xml(f"{name}.qcow2", 4 * 1024**3, "qcow2", (backing.path(), "qcow2")), 0)
    spec = hypervisor.DomainSpec(
        name=name, uuid=vm_uuid, title=name, virt_type="qemu", vcpus=1, memory_mib=512, pool=POOL,
        disk_volume=f"{name}.qcow2", network=NETWORK, vnc_password=secrets.token_hex(4),
    )  # fmt: skip
    conn.defineXML(xml.domain_xml(spec)).create()
    return time.perf_counter() - started, name


def raw_delete(conn, name):
    domain = conn.lookupByName(name)
    domain.destroy()
    domain.undefine()
    conn.storagePoolLookupByName(POOL).storageVolLookupByName(f"{name}.qcow2").delete(0)


def time_to_login(client, plan, image) -> float:
    started = time.perf_counter()
    _, vm = panel_create(client, plan, image, "boot")
    log = Path(xml.serial_log_path(vm.domain_name))
    wait_for(lambda: log.exists() and "login:" in log.read_text(errors="replace"), timeout=600, poll=0.2)
    elapsed = time.perf_counter() - started
    panel_delete(client, vm)
    return elapsed


def cleanup():
    with hypervisor.connect(URI) as node:
        for name in node.domain_names():
            if name.startswith("bench-"):
                try:
                    if any(pool == POOL for pool, _ in xml.domain_volumes(node.domain_xml(name))):
                        node.undefine(name)
                except hypervisor.HypervisorError:
                    pass
        for volume in node.volume_names(POOL):
            node.delete_volume(POOL, volume)
        node.delete_pool(POOL)
        node.delete_network(NETWORK)
    (VAR / "bench.sqlite3").unlink(missing_ok=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--boot", action="store_true", help="also time one guest to its login prompt")
    args = parser.parse_args()
    worker = None
    try:
        plan, image, user = prepare()
        worker = start_worker()
        client = Client(HTTP_HOST="127.0.0.1")
        client.force_login(user)
        conn = libvirt.open(URI)
        panel, raw = [], []
        for n in range(args.runs):
            seconds, name = raw_create(conn)
            raw.append(seconds)
            raw_delete(conn, name)
            seconds, vm = panel_create(client, plan, image, n)
            panel.append(seconds)
            panel_delete(client, vm)
        report(panel, raw)
        if args.boot:
            print(
                f"create request -> guest login prompt: {time_to_login(client, plan, image):.1f} s (emulated)"
            )
    finally:
        if worker:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
        cleanup()


def report(panel, raw):
    p, r = statistics.median(panel), statistics.median(raw)
    print(f"{'runs':<28}{len(panel):>10}")
    print(f"{'':<28}{'panel':>10}{'raw libvirt':>14}")
    print(f"{'median create->running (s)':<28}{p:>10.3f}{r:>14.3f}")
    print(f"{'min (s)':<28}{min(panel):>10.3f}{min(raw):>14.3f}")
    print(f"{'max (s)':<28}{max(panel):>10.3f}{max(raw):>14.3f}")
    print(f"panel overhead (median): {1000 * (p - r):.0f} ms, {100 * (p - r) / r:.0f} %")


if __name__ == "__main__":
    main()
