"""Remote nodes over SSH: the panel's own key, and each node's host key pinned.

A node registered as qemu+ssh://user@host[:port]/system is reached through libvirt's ssh transport,
which runs OpenSSH's client. libvirt only lets us name that client (command=), so each SSH node gets a
small wrapper beside its known_hosts file: it runs ssh with the panel's key, that file as the only
known hosts (the global ones ignored) and StrictHostKeyChecking=yes. OpenSSH then checks the key the
node presents against the key pinned when the node was registered (nodes/remote.py writes the file)
and refuses any other: a changed key is never accepted silently.

(libvirt's libssh transport, qemu+libssh, would read known_hosts= itself, but libvirt 9.0's libssh
stalls on any reply larger than a few KiB, such as the capabilities, when the client runs no event
loop, as the panel's workers do not.)

TLS nodes (qemu+tls://) need only the certificates: from libvirt's standard paths, or from the panel's
own directory (libvirt's pkipath) when one is set.
"""

import hashlib
import shlex
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .errors import NodeUnreachable

SSH_SCHEMES = ("qemu+ssh", "qemu+libssh")
TLS_SCHEME = "qemu+tls"
_settings = {"keyfile": "", "known_hosts_dir": "", "tls_dir": ""}
# Options of every connection to a node: only the pinned key, never a prompt, and a dead link noticed.
_SSH_OPTIONS = (
    "GlobalKnownHostsFile=/dev/null",
    "StrictHostKeyChecking=yes",
    "UpdateHostKeys=no",
    "CheckHostIP=no",
    "IdentitiesOnly=yes",
    "BatchMode=yes",
    "ConnectTimeout=10",
    "ServerAliveInterval=15",
    "ServerAliveCountMax=3",
)


# The lines of OpenSSH's "host identification has changed" banner that say nothing about this host.
_BANNER = (
    "^@|^IT IS POSSIBLE|^Someone could|^It is also possible|^Please contact|^Add correct host key"
    "|^Offending .* key in|^  remove with:|^  ssh-keygen -f"
)


class HostKeyRefused(NodeUnreachable):
    """The node's SSH host key is not the one pinned at registration (or none is pinned)."""


def configure(keyfile: str, known_hosts_dir: str, tls_dir: str = "") -> None:
    """Where the panel's private key, the pinned host keys and (if not libvirt's standard paths) its
    TLS certificates live (set once, at start-up)."""
    _settings.update(keyfile=keyfile, known_hosts_dir=known_hosts_dir, tls_dir=tls_dir)


def ssh_host(uri: str) -> tuple[str, int] | None:
    """(host, port) of an SSH node's URI; None for any other transport."""
    parts = urlsplit(uri)
    if parts.scheme not in SSH_SCHEMES or not parts.hostname:
        return None
    return parts.hostname, parts.port or 22


def known_hosts_path(host: str, port: int) -> Path:
    """The known_hosts file that pins this host's key (one file per host and port)."""
    name = hashlib.sha256(f"{host}:{port}".encode()).hexdigest()[:16]
    return Path(_settings["known_hosts_dir"]) / f"{name}.known_hosts"


def known_hosts_line(host: str, port: int, key: str) -> str:
    """An OpenSSH known_hosts line for `key` ("ssh-ed25519 AAAA…") at host:port."""
    name = host if port == 22 else f"[{host}]:{port}"
    return f"{name} {key.strip()}\n"


def ssh_wrapper(host: str, port: int) -> Path:
    """The ssh command libvirt runs for this host: OpenSSH held to the host's pinned key (written when
    missing or out of date, e.g. after the key file moved)."""
    known_hosts = known_hosts_path(host, port)
    options = [f"UserKnownHostsFile={known_hosts}", *_SSH_OPTIONS]
    ssh = "ssh " + " ".join(f"-o {shlex.quote(option)}" for option in options) + ' "$@"'
    script = (
        "#!/bin/sh\n"
        f"# kvmpanel: libvirt's ssh to {host}:{port}, accepting only the host key pinned for it.\n"
        "# Its messages lose OpenSSH's banner lines on the way (stdout, libvirt's data, is untouched):\n"
        "# libvirt reads at most 1 KiB of them, and a changed key's banner alone is longer.\n"
        f"{{ {ssh} 2>&1 >&3 3>&- | grep --line-buffered -v -E {shlex.quote(_BANNER)} >&2; }} 3>&1\n"
    )
    wrapper = known_hosts.with_suffix(".ssh")
    if not wrapper.exists() or wrapper.read_text() != script:
        wrapper.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = wrapper.with_suffix(".ssh.new")
        partial.write_text(script)
        partial.chmod(0o700)
        partial.replace(wrapper)  # whole or not at all: another worker may be running it
    return wrapper


def connection_uri(uri: str) -> str:
    """The URI libvirt is given for a node's URI: SSH nodes go through OpenSSH with the panel's key and
    their pinned host key; every other URI as it is."""
    if urlsplit(uri).scheme == TLS_SCHEME:
        return _with_tls_dir(uri)
    target = ssh_host(uri)
    if target is None or not _settings["keyfile"]:
        return uri
    parts = urlsplit(uri)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in _OURS]
    query += [
        ("keyfile", _settings["keyfile"]),
        ("command", str(ssh_wrapper(*target))),
        ("no_tty", "1"),
        ("no_verify", "0"),
    ]
    return urlunsplit(("qemu+ssh", parts.netloc, parts.path, urlencode(query, safe="/"), ""))


def _with_tls_dir(uri: str) -> str:
    """A TLS node's URI with the panel's certificate directory (libvirt's pkipath), when it has one."""
    if not _settings["tls_dir"]:
        return uri
    parts = urlsplit(uri)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "pkipath"] + [
        ("pkipath", _settings["tls_dir"])
    ]
    return urlunsplit(parts._replace(query=urlencode(query, safe="/")))


_OURS = ("keyfile", "command", "no_tty", "no_verify", "known_hosts", "known_hosts_verify", "sshauth")
# How OpenSSH (through libvirt) words a host key it does not accept.
_HOST_KEY_WORDS = ("host key", "known_hosts", "hostkey")


def explain(uri: str, message: str) -> NodeUnreachable:
    """The error for a connection that failed: a refused host key says so, plainly."""
    target = ssh_host(uri)
    if target is not None and any(word in message.lower() for word in _HOST_KEY_WORDS):
        host, port = target
        return HostKeyRefused(
            f"refused to connect to {host}:{port}: its SSH host key is not the one pinned when the node "
            "was registered (the node was reinstalled, or someone is in the way). Check the node's key "
            f"and confirm the new fingerprint on the node's page. libvirt said: {message}"
        )
    return NodeUnreachable(f"cannot connect to {uri}: {message}")
