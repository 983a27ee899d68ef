"""Shared set-up for benchmarks: a database, a pool, a network and a node of the benchmark's own.

Everything in libvirt is named bench-… and removed by `cleanup()`.
"""

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
VAR = ROOT / "var"
VAR.mkdir(exist_ok=True)
os.environ.update(
    DJANGO_SETTINGS_MODULE="kvmpanel.settings",
    DATABASE_URL=f"sqlite:///{VAR / 'bench.sqlite3'}",
    # A Redis database of the bench's own (it is flushed); BENCH_REDIS_URL picks another one.
    REDIS_URL=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
    KVMPANEL_DOMAIN_PREFIX="bench-",
    LOG_LEVEL="WARNING",
)
GUEST_IMAGE = Path(os.environ.get("KVMPANEL_GUEST_IMAGE", "/var/cache/kvmpanel/images/debian-12-cloud.qcow2"))
URI = "qemu:///system"
TAG = secrets.token_hex(3)
POOL = NETWORK = f"bench-kvmpanel-{TAG}"
NODE = "bench-node"
IMAGE_VOLUME = "bench-image.qcow2"
BIN = Path(sys.executable).parent
BENCH_PASSWORD = secrets.token_urlsafe(12)  # a bench user of its own, in a database of its own

import django  # noqa: E402

django.setup()

import redis  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

import hypervisor  # noqa: E402
from hypervisor import xml  # noqa: E402
from images.models import Image, ImagePlacement  # noqa: E402
from nodes.registration import bridge_name, register_node  # noqa: E402
from vms.models import Plan  # noqa: E402


def prepare():
    """(plan, image, user, node) in a fresh benchmark database and libvirt pool."""
    from accounts.models import User

    remove_database()
    call_command("migrate", verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)  # pages render as in production
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    with hypervisor.connect(URI) as node:
        node.ensure_pool(POOL, f"/var/lib/kvmpanel/bench-pools/{TAG}")
        node.ensure_network(NETWORK, bridge_name(NETWORK))
        node.upload_volume(POOL, IMAGE_VOLUME, str(GUEST_IMAGE))
    node = register_node(NODE, URI, pool_name=POOL, network_name=NETWORK)
    plan = Plan.objects.create(name="bench", vcpus=1, memory_mib=512, disk_gb=4)
    image = Image.objects.create(volume_name=IMAGE_VOLUME, name="bench image")
    ImagePlacement.objects.create(image=image, node=node, ready=True)  # uploaded above
    user = User.objects.create_user(username="bench", password=BENCH_PASSWORD)
    return plan, image, user, node


def sign_in(client, user) -> None:
    """Signed in as if the password was just typed (deleting a VM asks for it again otherwise)."""
    from accounts import reauth

    client.force_login(user)
    session = client.session
    session[reauth.CONFIRMED_AT] = time.time() + 24 * 3600  # recent for the whole run
    session.save()


def start_vm(vm) -> None:
    """Make the VM's disk and seed and start its domain directly through the hypervisor door."""
    from vms import provisioning
    from vms.tasks import domain_spec

    with hypervisor.connect(vm.node.uri) as session:
        provisioning.make_disk(session, vm)
        provisioning.make_seed(session, vm, {})
        session.define_domain(domain_spec(vm))
        session.start(vm.domain_name)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_process(name: str, command: list[str], ready: str, env: dict | None = None) -> subprocess.Popen:
    log_path = VAR / f"bench-{name}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env or os.environ.copy(), stdout=log, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 60
    while ready not in log_path.read_text():
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise SystemExit(f"{name} did not start; see {log_path}")
        time.sleep(0.1)
    return process


def stop_process(process: subprocess.Popen | None) -> None:
    if process is not None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def start_worker() -> subprocess.Popen:
    return start_process(
        "worker",
        [str(BIN / "celery"), "-A", "kvmpanel", "worker", "-Q", f"default,node.{NODE}", "--concurrency", "2",
         "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat",
         "--hostname", f"bench-{TAG}@%h"],
        "ready.",
    )  # fmt: skip


def cleanup() -> None:
    with hypervisor.connect(URI) as node:
        for name in node.domain_names():
            if not name.startswith("bench-"):
                continue
            try:
                if any(pool == POOL for pool, _ in xml.domain_volumes(node.domain_xml(name))):
                    node.undefine(name)
            except hypervisor.HypervisorError:
                pass
        for name in node.filter_names():  # VMs' traffic filters, should a run stop half-way
            if name.startswith("bench-kvmpanel-"):
                node.delete_filter(name)
        try:
            for volume in node.volume_names(POOL):
                node.delete_volume(POOL, volume)
            node.delete_pool(POOL)
            node.delete_network(NETWORK)
        except hypervisor.NotFound:
            pass
    remove_database()


def remove_database() -> None:
    """The bench database with its WAL files, closed first so that none is left behind."""
    from django.db import connections

    connections.close_all()
    for suffix in ("", "-wal", "-shm"):
        (VAR / f"bench.sqlite3{suffix}").unlink(missing_ok=True)
