"""A node registered over qemu+ssh:// with its host key pinned, and refused once the key changes; a
node registered over qemu+tls:// with the panel's own certificates, and refused by a panel whose CA
did not sign the node's certificate.

The node is a second libvirtd in namespaces of its own (tests/netbed.py); an sshd the test starts in
its namespaces listens on a veth to the root namespace with 203.0.113.4/30 addresses (NETWORK-TESTS.md:
documentation prefixes, the root namespace's unreachable route stays for the rest of 203.0.113.0/24).
No guest boots here.
"""

import contextlib
import datetime as dt
import ipaddress
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import hypervisor
from hypervisor.remote import HostKeyRefused, connection_uri, explain
from nodes import remote
from nodes.choices import NodeStatus
from nodes.registration import register_node

from .. import netbed

pytestmark = [pytest.mark.integration]

TAG = "m19s"
TLS_TAG = "m19t"
PANEL_SIDE, NODE_SIDE = "203.0.113.5", "203.0.113.6"
POOL_PATH = f"/var/lib/kvmpanel/test-pools/{TAG}"


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


class NodeSshd:
    """sshd in the node's mount, network and UTS namespaces, on the veth's node side."""

    def __init__(self, bed, workdir: Path, authorized_key: str):
        self.bed, self.workdir = bed, workdir
        (workdir / "authorized_keys").write_text(authorized_key + "\n")
        self.process = None

    def start(self, host_key: Path) -> None:
        config = self.workdir / "sshd_config"
        config.write_text(
            f"ListenAddress {NODE_SIDE}\nPort 22\nHostKey {host_key}\n"
            f"AuthorizedKeysFile {self.workdir / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
            f"PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            f"PidFile {self.workdir / 'sshd.pid'}\n"
        )
        # -r and -w: the node's root and working folder too, or paths (its /run and libvirt's socket)
        # still resolve in the host's mount tree, and the session reaches the host's libvirtd.
        enter = ["nsenter", "-t", str(self.bed.pid), "-m", "-n", "-u", "-r", "-w"]
        subprocess.run([*enter, "mkdir", "-p", "/run/sshd"], check=True)
        self.process = subprocess.Popen(
            [*enter, "/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / "sshd.log", "a"),  # noqa: SIM115 (closed with the process)
        )
        deadline = time.monotonic() + 10
        while self.bed.in_node(["ss", "-ltn", "sport = :22"]).stdout.count("LISTEN") == 0:
            assert time.monotonic() < deadline, (self.workdir / "sshd.log").read_text()
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@contextlib.contextmanager
def reachable_node(tag: str, tls: Path | None = None):
    """The second node, with a veth from here to its namespace (PANEL_SIDE here, NODE_SIDE there)."""
    veth, veth_node = f"test-{tag}k0", f"test-{tag}k1"
    netbed.sh("ip", "netns", "del", f"test-{tag}-node", check=False)  # an earlier run's, if left
    with netbed.guarded(), netbed.routed_node(tag, tls=tls) as bed:
        try:
            # Made here, then its end moved (made straight into the namespace, the kernel may answer
            # "File exists" when that end's index is taken there).
            netbed.sh("ip", "link", "add", veth, "type", "veth", "peer", "name", veth_node)
            netbed.sh("ip", "link", "set", veth_node, "netns", bed.node_namespace)
            netbed.sh("ip", "addr", "add", f"{PANEL_SIDE}/30", "dev", veth)
            netbed.sh("ip", "link", "set", veth, "up")
            netbed.sh("ip", "-n", bed.node_namespace, "addr", "add", f"{NODE_SIDE}/30", "dev", veth_node)
            netbed.sh("ip", "-n", bed.node_namespace, "link", "set", veth_node, "up")
            yield bed
        finally:
            netbed.sh("ip", "link", "del", veth, check=False)
            subprocess.run(["rm", "-rf", POOL_PATH], check=False)


@pytest.fixture
def ssh_node(tmp_path, settings):
    """The second node reachable over SSH from here, with the panel's key authorized there."""
    settings.KVMPANEL_SSH_KEY = tmp_path / "panel" / "id_ed25519"
    settings.KVMPANEL_KNOWN_HOSTS_DIR = tmp_path / "panel" / "known_hosts.d"
    remote.configure()
    panel_key = remote.public_key()
    with reachable_node(TAG) as bed:
        sshd = NodeSshd(bed, tmp_path, panel_key)
        try:
            yield bed, sshd
        finally:
            sshd.stop()
    remote.configure()


class Authority:
    """A certificate authority of the test's own (RSA, as libvirt's own guide makes them)."""

    def __init__(self, name: str):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = self._build(self.name, self.key.public_key(), ca=True).sign(self.key, hashes.SHA256())

    def _build(self, subject, public_key, *, ca: bool) -> x509.CertificateBuilder:
        now = dt.datetime.now(dt.UTC)
        usage = dict.fromkeys(
            ("content_commitment", "data_encipherment", "key_agreement", "encipher_only", "decipher_only"),
            False,
        )
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.name if not ca else subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=not ca, key_encipherment=not ca, key_cert_sign=ca, crl_sign=ca, **usage
                ),
                critical=True,
            )
        )  # fmt: skip

    def issue(self, folder: Path, name: str, *, server_ip: str | None = None) -> None:
        """`name`cert.pem and `name`key.pem in `folder`: a server's (for server_ip) or a client's."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, server_ip or "kvmpanel")])
        purpose = ExtendedKeyUsageOID.SERVER_AUTH if server_ip else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = self._build(subject, key.public_key(), ca=False).add_extension(
            x509.ExtendedKeyUsage([purpose]), critical=False
        )
        if server_ip:
            names = [x509.IPAddress(ipaddress.ip_address(server_ip))]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        folder.mkdir(parents=True, exist_ok=True)
        cert = builder.sign(self.key, hashes.SHA256())
        (folder / f"{name}cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (folder / f"{name}key.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        self.write_ca(folder)

    def write_ca(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "cacert.pem").write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))


@pytest.fixture
def tls_node(tmp_path, settings):
    """The second node taking qemu+tls with a certificate from the test's CA; the panel's client
    certificate from the same CA, in the panel's own certificate folder."""
    authority = Authority("kvmpanel test CA")
    authority.issue(tmp_path / "node-pki", "server", server_ip=NODE_SIDE)
    authority.issue(tmp_path / "panel-pki", "client")
    settings.KVMPANEL_TLS_DIR = str(tmp_path / "panel-pki")
    remote.configure()
    with reachable_node(TLS_TAG, tls=tmp_path / "node-pki") as bed:
        yield bed, tmp_path / "panel-pki"
    settings.KVMPANEL_TLS_DIR = ""
    remote.configure()


@pytest.mark.timeout(240)
def test_a_node_registered_over_ssh_keeps_its_pinned_host_key_and_refuses_another(
    ssh_node, tmp_path, transactional_db
):
    _bed, sshd = ssh_node
    first_key = tmp_path / "host_key_1"
    keygen(first_key)
    sshd.start(first_key)
    uri = f"qemu+ssh://root@{NODE_SIDE}/system"

    # What staff see before they confirm: the same fingerprint the node's own ssh-keygen prints.
    found = remote.scan_host_key(uri)
    on_the_node = subprocess.run(["ssh-keygen", "-lf", str(first_key.with_suffix(".pub"))],
                                 capture_output=True, text=True, check=True).stdout.split()[1]  # fmt: skip
    assert found.fingerprint == on_the_node

    started = time.monotonic()
    pool, network = f"test-{TAG}-pool", f"test-{TAG}-net"
    node = register_node(
        "test-ssh-node", uri, pool_name=pool, pool_path=POOL_PATH, network_name=network, host_key=found.key
    )
    print(f"\nregistered over qemu+ssh (OpenSSH, pinned key) in {time.monotonic() - started:.1f} s")
    assert node.status == NodeStatus.ONLINE and node.hostname == f"test-{TAG}-node"
    assert node.ssh_host_key_fingerprint == on_the_node
    with hypervisor.connect(node.uri) as session:
        assert session.pool_info(f"test-{TAG}-pool").path == POOL_PATH

    # The node's host key changes (reinstalled, or someone in the way): refused, and said plainly.
    sshd.stop()
    second_key = tmp_path / "host_key_2"
    keygen(second_key)
    sshd.start(second_key)
    # Asked by libvirt's own client with the URI the panel gives libvirt (bounded: a hang fails too).
    answer = subprocess.run(["virsh", "-c", connection_uri(node.uri), "hostname"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert answer.returncode != 0, answer.stdout
    refused = explain(node.uri, answer.stderr)
    print(f"refused: {refused}")
    assert isinstance(refused, HostKeyRefused) and "not the one pinned" in str(refused)
    # And the panel's own connection (what every worker and the console bridge use) says the same.
    with pytest.raises(HostKeyRefused, match="not the one pinned"), hypervisor.connect(node.uri):
        pass


@pytest.mark.timeout(240)
def test_a_node_registered_over_tls_with_the_panels_own_certificates(tls_node, transactional_db):
    _bed, panel_pki = tls_node
    uri = f"qemu+tls://{NODE_SIDE}/system"
    started = time.monotonic()
    node = register_node(
        "test-tls-node", uri, pool_name=f"test-{TLS_TAG}-pool", pool_path=POOL_PATH,
        network_name=f"test-{TLS_TAG}-net",
    )  # fmt: skip
    print(f"\nregistered over qemu+tls (certificates in {panel_pki}) in {time.monotonic() - started:.1f} s")
    assert node.status == NodeStatus.ONLINE and node.hostname == f"test-{TLS_TAG}-node"
    with hypervisor.connect(node.uri) as session:
        assert session.pool_info(f"test-{TLS_TAG}-pool").path == POOL_PATH

    # The panel's certificates from another CA (the node's certificate is not one it can check, and the
    # node does not know the panel's): refused, and said why.
    Authority("somebody else's CA").issue(panel_pki, "client")
    with (
        pytest.raises(hypervisor.NodeUnreachable, match=r"(?i)certificate") as refused,
        hypervisor.connect(node.uri),
    ):
        pass
    print(f"refused: {refused.value}")
