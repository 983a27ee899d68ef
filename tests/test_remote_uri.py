"""The URI libvirt is given for an SSH node, and the ssh it runs: held to the node's pinned host key.

The wrapper is asked with `ssh -G` (OpenSSH prints the options it would connect with, and connects
nowhere); the whole path, against a real sshd whose key changes, is tests/integration/test_remote_node.py.
"""

import subprocess
from urllib.parse import parse_qs, urlsplit

import pytest

from hypervisor import remote


@pytest.fixture
def panel(tmp_path):
    before = dict(remote._settings)
    remote.configure(str(tmp_path / "id_ed25519"), str(tmp_path / "known_hosts.d"))
    yield tmp_path
    remote.configure(**before)


def effective_ssh_options(wrapper: str, host: str) -> dict[str, str]:
    printed = subprocess.run([wrapper, "-G", host], capture_output=True, text=True, check=True).stdout
    return dict(line.split(" ", 1) for line in printed.splitlines() if " " in line)


def test_an_ssh_node_is_reached_through_openssh_with_the_panel_key_and_its_pinned_host_key(panel):
    given = remote.connection_uri("qemu+ssh://root@node2.example:2222/system?no_verify=1&keyfile=/root/x")
    parts = urlsplit(given)
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    assert (parts.scheme, parts.netloc, parts.path) == ("qemu+ssh", "root@node2.example:2222", "/system")
    assert query["keyfile"] == str(panel / "id_ed25519")  # the URI's own keyfile and no_verify are dropped
    assert query["no_verify"] == "0" and query["no_tty"] == "1"
    assert len(parse_qs(parts.query)["keyfile"]) == 1

    options = effective_ssh_options(query["command"], "node2.example")
    pinned = remote.known_hosts_path("node2.example", 2222)
    assert options["userknownhostsfile"] == str(pinned)
    assert options["globalknownhostsfile"] == "/dev/null"
    assert options["stricthostkeychecking"] in ("true", "yes")
    assert options["batchmode"] == "yes" and options["updatehostkeys"] in ("false", "no")


def test_each_ssh_node_has_its_own_wrapper_and_it_follows_the_settings(panel, tmp_path):
    first = urlsplit(remote.connection_uri("qemu+ssh://root@node2/system")).query
    other = urlsplit(remote.connection_uri("qemu+ssh://root@node3/system")).query
    assert parse_qs(first)["command"] != parse_qs(other)["command"]

    remote.configure(str(tmp_path / "id_ed25519"), str(tmp_path / "moved"))
    moved = parse_qs(urlsplit(remote.connection_uri("qemu+ssh://root@node2/system")).query)["command"][0]
    assert moved.startswith(str(tmp_path / "moved"))
    known = effective_ssh_options(moved, "node2")["userknownhostsfile"]
    assert known == str(remote.known_hosts_path("node2", 22)) and known.startswith(str(tmp_path / "moved"))


@pytest.mark.parametrize("uri", ["qemu:///system", "qemu+tls://node4/system", "test:///default"])
def test_other_transports_are_given_as_they_are(panel, uri):
    assert remote.connection_uri(uri) == uri


def test_a_refused_host_key_is_said_plainly_and_other_failures_as_they_are():
    said = "Cannot recv data: Host key verification failed."
    refused = remote.explain("qemu+ssh://root@node2/system", said)
    assert isinstance(refused, remote.HostKeyRefused) and "not the one pinned" in str(refused)
    down = remote.explain("qemu+ssh://root@node2/system", "Cannot recv data: Connection refused")
    assert not isinstance(down, remote.HostKeyRefused) and "Connection refused" in str(down)


def test_a_tls_node_gets_the_panels_certificate_directory_when_it_has_one(panel, tmp_path):
    uri = "qemu+tls://node4.example/system"
    assert remote.connection_uri(uri) == uri  # libvirt's standard paths
    remote.configure(str(tmp_path / "id_ed25519"), str(tmp_path / "known_hosts.d"), str(tmp_path / "pki"))
    given = remote.connection_uri(uri + "?pkipath=/somewhere/else")
    assert given == f"{uri}?pkipath={tmp_path / 'pki'}"
