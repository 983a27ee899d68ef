"""Remote nodes: the panel's SSH key pair, the host keys it pins, and what TLS nodes need.

The key pair is made at install (scripts/install.sh), or on first use where nothing installed it (a
development checkout): its public half goes in each SSH node's authorized_keys. A node's host key is
read once, when staff register it (ssh-keyscan, shown as a fingerprint for them to compare with the
node's own), stored on the node's row, and written to the known_hosts file libvirt is given for that
node (hypervisor/remote.py); from then on only that key is accepted.
"""

import base64
import contextlib
import hashlib
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from hypervisor import remote

from .models import Node

# What a TLS node needs on the panel's side, read by every worker: libvirt's standard paths, or these
# names in KVMPANEL_TLS_DIR when it is set.
_TLS_FILES = (
    ("/etc/pki/CA/cacert.pem", "the certificate of the CA that signed the nodes' server certificates"),
    ("/etc/pki/libvirt/clientcert.pem", "the panel's client certificate, signed by that CA"),
    ("/etc/pki/libvirt/private/clientkey.pem", "the client certificate's private key (mode 600)"),
)
KEY_TYPES = "ed25519,ecdsa,rsa"  # the host key the panel pins: the first the node offers, in this order
SCAN_SECONDS = 5


class HostKeyProblem(Exception):
    """The node's host key could not be read, or is not the one staff confirmed; the message says why."""


@dataclass(frozen=True)
class HostKey:
    key: str  # "ssh-ed25519 AAAA…"
    fingerprint: str  # "SHA256:…", as `ssh-keygen -lf` prints it


def is_ssh(uri: str) -> bool:
    return remote.ssh_host(uri) is not None


def configure() -> None:
    """Tell the hypervisor layer where the key, the pins and the TLS files live (at start-up,
    nodes/apps.py)."""
    remote.configure(
        str(settings.KVMPANEL_SSH_KEY), str(settings.KVMPANEL_KNOWN_HOSTS_DIR), str(settings.KVMPANEL_TLS_DIR)
    )


def tls_files() -> list[tuple[str, str]]:
    """(path, what it is) of each file a TLS node needs on the panel's side, as this panel reads them."""
    folder = str(settings.KVMPANEL_TLS_DIR)
    if not folder:
        return list(_TLS_FILES)
    return [(str(Path(folder) / Path(path).name), what) for path, what in _TLS_FILES]


def ensure_key_pair() -> Path:
    """The panel's key pair, made if missing (the installer makes it; a checkout makes it here)."""
    private = Path(settings.KVMPANEL_SSH_KEY)
    if not private.exists():
        private.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Made under a name of its own, then linked into place, which fails if another process
        # starting at the same time got there first: one key, and never half of one.
        with tempfile.TemporaryDirectory(dir=private.parent) as scratch:
            made = Path(scratch) / "key"
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kvmpanel", "-f", str(made)],
                check=True,
                timeout=30,
            )
            with contextlib.suppress(FileExistsError):
                os.link(made, private)
                made.with_suffix(".pub").replace(private.with_suffix(".pub"))
    return private


def public_key() -> str:
    """The line to put in each SSH node's authorized_keys."""
    private = ensure_key_pair()
    try:
        return private.with_suffix(".pub").read_text().strip()
    except FileNotFoundError:  # the process that made the key has not moved its public half in yet
        derived = subprocess.run(
            ["ssh-keygen", "-y", "-f", str(private)], capture_output=True, text=True, timeout=30
        )
        return derived.stdout.strip()


def fingerprint(key: str) -> str:
    """SHA256:… of a public key line, as `ssh-keygen -lf` prints it."""
    blob = base64.b64decode(key.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def scan_host_key(uri: str) -> HostKey:
    """The host key the node at `uri` presents now (for staff to confirm before it is pinned)."""
    target = remote.ssh_host(uri)
    if target is None:
        raise HostKeyProblem("only qemu+ssh:// nodes have an SSH host key")
    host, port = target
    try:
        found = subprocess.run(
            ["ssh-keyscan", "-T", str(SCAN_SECONDS), "-p", str(port), "-t", KEY_TYPES, "--", host],
            capture_output=True,
            text=True,
            timeout=SCAN_SECONDS * 4,
        )
    except subprocess.TimeoutExpired:
        raise HostKeyProblem(f"{host}:{port} did not answer within {SCAN_SECONDS * 4} s") from None
    by_type = {}
    for line in found.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and not line.startswith("#"):
            by_type.setdefault(parts[1], f"{parts[1]} {parts[2]}")
    for wanted in (
        "ssh-ed25519",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "ssh-rsa",
    ):
        if wanted in by_type:
            return HostKey(by_type[wanted], fingerprint(by_type[wanted]))
    raise HostKeyProblem(f"no SSH host key from {host}:{port}: is sshd listening there?")


def pin(node: Node, key: HostKey) -> None:
    """Store the confirmed key on the node and write its known_hosts file."""
    node.ssh_host_key, node.ssh_host_key_fingerprint = key.key, key.fingerprint
    node.save(update_fields=["ssh_host_key", "ssh_host_key_fingerprint"])
    write_known_hosts(node)


def write_known_hosts(node: Node) -> None:
    """The node's known_hosts file, holding only its pinned key (none pinned: no file, so refused)."""
    target = remote.ssh_host(node.uri)
    if target is None:
        return
    path = remote.known_hosts_path(*target)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if node.ssh_host_key:
        path.write_text(remote.known_hosts_line(*target, node.ssh_host_key))
    else:
        path.unlink(missing_ok=True)


def write_all_known_hosts() -> int:
    """Every SSH node's file (a worker on a new machine, or after a restore); how many."""
    nodes = [node for node in Node.objects.exclude(ssh_host_key="") if remote.ssh_host(node.uri)]
    for node in nodes:
        write_known_hosts(node)
    return len(nodes)
