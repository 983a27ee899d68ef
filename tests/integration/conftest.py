"""Real parts: the local libvirtd, Redis, a Celery worker process, and Chromium.

Everything made in libvirt is named test-… and removed at the end, also on failure.
"""

import base64
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from django.conf import settings

import hypervisor
from hypervisor import xml
from nodes.models import Node
from nodes.registration import bridge_name, register_node

from ..factories import make_image, make_plan, make_user, make_vm

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "test-output"
LOCAL_URI = "qemu:///system"
GUEST_IMAGE = Path(os.environ.get("KVMPANEL_GUEST_IMAGE", "/var/cache/kvmpanel/images/debian-12-cloud.qcow2"))
TEST_NODE = "test-node"
SECOND_TEST_NODE = "test-node-2"  # a second node's queue, served by the same worker
IMAGE_VOLUME = "test-image-debian-12.qcow2"


@pytest.fixture(scope="session")
def libvirt_env():
    """A storage pool and an isolated network of the test session's own, with the guest image in the pool."""
    assert GUEST_IMAGE.exists(), f"{GUEST_IMAGE} is missing: run scripts/setup.sh first"
    tag = secrets.token_hex(3)
    env = {
        "pool": f"test-kvmpanel-{tag}",
        "pool_path": f"/var/lib/kvmpanel/test-pools/{tag}",
        "network": f"test-kvmpanel-{tag}",
    }
    try:
        with hypervisor.connect(LOCAL_URI) as session:
            session.ensure_pool(env["pool"], env["pool_path"])
            session.ensure_network(env["network"], bridge_name(env["network"]))
            session.upload_volume(env["pool"], IMAGE_VOLUME, str(GUEST_IMAGE))
        yield env
    finally:
        remove_libvirt_env(env)


def remove_libvirt_env(env: dict) -> None:
    """Remove our domains (test-, panel-made, with disks in our pool), volumes, pool and network."""
    with hypervisor.connect(LOCAL_URI) as session:
        for name in session.domain_names():
            if not name.startswith("test-"):
                continue
            with contextlib.suppress(hypervisor.NotOurs, hypervisor.NotFound):
                if any(pool == env["pool"] for pool, _ in xml.domain_volumes(session.domain_xml(name))):
                    session.remove_domain(name)  # however it is: running, stopped, transient
        with contextlib.suppress(hypervisor.NotFound):
            for volume in session.volume_names(env["pool"]):
                session.delete_volume(env["pool"], volume)
            session.delete_pool(env["pool"])
        with contextlib.suppress(hypervisor.NotFound):
            session.delete_network(env["network"])


def _database_url() -> str:
    """The URL of the test database, for the worker process."""
    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    credentials = ""
    if db.get("USER"):
        credentials = quote(db["USER"]) + (f":{quote(db['PASSWORD'])}" if db.get("PASSWORD") else "") + "@"
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{credentials}{db.get('HOST') or ''}{port}/{db['NAME']}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def process_env(django_db_setup, django_db_blocker):
    """The environment for the panel's own processes started by tests: test settings, test database."""
    with django_db_blocker.unblock():
        database_url = _database_url()
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "kvmpanel.test_settings",
        "DATABASE_URL": database_url,
        "KVMPANEL_FRESH_CONTENT_TYPES": "1",  # the tests' flushes renumber content types under them
        "KVMPANEL_CONSOLE_PORT": str(free_port()),
        # Shorter than the lifecycle test's boots: its Delete asks for the password again, as it
        # does for a user who signed in a while ago.
        "KVMPANEL_REAUTH_MINUTES": "1",
    }


@contextlib.contextmanager
def panel_process(name: str, command: list[str], env: dict, ready):
    """Run one of the panel's processes for the tests, logging to test-output/, stopped at the end."""
    OUTPUT.mkdir(exist_ok=True)
    log_path = OUTPUT / f"{name}-{os.getpid()}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_until(
            lambda: process.poll() is None and ready(log_path.read_text()), 60, f"{name} (see {log_path})"
        )
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


BIN = Path(sys.executable).parent
RUNNING: dict[str, subprocess.Popen] = {}  # the session's long-lived processes, for diagnostics


@pytest.fixture(scope="session")
def panel_server(process_env):
    """The panel's ASGI server (daphne: pages and websockets) on a free port."""
    port = free_port()
    command = [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "kvmpanel.asgi:application"]
    with panel_process("daphne", command, process_env, lambda log: "Listening on" in log) as server:
        RUNNING["daphne"] = server
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def console_bridge(process_env):
    """The VNC console bridge (websockify with the panel's token plugin)."""
    port = process_env["KVMPANEL_CONSOLE_PORT"]
    command = [sys.executable, "manage.py", "console_bridge", "--port", port]
    with panel_process("console-bridge", command, process_env, lambda log: "console bridge on" in log):
        yield int(port)


@pytest.fixture
def node_monitor(process_env, node):
    """The node monitor: libvirt events into VM rows and browser pushes.

    For one test at a time: it watches every node in the database, and other
    tests' nodes are not its business.
    """
    command = [sys.executable, "manage.py", "node_monitor"]
    with panel_process("node-monitor", command, process_env, lambda log: "node monitor running" in log):
        yield


@pytest.fixture(scope="session")
def celery_worker(process_env):
    """A real Celery worker process on the test database and the test Redis database."""
    redis.Redis.from_url(settings.REDIS_URL).flushdb()  # no stale tasks from an earlier run
    command = [
        str(BIN / "celery"),
        "-A", "kvmpanel", "worker",
        "-Q", f"default,node.{TEST_NODE},node.{SECOND_TEST_NODE}",
        "--concurrency", "2",
        "--loglevel", "INFO",
        "--hostname", f"test-worker-{os.getpid()}@%h",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    with panel_process("celery-worker", command, process_env, lambda log: "ready." in log) as worker:
        yield worker


def _wait_until(condition, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def wait_until():
    return _wait_until


def wait_for_js(page, expression: str, arg=None, timeout: int = 10_000, interval: float = 0.1):
    """Wait until `expression` (a JavaScript expression or function, given `arg`) is true in the page.

    Playwright's own wait_for_function evaluates its predicate with eval() inside the page, which the
    panel's Content-Security-Policy refuses; page.evaluate() is not subject to it.
    """
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(expression, arg):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} ms waiting for {expression}")
        time.sleep(interval)


# The page's websocket is open and its catch-up refresh done (static/js/live.js): safe to click. A click
# right after a page load or a live swap waits for this, so no refresh replaces what is being clicked.
SETTLED = (
    "document.documentElement.dataset.live === 'connected' && !document.documentElement.dataset.refreshing"
)


def settled(page, timeout: int = 10_000):
    wait_for_js(page, SETTLED, timeout=timeout)


@pytest.fixture
def node(transactional_db, libvirt_env) -> Node:
    """The local libvirtd as a panel node, with the test pool and network."""
    return register_node(
        TEST_NODE,
        LOCAL_URI,
        pool_name=libvirt_env["pool"],
        pool_path=libvirt_env["pool_path"],
        network_name=libvirt_env["network"],
    )


@pytest.fixture
def demo_image(node):
    return make_image(name="Debian 12 (test)", volume_name=IMAGE_VOLUME, min_disk_gb=2, on=[node])


@pytest.fixture
def nano_plan(transactional_db):
    return make_plan(name="Nano", vcpus=1, memory_mib=512, disk_gb=4)


@pytest.fixture
def customer(transactional_db):
    return make_user("carol")


def virsh(*args: str, uri: str = LOCAL_URI) -> subprocess.CompletedProcess:
    """An independent witness: what libvirt itself says, through its own command-line client."""
    return subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True, timeout=30)


def agent(vm, command: str, arguments: dict | None = None, timeout: int = 30, uri: str = LOCAL_URI):
    """One guest agent command through virsh (an independent witness); None while it does not answer."""
    request = {"execute": command, **({"arguments": arguments} if arguments else {})}
    result = virsh(
        "qemu-agent-command", vm.domain_name, json.dumps(request), "--timeout", str(timeout), uri=uri
    )
    return json.loads(result.stdout)["return"] if result.returncode == 0 and result.stdout.strip() else None


def in_guest(vm, script: str, uri: str = LOCAL_URI) -> str:
    """Run a shell line in the guest (guest-exec) and return what it printed."""
    command = {"path": "/bin/sh", "arg": ["-c", script], "capture-output": True}
    started = agent(vm, "guest-exec", command, uri=uri)
    assert started, "the guest agent did not run the command"
    for _ in range(100):
        status = agent(vm, "guest-exec-status", {"pid": started["pid"]}, uri=uri)
        if status and status.get("exited"):
            return base64.b64decode(status.get("out-data", "")).decode()
        time.sleep(0.2)
    raise AssertionError(f"{script!r} did not finish in the guest")


def guest_view(vm, uri: str = LOCAL_URI) -> str:
    """What a guest that stopped answering is doing, for a failure's message: what it says through its
    agent (a counter's last tick, uptime, where a tick loop waits) and what its node says. A slow guest
    and a wedged one look alike from outside: the vCPU's busy time over 5 s, RIP/RFL sampled (the same
    two addresses with RFL's interrupt flag off is a spin) and the interrupt controllers tell them apart."""
    try:
        said = in_guest(
            vm, "cat /run/tick /proc/uptime; ps -eo pid,stat,wchan:24,args | grep [t]ick", uri=uri
        )
    except (AssertionError, subprocess.TimeoutExpired) as no_answer:
        said = str(no_answer)

    def virsh_says(*args: str) -> str:
        answer = virsh(*args, uri=uri)
        return (answer.stdout + answer.stderr).strip()

    def monitor(command: str) -> str:
        return virsh_says("qemu-monitor-command", "--hmp", vm.domain_name, command)

    def vcpu_seconds() -> float:
        found = re.search(r"vcpu\.0\.time=(\d+)", virsh_says("domstats", "--vcpu", vm.domain_name))
        return int(found.group(1)) / 1e9 if found else float("nan")

    def where() -> str:
        return " ".join(w for w in monitor("info registers").split() if w.startswith(("RIP=", "RFL=")))

    state = virsh_says("domstate", "--reason", vm.domain_name)
    before, samples = vcpu_seconds(), []
    for _ in range(5):
        samples.append(where())
        time.sleep(1)
    busy = vcpu_seconds() - before
    controllers = "; ".join(monitor(command) for command in ("info cpus", "info lapic", "info pic"))
    load = Path("/proc/loadavg").read_text().strip()
    return (
        f"on {uri}: domain {state}, QEMU: {monitor('info status')}; vCPU busy {busy:.2f} s of about 5 s "
        f"(host load {load}); {' | '.join(samples)}; {controllers}; in the guest: {said}"
    )


def nudge_serial_port(vm, uri: str = LOCAL_URI) -> str:
    """Write one NUL (shown as nothing) to the guest's ttyS0 from inside, through the agent; returns the
    port's counters. Seen here under emulation: an idle guest whose serial port had lost an interrupt,
    typed characters waiting in the UART and never read (its `rx` count still), until the guest wrote
    to the port: the driver's write sets the UART's interrupt enable register, QEMU raises the
    interrupt again, and the guest reads what waited. Nothing outside the guest can do that."""
    return in_guest(vm, "printf '\\0' > /dev/ttyS0; grep '^0:' /proc/tty/driver/serial", uri=uri).strip()


def domain_state(name: str) -> str:
    result = virsh("domstate", name)
    return result.stdout.strip() if result.returncode == 0 else "absent"


def serial_text(name: str) -> str:
    path = Path(xml.serial_log_path(name))
    return path.read_text(errors="replace") if path.exists() else ""


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Only loopback: the page must never reach anything else.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1",
]


@contextlib.contextmanager
def no_link_local_addresses_on_new_devices():
    """Keep the host's addresses still while VMs start, for the browser's sake.

    Each VM's tap device gets an IPv6 link-local address as it comes up. Chromium,
    running on this same host (a real customer's browser never does), takes that
    for a network change and aborts every request in flight with
    net::ERR_NETWORK_CHANGED, about two seconds later. Seen in the net log: a
    half-loaded console page. New devices get no link-local address while the
    browser runs; the host's setting is put back afterwards.
    """
    setting = Path("/proc/sys/net/ipv6/conf/default/addr_gen_mode")
    before = setting.read_text()
    setting.write_text("1")  # IN6_ADDR_GEN_MODE_NONE
    try:
        yield
    finally:
        setting.write_text(before)


@pytest.fixture(scope="session")
def playwright_session():
    """Playwright, started once for every browser of the session (Debian's Chromium, never a download)."""
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the ORM calls
    # tests make in between are still plain synchronous calls.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    OUTPUT.mkdir(exist_ok=True)
    # The kernel's address events are kept, so that a request the browser dropped can be matched
    # with what changed on the host (see below).
    with (
        no_link_local_addresses_on_new_devices(),
        open(OUTPUT / "ip-monitor.log", "w") as ip_log,
        subprocess.Popen(["ip", "-ts", "monitor", "address", "link"], stdout=ip_log) as ip_monitor,
        sync_playwright() as playwright,
    ):
        yield playwright
        ip_monitor.terminate()


@pytest.fixture(scope="session")
def chromium(playwright_session, tmp_path_factory):
    """Debian's Chromium driven by Playwright, for the panel served by daphne on 127.0.0.1."""
    # The net log is kept, so that a request the browser dropped can be explained.
    net_log = f"--log-net-log={OUTPUT / 'chromium-netlog.json'}"
    context = playwright_session.chromium.launch_persistent_context(
        str(tmp_path_factory.mktemp("chromium-profile")),
        executable_path="/usr/bin/chromium",
        headless=True,
        args=[*CHROMIUM_ARGS, net_log],
        viewport={"width": 1280, "height": 900},
    )
    yield context
    context.close()


def pytest_collection_modifyitems(config, items):
    """Browser tests last. Once the session's Chromium runs, Playwright keeps an event loop in the
    main thread, where async_to_sync (publishing a change to open pages) then refuses to run: a test
    that calls actions.* directly after any browser test would fail."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)  # stable: order kept


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.call_failed = report.failed
    return report


@pytest.fixture
def page(chromium, request):
    page = chromium.new_page()
    yield page
    OUTPUT.mkdir(exist_ok=True)
    if getattr(request.node, "call_failed", False) and "daphne" in RUNNING:
        # What was the server doing? Every thread's stack goes to its log (see kvmpanel/asgi.py).
        RUNNING["daphne"].send_signal(signal.SIGUSR1)
    page.screenshot(path=str(OUTPUT / f"{request.node.name}-last.png"), full_page=True)
    page.close()
    chromium.clear_cookies()


@pytest.fixture
def sign_in(panel_server):
    def sign_in(page, user, password=None):
        page.goto(f"{panel_server}/accounts/login/")
        page.fill("#id_username", user.username)
        page.fill("#id_password", password or f"{user.username}-pass-123")
        page.click("button[type=submit]")
        page.wait_for_url(f"{panel_server}/vms/")

    return sign_in


def fill_create_form(page, plan, image, hostname: str, password: str, key=None, user_data: str = ""):
    """On the portal (signed in): Create VM, the form filled, Create pressed."""
    page.get_by_role("link", name="Create VM").first.click()
    page.select_option("#id_plan", label=str(plan))
    page.select_option("#id_image", label=image.name)
    page.fill("#id_hostname", hostname)
    page.fill("#id_password", password)
    if key is not None:
        page.check(f"input[name=ssh_keys][value='{key.pk}']")
    if user_data:
        page.fill("#id_user_data", user_data)
    page.get_by_role("button", name="Create").click()


def sign_in_as_staff(page, panel_server: str, username: str, path: str):
    """A new superuser signs in through the panel's sign-in (the backoffice has none) and lands on `path`."""
    operator = make_user(username, is_staff=True, is_superuser=True)
    page.context.clear_cookies()
    page.goto(f"{panel_server}/accounts/login/?next={path}")
    page.fill("#id_username", operator.username)
    page.fill("#id_password", f"{username}-pass-123")
    page.click("main button[type=submit]")
    page.wait_for_url(f"**{path}")
    return operator


@pytest.fixture
def stopped_vm(node, customer, demo_image, nano_plan):
    """A customer's VM with its disk, seed and domain made directly, stopped; removed afterwards."""
    from vms import provisioning
    from vms.tasks import _remove_domain_and_disks, domain_spec

    vm = make_vm(customer, node=node, image=demo_image, plan=nano_plan, hostname="stopped-1", state="stopped")
    with hypervisor.connect(node.uri) as session:
        provisioning.make_disk(session, vm)
        provisioning.make_seed(session, vm, {})
        session.define_domain(domain_spec(vm))
    yield vm
    vm.refresh_from_db()
    with hypervisor.connect(node.uri) as session:
        _remove_domain_and_disks(session, vm)  # the domain and the VM's own volumes, rescue ones too


def finished(operation, wait_until, timeout=120):
    """Wait for the operation to end, and check it succeeded."""
    wait_until(lambda: not type(operation).objects.get(pk=operation.pk).is_active, timeout, operation.kind)
    operation.refresh_from_db()
    assert operation.status == "succeeded", operation.error
    return operation


@pytest.fixture(scope="module")
def guarded():
    """The network tests' unreachable routes for the test prefixes (tests/netbed.py), for one module."""
    from .. import netbed

    with netbed.guarded():
        yield


@pytest.fixture
def ssh_key(tmp_path, customer):
    """A key pair of the customer's: the public half in their account, the private one for ssh."""
    from accounts.models import SSHKey
    from accounts.sshkeys import parse_public_key

    path = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    parsed = parse_public_key(path.with_suffix(".pub").read_text().strip())
    key = SSHKey.objects.create(
        user=customer, name="laptop", public_key=parsed.public_key, fingerprint=parsed.fingerprint
    )
    return key, path
