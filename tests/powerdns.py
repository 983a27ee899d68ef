"""A real pdns_server for the reverse DNS tests: on 127.0.0.1, spare ports, its own SQLite file, and
`dig` to ask it (the panel's own config writer makes its files, as `manage.py rdns_server` does)."""

import secrets
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from network import pdns


def spare_port() -> int:
    """A port free for both TCP and UDP on loopback right now."""
    while True:
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


class PowerDNSServer:
    def __init__(self, directory: Path):
        self.directory = directory
        self.dns_port, self.api_port = spare_port(), spare_port()
        self.api_key = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.api_port}"
        self.process: subprocess.Popen | None = None
        pdns.write_server_files(
            directory, dns_port=self.dns_port, api_port=self.api_port, api_key=self.api_key
        )

    def start(self) -> None:
        log = open(self.directory / "server.log", "a")  # noqa: SIM115 - kept open while it runs
        self.process = subprocess.Popen(pdns.server_command(self.directory), stdout=log, stderr=log)
        deadline = time.monotonic() + 15
        while True:
            request = urllib.request.Request(  # noqa: S310 - our loopback server
                f"{self.url}/api/v1/servers/localhost", headers={"X-API-Key": self.api_key}
            )
            try:
                urllib.request.urlopen(request, timeout=1).close()  # noqa: S310
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((self.directory / "server.log").read_text()[-2000:]) from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def dig(self, address: str) -> str:
        """What the server answers for the address's reverse name ("" when nothing)."""
        out = subprocess.run(
            ["dig", "+short", "-x", address, "@127.0.0.1", "-p", str(self.dns_port), "+time=2", "+tries=1"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return out.strip()


@pytest.fixture(scope="module")
def powerdns_server(tmp_path_factory):
    server = PowerDNSServer(tmp_path_factory.mktemp("pdns"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def powerdns(powerdns_server, settings, monkeypatch):
    """rDNS turned on against the real server; the tasks it rings run at once, in this process."""
    from network import rdns, tasks

    settings.KVMPANEL_RDNS_ENABLED = True
    settings.KVMPANEL_PDNS_URL = powerdns_server.url
    settings.KVMPANEL_PDNS_API_KEY = powerdns_server.api_key
    settings.KVMPANEL_RDNS_DEFAULT = "{ip_dashed}.customers.example.net"
    run = {rdns.SYNC_TASK: tasks.sync_ptr, rdns.ZONES_TASK: tasks.ensure_zones}

    class InProcess:
        @staticmethod
        def send_task(name, args, **kwargs):
            run[name].run(*args)

    monkeypatch.setattr(rdns, "current_app", InProcess)
    if powerdns_server.process is None:
        powerdns_server.start()
    yield powerdns_server
    if powerdns_server.process is None:  # a test stopped it: the next one needs it
        powerdns_server.start()
