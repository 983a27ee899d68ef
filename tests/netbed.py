"""A safe place for guests' networks on one machine (the recipe in shared/NETWORK-TESTS.md).

    with netbed.guarded(tag):                    # unreachable routes for the test prefixes first
        with netbed.bridged(tag) as bed: ...     # a bridge with no uplink and a peer namespace on it
        with netbed.routed_node(tag) as node: ...  # a second libvirtd in its own network namespace,
                                                 # routing for its guests, with a peer on its uplink

Only 198.51.100.0/24, 203.0.113.0/24 and 2001:db8::/32 are used, never the documentation range of
this machine's own uplink. The root namespace never sends to them: everything that talks to a guest
runs in a peer namespace (`bed.run([...])`). Forwarding is switched on only inside the routed node's own
namespace, which has no link to the root namespace. Everything is named test-<tag>… and removed
on the way out, also after a failure.
"""

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

TEST_PREFIXES = ("198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
# Our unreachable routes carry a metric of their own, so another session's identical routes (same
# prefix, another metric) can come and go without taking ours along.
GUARD_METRIC = "4815"

# The bridged bed: the peer is the guests' router (gateway) on the bridge.
BRIDGED_V4 = ipaddress.ip_network("198.51.100.0/25")
BRIDGED_V6 = ipaddress.ip_network("2001:db8:15::/64")
PEER_V4 = "198.51.100.1"
PEER_V6 = "2001:db8:15::1"
# The routed bed: the node routes these blocks to its guests' taps; the peer sits on the node's uplink.
ROUTED_V4 = ipaddress.ip_network("198.51.100.128/25")
ROUTED_V6 = ipaddress.ip_network("2001:db8:16::/48")
UPLINK_NODE_V4, UPLINK_PEER_V4 = "203.0.113.2", "203.0.113.1"
UPLINK_NODE_V6, UPLINK_PEER_V6 = "2001:db8:ff::2", "2001:db8:ff::1"


def sh(*args: str, check: bool = True, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    """Run a command (an argument list, never a shell line); a failure says what the command said."""
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and done.returncode:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def _overlaps(value: str) -> bool:
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return any(
        network.overlaps(ipaddress.ip_network(p))
        for p in TEST_PREFIXES
        if network.version == ipaddress.ip_network(p).version
    )


def check_root_namespace() -> None:
    """Refuse to run when any address or (reachable) route of this machine overlaps the test prefixes.

    Devices named test-… are other test beds' own (a veth to a node's namespace, with no uplink, as
    shared/TWO-NODES.md builds for qemu+ssh): what they carry never leaves the machine."""
    for family in ("-4", "-6"):
        for link in json.loads(sh("ip", "-j", family, "addr").stdout):
            if link["ifname"].startswith("test-"):
                continue
            for info in link.get("addr_info", []):
                if _overlaps(f"{info['local']}/{info['prefixlen']}"):
                    raise RuntimeError(
                        f"{link['ifname']} has {info['local']}: the test prefixes are in use here"
                    )
        for route in json.loads(sh("ip", "-j", family, "route", "show", "table", "all").stdout):
            if route.get("type") in ("unreachable", "blackhole", "prohibit"):
                continue
            if route.get("dev", "").startswith("test-"):
                continue
            for key in ("dst", "gateway", "prefsrc"):
                if route.get(key) not in (None, "default") and _overlaps(route[key]):
                    raise RuntimeError(f"route {route} reaches the test prefixes: refusing to run")


@contextlib.contextmanager
def guarded():
    """Unreachable routes for every test prefix in the root namespace, before anything else."""
    check_root_namespace()
    added = []
    try:
        for prefix in TEST_PREFIXES:
            family = "-6" if ":" in prefix else "-4"
            sh("ip", family, "route", "replace", "unreachable", prefix, "metric", GUARD_METRIC)
            added.append((family, prefix))
        yield
    finally:
        for family, prefix in reversed(added):  # last, after everything that used them is gone
            sh("ip", family, "route", "del", "unreachable", prefix, "metric", GUARD_METRIC, check=False)


def ssh_command(key: Path, address: str, command: str, user: str = "debian") -> list[str]:
    """ssh to a guest with `key`, ready to run in a peer namespace (host keys are new for every guest)."""
    options = ["BatchMode=yes", "StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "LogLevel=ERROR",
               "ConnectTimeout=5"]  # fmt: skip
    return ["ssh", "-i", str(key), *(f"-o{option}" for option in options), f"{user}@{address}", command]


@dataclass
class Peer:
    """A network namespace of the test's own, from which guests are reached."""

    namespace: str

    def run(
        self, args: list[str], timeout: float = 60, check: bool = False, **kwargs
    ) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", self.namespace, *args, timeout=timeout, check=check, **kwargs)

    def ssh(self, key: Path, address: str, command: str, user: str = "debian", timeout: float = 20):
        """`command` over SSH with `key`, from the peer namespace (host keys are new for every guest)."""
        return self.run(ssh_command(key, address, command, user), timeout=timeout)

    def port_open(self, address: str, port: int = 22) -> bool:
        family = "-6" if ":" in address else "-4"
        probe = self.run(["nc", family, "-z", "-w", "2", address, str(port)], timeout=10)
        return probe.returncode == 0


def _add_peer(namespace: str, veth_outside: str) -> None:
    sh("ip", "netns", "add", namespace)
    sh("ip", "link", "add", veth_outside, "type", "veth", "peer", "name", "eth0", "netns", namespace)
    sh("ip", "-n", namespace, "link", "set", "lo", "up")
    sh("ip", "-n", namespace, "link", "set", "eth0", "up")


@dataclass
class BridgedBed(Peer):
    bridge: str = ""


@contextlib.contextmanager
def bridged(tag: str):
    """A bridge with no address and no uplink, and a peer namespace on it (the guests' router)."""
    bridge, veth, namespace = f"test-{tag}-br", f"test-{tag}-v0", f"test-{tag}-peer"
    try:
        sh("ip", "link", "add", bridge, "type", "bridge")
        # No IPv6 on the root side: a guest's router advertisement must never configure this host.
        Path(f"/proc/sys/net/ipv6/conf/{bridge}/disable_ipv6").write_text("1")
        sh("ip", "link", "set", bridge, "up")
        _add_peer(namespace, veth)
        Path(f"/proc/sys/net/ipv6/conf/{veth}/disable_ipv6").write_text("1")
        sh("ip", "link", "set", veth, "master", bridge, "up")
        sh("ip", "-n", namespace, "addr", "add", f"{PEER_V4}/{BRIDGED_V4.prefixlen}", "dev", "eth0")
        sh("ip", "-n", namespace, "addr", "add", f"{PEER_V6}/{BRIDGED_V6.prefixlen}", "dev", "eth0", "nodad")
        yield BridgedBed(namespace=namespace, bridge=bridge)
    finally:
        sh("ip", "netns", "del", namespace, check=False)
        sh("ip", "link", "del", veth, check=False)
        sh("ip", "link", "del", bridge, check=False)


@dataclass
class RoutedNode(Peer):
    """A libvirtd of its own in mount, network, PID and UTS namespaces (shared/TWO-NODES.md)."""

    pid: int = 0
    node_namespace: str = ""

    @property
    def uri(self) -> str:
        return f"qemu:///system?socket=/proc/{self.pid}/root/run/libvirt/libvirt-sock"

    def path(self, inside: str) -> Path:
        """A file of the node's private mounts, as seen from here."""
        return Path(f"/proc/{self.pid}/root{inside}")

    def in_node(self, args: list[str], **kwargs) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", self.node_namespace, *args, check=False, **kwargs)


_NODE_START = """
set -e
for dir in /run /var/lib/libvirt /var/cache/libvirt /var/log/libvirt; do mount -t tmpfs tmpfs "$dir"; done
# The host's probe of the QEMU binaries (the same binaries): without it the first call waits minutes.
cp -a "$CACHE/." /var/cache/libvirt/
mkdir -p /var/lib/libvirt/qemu /var/log/libvirt/qemu /var/cache/libvirt/qemu /run/libvirt
mount --bind "$ETC" /etc/libvirt
hostname "$NODE_HOSTNAME"
ip link set lo up
virtlogd -d
virtlockd -d
libvirtd -d $LIBVIRTD_ARGS
echo started > "$READY"
# PID 1 of the namespace inherits every QEMU (they daemonize): it must reap them, or libvirt waits for
# each destroyed domain's zombie for over a minute (seen with `sleep infinity` here).
exec python3 -c "$REAPER"
"""


def _tls_settings(folder: Path | None) -> str:
    """libvirtd.conf lines for a node that takes qemu+tls with certificates from `folder` (none: none)."""
    if folder is None:
        return ""
    return (
        "listen_tls = 1\nlisten_tcp = 0\n"
        f'ca_file = "{folder}/cacert.pem"\ncert_file = "{folder}/servercert.pem"\n'
        f'key_file = "{folder}/serverkey.pem"\n'
    )


_REAPER = """
import os, time
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(0.5)
"""


@contextlib.contextmanager
def routed_node(tag: str, tls: Path | None = None):
    """A second node whose libvirtd lives in namespaces of its own, routing its guests' addresses.

    Its uplink is a veth to a peer namespace (the "internet" side), which routes the node's guest
    blocks to it. Forwarding is on only inside the node's own network namespace, which has no link to
    the root namespace: nothing a guest sends can leave the machine. With `tls` (a folder holding
    cacert.pem, servercert.pem and serverkey.pem) its libvirtd also listens for qemu+tls on port 16514.
    """
    workdir = Path(tempfile.mkdtemp(prefix=f"test-{tag}-node-"))
    etc = workdir / "etc-libvirt"
    shutil.copytree("/etc/libvirt", etc, symlinks=True)
    cache = workdir / "cache-libvirt"
    shutil.copytree("/var/cache/libvirt", cache, symlinks=True)
    conf = etc / "libvirtd.conf"
    conf.write_text(conf.read_text() + f'\nhost_uuid = "{uuid.uuid4()}"\n' + _tls_settings(tls))
    for leftover in (etc / "qemu" / "networks" / "autostart").glob("*.xml"):
        leftover.unlink()  # the host's autostarted networks are not this node's business
    ready = workdir / "ready"
    node_ns, peer_ns = f"test-{tag}-node", f"test-{tag}-rpeer"
    uplink, uplink_peer = f"test-{tag}-u0", f"test-{tag}-u1"
    env = {
        **os.environ,
        "ETC": str(etc),
        "CACHE": str(cache),
        "REAPER": _REAPER,
        "READY": str(ready),
        "NODE_HOSTNAME": f"test-{tag}-node",
        "LIBVIRTD_ARGS": "--listen" if tls else "",
    }
    with open(workdir / "start.log", "w") as start_log:
        process = subprocess.Popen(
            [
                "unshare",
                "--mount",
                "--net",
                "--pid",
                "--uts",
                "--fork",
                "--mount-proc",
                "--propagation",
                "private",
                "sh",
                "-c",
                _NODE_START,
            ],
            env=env,
            stdout=start_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    node_pid = 0
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the second libvirtd did not start: {(workdir / 'start.log').read_text()}"
                )
            time.sleep(0.1)
        node_pid = int(sh("pgrep", "-P", str(process.pid)).stdout.split()[0])  # the namespace's PID 1
        Path("/run/netns").mkdir(exist_ok=True)
        sh("ip", "netns", "attach", node_ns, str(node_pid))
        # The uplink: a veth between the node's namespace and the peer's.
        sh("ip", "netns", "add", peer_ns)
        sh(
            "ip",
            "link",
            "add",
            uplink,
            "netns",
            node_ns,
            "type",
            "veth",
            "peer",
            "name",
            uplink_peer,
            "netns",
            peer_ns,
        )
        for namespace, device, v4, v6 in (
            (node_ns, uplink, UPLINK_NODE_V4, UPLINK_NODE_V6),
            (peer_ns, uplink_peer, UPLINK_PEER_V4, UPLINK_PEER_V6),
        ):
            sh("ip", "-n", namespace, "link", "set", "lo", "up")
            sh("ip", "-n", namespace, "addr", "add", f"{v4}/24", "dev", device)
            sh("ip", "-n", namespace, "addr", "add", f"{v6}/64", "dev", device, "nodad")
            sh("ip", "-n", namespace, "link", "set", device, "up")
        sh("ip", "-n", peer_ns, "route", "add", str(ROUTED_V4), "via", UPLINK_NODE_V4)
        sh("ip", "-n", peer_ns, "-6", "route", "add", str(ROUTED_V6), "via", UPLINK_NODE_V6)
        # Routing inside the node's namespace only (its sysctls are its own).
        for setting in (
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
            "net.ipv4.conf.all.rp_filter=1",
        ):
            sh("ip", "netns", "exec", node_ns, "sysctl", "-qw", setting)
        # What the README asks of a routed node's operator: strict reverse-path filtering for IPv6 too,
        # so a guest's packets from addresses that are not routed to its tap are dropped.
        sh("ip", "netns", "exec", node_ns, "ip6tables", "-t", "raw", "-A", "PREROUTING", "-m", "rpfilter",
           "--invert", "-j", "DROP")  # fmt: skip
        deadline = time.monotonic() + 30
        node = RoutedNode(namespace=peer_ns, pid=node_pid, node_namespace=node_ns)
        while not node.path("/run/libvirt/libvirt-sock").exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the second libvirtd's socket did not appear")
            time.sleep(0.1)
        yield node
    finally:
        if node_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(node_pid, signal.SIGKILL)  # a PID namespace's init ignores SIGTERM; all inside die
        process.kill()
        process.wait(10)
        sh("ip", "netns", "del", peer_ns, check=False)
        sh("ip", "netns", "del", node_ns, check=False)
        shutil.rmtree(workdir, ignore_errors=True)
