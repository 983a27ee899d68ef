"""A panel of its own for fault injection: its own Redis (with AOF, on a spare port), the test
PostgreSQL database reached through a TCP proxy the test can cut, and the panel's real processes
(daphne, a Celery worker, Celery beat, the node monitor) on the real libvirtd.

Nothing here touches the machine's own Redis or PostgreSQL server: the Redis is started here and
killed here; the database is pytest's test database, and only the proxy in front of it is cut.
Everything made in libvirt is named test-faults-… and removed afterwards, also on failure.
"""

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from django.db import connection

import hypervisor

from ..integration.conftest import OUTPUT, ROOT, free_port, remove_libvirt_env

BIN = Path(sys.executable).parent
LOCAL_URI = "qemu:///system"
# Short on purpose, so a fault costs seconds here; production defaults are in settings.py.
TIMINGS = {
    "KVMPANEL_OPERATION_LEASE_SECONDS": "5",
    "KVMPANEL_SWEEP_SECONDS": "1",
    "KVMPANEL_OPERATION_RESEND_SECONDS": "3",
    "KVMPANEL_OPERATION_RETRY_SECONDS": "1",
    "KVMPANEL_DATABASE_OUTAGE_SECONDS": "60",
    "KVMPANEL_RECONCILE_SECONDS": "5",
    "KVMPANEL_MONITOR_RESCAN_SECONDS": "1",
}


def wait_until(condition, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# --- Redis of our own -------------------------------------------------------------------------------


class RedisServer:
    """A redis-server with the append-only file on, in a folder of ours: kill it and start it again."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None

    def start(self) -> None:
        log = open(self.folder / "redis.log", "a")  # noqa: SIM115 (kept open for the server)
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_until(self.answers, 10, "redis to answer")

    def answers(self) -> bool:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as probe,
        ):
            probe.sendall(b"PING\r\n")
            return probe.recv(16).startswith(b"+PONG")
        return False

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def command(self, *args: str) -> str:
        return subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, timeout=10
        ).stdout.strip()


# --- a TCP proxy in front of PostgreSQL, to cut the database off ------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:<port> to PostgreSQL. `cut()` drops every connection and refuses new ones
    (they are closed at once, as a server that went away would), `heal()` lets them through again."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.refusing = threading.Event()
        self.open: set[socket.socket] = set()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True, name="db-proxy").start()

    def cut(self) -> None:
        self.refusing.set()
        with self.lock:
            for sock in list(self.open):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # fails on a socket already shut: close it anyway
                sock.close()
            self.open.clear()

    def heal(self) -> None:
        self.refusing.clear()

    def _accept(self) -> None:
        while True:
            client, _ = self.listener.accept()
            if self.refusing.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.close()
            with self.lock:
                self.open.discard(sock)


# --- the panel's processes --------------------------------------------------------------------------


class PanelProcess:
    """One of the panel's processes, run as the dev stack runs it: under scripts/respawn, which starts
    it again when it dies (the Celery worker does die when Redis goes away under it: kombu's
    "Unrecoverable error" on a closed channel). Logs go to test-output/faults-<name>.log."""

    def __init__(self, name: str, command: list[str], env: dict, ready: str):
        self.name, self.command, self.env, self.ready = name, command, env, ready
        self.log_path = OUTPUT / f"faults-{name}.log"
        self.supervisor = None

    def start(self) -> None:
        OUTPUT.mkdir(exist_ok=True)
        offset = self._log_size()
        with open(self.log_path, "a") as log:
            self.supervisor = subprocess.Popen(
                [str(ROOT / "scripts/respawn"), *self.command],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_ready(offset)

    def wait_ready(self, offset: int) -> None:
        wait_until(
            lambda: self.supervisor.poll() is None and self.ready in self._log_since(offset),
            60,
            f"{self.name} to start (see {self.log_path})",
        )

    def _log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def _log_since(self, offset: int) -> str:
        with open(self.log_path, errors="replace") as log:
            log.seek(offset)
            return log.read()

    def kill(self) -> None:
        """The fault: SIGKILL the process and all its children (a Celery worker's pool), as the OOM
        killer or a crash would. Its supervisor starts it again; this waits until it is ready."""
        offset = self._log_size()
        (main,) = _children(self.supervisor.pid)
        for pid in [*_descendants(main), main]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.wait_ready(offset)

    def stop(self) -> None:
        if self.supervisor is None or self.supervisor.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.supervisor.pid, signal.SIGTERM)
        try:
            self.supervisor.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.supervisor.pid, signal.SIGKILL)
            self.supervisor.wait(10)


def _children(pid: int) -> list[int]:
    """The running children of `pid` (the supervisor's sleep between restarts excluded)."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(child) for child in found if _command_of(int(child)) != "sleep"]


def _descendants(pid: int) -> list[int]:
    children = _children(pid)
    return children + [grandchild for child in children for grandchild in _descendants(child)]


def _command_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except FileNotFoundError:
        return ""


class FaultPanel:
    """Everything a fault test needs: the processes, the Redis, the proxy, the pause file, the API."""

    def __init__(self, folder: Path, node_name: str, database: dict):
        self.folder = folder
        self.redis = RedisServer(folder)
        self.proxy = TcpProxy((database["HOST"] or "127.0.0.1", int(database["PORT"] or 5432)))
        self.pause_file = folder / "pause"
        self.web_port = free_port()
        self.base = f"http://127.0.0.1:{self.web_port}"
        user = database.get("USER") or "root"
        env = {
            **os.environ,
            **TIMINGS,
            "DJANGO_SETTINGS_MODULE": "kvmpanel.test_settings",
            "DATABASE_URL": f"postgres://{user}@127.0.0.1:{self.proxy.port}/{database['NAME']}",
            "TEST_REDIS_URL": self.redis.url,
            "KVMPANEL_PAUSE_FILE": str(self.pause_file),
            "KVMPANEL_API_RATE_CHANGES": "100000/minute",
            "KVMPANEL_API_RATE_USER": "100000/minute",
            "RESPAWN_STEADY_SECONDS": "2",  # the tests kill processes seconds after they started
        }
        celery = str(BIN / "celery")
        daphne = [
            str(BIN / "daphne"),
            "-b",
            "127.0.0.1",
            "-p",
            str(self.web_port),
            "kvmpanel.asgi:application",
        ]
        self.web = PanelProcess("web", daphne, env, "Listening on")
        self.worker = PanelProcess(
            "worker",
            [celery, "-A", "kvmpanel", "worker", "-Q", f"default,node.{node_name}", "--concurrency", "3",
             "--loglevel", "INFO", "--hostname", f"faults-{os.getpid()}@%h",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            env, "ready.",
        )  # fmt: skip
        self.beat = PanelProcess(
            "beat",
            [celery, "-A", "kvmpanel", "beat", "--loglevel", "INFO", "-s", str(folder / "beat-schedule")],
            env, "beat: Starting",
        )  # fmt: skip
        self.monitor = PanelProcess(
            "monitor", [sys.executable, "manage.py", "node_monitor"], env, "node monitor running"
        )
        self.api = requests.Session()
        self.api.headers["Host"] = "127.0.0.1"

    def start(self) -> None:
        self.redis.start()
        for process in (self.web, self.worker, self.beat, self.monitor):
            process.start()

    def stop(self) -> None:
        for process in (self.monitor, self.beat, self.worker, self.web):
            process.stop()
        self.redis.stop()

    # --- stopping a process at a named step (vms.engine.checkpoint) -----------------------------

    def pause_at(self, step: str, seconds: float | None = None) -> None:
        for leftover in self.folder.glob("pause*"):
            leftover.unlink()
        self.pause_file.write_text(step if seconds is None else f"{step} {seconds}")
        self.pausing_at = step

    def wait_paused(self, timeout: float = 60) -> int:
        reached = self.folder / "pause.reached"
        wait_until(reached.exists, timeout, f"a process to reach {self.pausing_at}")
        return int(reached.read_text())


def _alone_in_the_database() -> bool:
    with connection.cursor() as cursor:
        others = "datname = current_database() AND pid <> pg_backend_pid()"
        cursor.execute(f"SELECT count(*) FROM pg_stat_activity WHERE {others}")  # noqa: S608 (no input)
        return cursor.fetchone()[0] == 0


def _end_other_sessions() -> None:
    with connection.cursor() as cursor:
        others = "datname = current_database() AND pid <> pg_backend_pid()"
        cursor.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {others}")  # noqa: S608


@pytest.fixture(scope="module")
def libvirt_pool():
    """A pool and an isolated network of our own on the real libvirtd; removed with all in them."""
    tag = secrets.token_hex(3)
    env = {
        "pool": f"test-faults-{tag}",
        "pool_path": f"/var/lib/kvmpanel/test-pools/faults-{tag}",
        "network": f"test-faults-{tag}",
    }
    from nodes.registration import bridge_name

    try:
        with hypervisor.connect(LOCAL_URI) as session:
            session.ensure_pool(env["pool"], env["pool_path"])
            session.ensure_network(env["network"], bridge_name(env["network"]))
        yield env
    finally:
        remove_libvirt_env(env)


@pytest.fixture(scope="module")
def fault_panel(django_db_setup, django_db_blocker, libvirt_pool, tmp_path_factory):
    """The whole panel, started once for the module, on the test database (left empty afterwards)."""
    if connection.vendor != "postgresql":
        pytest.skip("the fault-injection suite cuts the database's TCP connection: run it on PostgreSQL")
    node_name = f"test-faults-{os.getpid()}"
    with django_db_blocker.unblock():
        panel = FaultPanel(tmp_path_factory.mktemp("faults"), node_name, connection.settings_dict)
        panel.node_name = node_name
        try:
            panel.start()
            yield panel
        finally:
            panel.stop()
            panel.proxy.cut()  # no connection of a dead process lingers into the database's teardown
            with contextlib.suppress(AssertionError):
                wait_until(_alone_in_the_database, 15, "the panel's connections to close")
            _end_other_sessions()  # whatever is left (a killed process's half-open one) must not block
            from django.core.management import call_command

            call_command("flush", interactive=False, verbosity=0)
