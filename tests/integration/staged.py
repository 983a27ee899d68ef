"""A staged production install (scripts/install.sh --prefix) and its processes, run the way systemd would.

systemd is not PID 1 where the tests run, so the units the install wrote are read here and their
commands started as systemd would start them: the command line with systemd's `$$` and `${VAR}`,
the environment (Environment=, then EnvironmentFile=), the working directory and the unit's user.
What this cannot do (the sandbox settings, Restart=) is checked by `systemd-analyze verify` instead.
"""

import contextlib
import dataclasses
import hashlib
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "scripts" / "install.sh"
# The name the staged panel is served under; the tests' Chromium resolves it to 127.0.0.1.
DOMAIN = "kvmpanel.test"
USER = "kvmpaneltest"  # also its PostgreSQL role and database


@dataclasses.dataclass
class Run:
    output: str
    seconds: float


@dataclasses.dataclass
class Unit:
    """A systemd unit file as systemd reads it: sections of keys, each with its values in order."""

    name: str
    sections: dict[str, dict[str, list[str]]]

    @classmethod
    def read(cls, path: Path) -> "Unit":
        sections: dict[str, dict[str, list[str]]] = {}
        current = None
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                current = sections.setdefault(line.strip("[]"), {})
            else:
                key, _, value = line.partition("=")
                current.setdefault(key.strip(), []).append(value.strip())
        return cls(path.name, sections)

    def get(self, key: str, section: str = "Service", default: str = "") -> str:
        values = self.sections.get(section, {}).get(key)
        return values[-1] if values else default

    def words(self, key: str, section: str = "Unit") -> list[str]:
        return [word for value in self.sections.get(section, {}).get(key, []) for word in value.split()]

    def command(self, environment: dict[str, str]) -> list[str]:
        """ExecStart= as systemd runs it: split into words, `${VAR}` from the environment, `$$` a `$`."""

        def expand(word: str) -> str:
            word = re.sub(r"(?<!\$)\$\{(\w+)\}", lambda m: environment.get(m.group(1), ""), word)
            return word.replace("$$", "$")

        return [expand(word) for word in shlex.split(self.get("ExecStart"))]


def root_shell_environment() -> dict[str, str]:
    """What an operator's root shell has: none of the test run's own settings (its database, its
    DJANGO_SETTINGS_MODULE...)."""
    keep = ("PATH", "LANG", "HOME", "TERM", "PIP_CERT", "PIP_FIND_LINKS", "PIP_DEFAULT_TIMEOUT")
    return {name: os.environ[name] for name in keep if name in os.environ}


def read_environment_file(path: Path) -> dict[str, str]:
    """KEY=value lines, as systemd's EnvironmentFile= and the shell read the ones the install writes."""
    settings = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, value = line.partition("=")
        words = shlex.split(value)
        settings[key.strip()] = words[0] if words else ""
    return settings


class StagedInstall:
    """scripts/install.sh under a prefix of its own, with its own ports; removed with everything it made."""

    def __init__(self, prefix: Path, ports: dict[str, int], script: Path = INSTALL, environment=None):
        self.prefix = prefix
        self.ports = ports
        self.script = script  # the install command of this checkout, or of another (a clone)
        self.environment = {**root_shell_environment(), **(environment or {})}
        self.runs: list[Run] = []

    @property
    def env_file(self) -> Path:
        return self.prefix / "etc/kvmpanel/kvmpanel.env"

    @property
    def unit_dir(self) -> Path:
        return self.prefix / "etc/systemd/system"

    @property
    def manage_command(self) -> Path:
        return self.prefix / "opt/kvmpanel/bin/kvmpanel-manage"

    @property
    def url(self) -> str:
        return f"https://{DOMAIN}:{self.ports['https']}"

    def options(self) -> list[str]:
        return [
            f"--prefix={self.prefix}", f"--user={USER}", f"--domain={DOMAIN}", "--listen=127.0.0.1",
            f"--https-port={self.ports['https']}", f"--http-port={self.ports['http']}",
            f"--web-port={self.ports['web']}", f"--console-port={self.ports['console']}",
            f"--redis-port={self.ports['redis']}", "--no-local-node",
        ]  # fmt: skip

    def install(self, *options: str, check: bool = True) -> Run:
        """Run the install command (with this install's options, or the ones given) and time it."""
        started = time.monotonic()
        result = subprocess.run(
            ["bash", str(self.script), *(options or self.options())],
            capture_output=True,
            text=True,
            timeout=1800,
            env=self.environment,
        )
        run = Run(result.stdout + result.stderr, time.monotonic() - started)
        if check:
            assert result.returncode == 0, run.output
        self.runs.append(run)
        return run

    def settings(self) -> dict[str, str]:
        return read_environment_file(self.env_file)

    def add_setting(self, key: str, value: str) -> None:
        """What an operator does: a line of their own in the environment file."""
        with self.env_file.open("a") as handle:
            handle.write(f"{key}={value}\n")

    def manage(self, *args: str) -> subprocess.CompletedProcess:
        """kvmpanel-manage: manage.py as the panel's user with the production settings."""
        return subprocess.run([str(self.manage_command), *args], capture_output=True, text=True, timeout=300)

    def units(self) -> list[Path]:
        return sorted(self.unit_dir.glob("kvmpanel*"))

    def unit(self, name: str) -> Unit:
        return Unit.read(self.unit_dir / name)

    def snapshot(self) -> list[tuple]:
        """Every file and folder of the install: path, mode, owner, modification time, content."""
        entries = []
        for path in sorted(self.prefix.rglob("*")):
            info = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
            entries.append(
                (str(path), info.st_mode, info.st_uid, info.st_gid, info.st_size, info.st_mtime_ns, digest)
            )
        return entries

    def remove(self) -> None:
        """Everything the install made: the files, the database and its role, the users."""
        remove_install(self.prefix)


def remove_install(prefix: Path | None) -> None:
    for sql in (f"DROP DATABASE IF EXISTS {USER} WITH (FORCE)", f"DROP ROLE IF EXISTS {USER}"):
        subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-q", "-c", sql], cwd="/", check=False)
    for user in (USER, f"{USER}-redis"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(user)
            subprocess.run(["userdel", user], check=True)
    if prefix is not None:
        shutil.rmtree(prefix, ignore_errors=True)


def user_reaches_libvirt(user: str) -> tuple[bool, str]:
    """Whether `user` may manage qemu:///system here (through polkit and the libvirt group)."""
    result = subprocess.run(
        ["runuser", "-u", user, "--", "virsh", "-c", "qemu:///system", "version"],
        capture_output=True,
        text=True,
        cwd="/",
        timeout=30,
    )
    return result.returncode == 0, (result.stderr or result.stdout).strip()


@contextlib.contextmanager
def started_unit(install: StagedInstall, name: str, log_dir: Path, ready: str, as_root_reason: str = ""):
    """Start one unit's command as systemd would; stop it (SIGTERM, as systemctl stop) at the end.

    `as_root_reason`: why this unit runs as root here instead of its User= (said in the log).
    """
    unit = install.unit(name)
    environment = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    for assignment in unit.sections["Service"].get("Environment", []):
        environment.update(word.split("=", 1) for word in shlex.split(assignment))
    if unit.get("EnvironmentFile"):
        environment.update(read_environment_file(Path(unit.get("EnvironmentFile"))))
    user = unit.get("User")
    identity = {}
    if user and not as_root_reason:
        account = pwd.getpwnam(user)
        identity = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": _groups_of(user)}
        environment.update({"HOME": account.pw_dir, "USER": user, "LOGNAME": user})
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"staged-{name}-{os.getpid()}.log"
    with open(log_path, "w") as log:
        if as_root_reason:
            log.write(f"[test] running as root instead of {user}: {as_root_reason}\n")
            log.flush()
        process = subprocess.Popen(
            unit.command(environment),
            cwd=unit.get("WorkingDirectory") or "/",
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **identity,
        )
    try:
        deadline = time.monotonic() + 90
        while ready not in log_path.read_text(errors="replace"):
            assert process.poll() is None, f"{name} ended ({process.returncode}); see {log_path}"
            assert time.monotonic() < deadline, f"{name} did not get ready; see {log_path}"
            time.sleep(0.2)
        yield process
    finally:
        stop(process)


def _groups_of(user: str) -> list[int]:
    return [gid for gid in os.getgrouplist(user, pwd.getpwnam(user).pw_gid)]


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the process group (as systemctl stop does to the unit's cgroup), then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


@contextlib.contextmanager
def staged_nginx(install: StagedInstall, log_dir: Path):
    """nginx with the install's site, under the install's prefix (nginx -p PREFIX -c its nginx.conf)."""
    conf = install.prefix / "etc/nginx/nginx.conf"
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"staged-nginx-{os.getpid()}.log", "w") as log:
        process = subprocess.Popen(
            ["nginx", "-p", f"{install.prefix}/", "-c", str(conf), "-g", "daemon off;"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for_port(install.ports["https"], process)
        yield process
    finally:
        stop(process)


def _wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, f"the process ended ({process.returncode})"
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        assert time.monotonic() < deadline, f"nothing listens on {port}"
        time.sleep(0.2)


def world(install: StagedInstall, verb: str, *args: str) -> str:
    """Run tests/integration/production_world.py against the install's database (with its settings)."""
    environment = {
        **os.environ,
        **install.settings(),
        "DJANGO_SETTINGS_MODULE": "kvmpanel.settings",
        # The test process's own folder: nothing root-owned lands in the panel's.
        "KVMPANEL_VAR_DIR": str(ROOT / "var" / "staged-world"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "tests.integration.production_world", verb, *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout
