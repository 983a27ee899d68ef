"""Adding OS images by URL: the SSRF rules, the download, and recognising images by content.

Traffic goes to 127.0.0.0/8 only, and the `loopback_only` guard fails any test that tries
otherwise. Host names are answered by `fake_dns` (names under .test); a "public" name is one
whose fake address is public but whose connections `public_alias` sends to the local server.
"""

import bz2
import contextlib
import datetime
import gzip
import hashlib
import http.server
import io
import ipaddress
import itertools
import lzma
import re
import socket
import ssl
import subprocess
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import pycdlib
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from images import download as imagefetch
from images.download import Fetched, check_source_url, download
from images.formats import FetchRefused, detect_format

MiB = 1024 * 1024
PUBLIC_IP = "192.0.43.10"  # a global address; never contacted: public_alias reroutes it to the local server

_real_connect = socket.socket.connect


# --- guards and fakes -------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Every connect any test makes, recorded; one outside 127.0.0.0/8 fails the test."""
    attempts = []

    def guarded_connect(sock, address):
        attempts.append(address)
        assert ipaddress.ip_address(address[0].split("%")[0]) in ipaddress.ip_network("127.0.0.0/8"), (
            f"a test tried to connect to {address}"
        )
        return _real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    return attempts


@pytest.fixture
def fake_dns(monkeypatch):
    """Names resolved from this table (name -> list of addresses, or a callable giving one);
    IP literals still go through getaddrinfo (no lookup); any other name fails the test."""
    table = {}
    calls = []
    real_resolve = imagefetch._resolve

    def resolve(host, port):
        calls.append(host)
        with contextlib.suppress(socket.gaierror):  # numeric forms (127.1, 2130706433) need no DNS
            socket.getaddrinfo(host, port, flags=socket.AI_NUMERICHOST)
            return real_resolve(host, port)
        assert host in table, f"a test tried to resolve {host}"
        answer = table[host]
        addresses = answer() if callable(answer) else answer
        return [(_family(ip), (ip, port)) for ip in addresses]

    monkeypatch.setattr(imagefetch, "_resolve", resolve)
    table["calls"] = calls
    return table


def _family(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


@pytest.fixture
def public_alias(fake_dns, monkeypatch, server):
    """http://mirror.test:<port>/ looks public (it resolves to PUBLIC_IP) but is the local server.
    Returns the list of addresses imagefetch asked to connect to."""
    fake_dns["mirror.test"] = [PUBLIC_IP]
    fake_dns["localhost"] = ["127.0.0.1"]
    opened = []
    real_open = imagefetch._open_socket

    def open_socket(family, sockaddr, timeout):
        opened.append(sockaddr[0])
        if sockaddr[0] == PUBLIC_IP:
            return real_open(socket.AF_INET, ("127.0.0.1", sockaddr[1]), timeout)
        return real_open(family, sockaddr, timeout)

    monkeypatch.setattr(imagefetch, "_open_socket", open_socket)
    return opened


# --- the local server -------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.requests.append((self.path, self.headers.get("Host")))
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
        else:
            route(self)

    def log_message(self, *args):
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a handler still sleeping for a timeout test must not hold teardown

    def handle_error(self, request, client_address):
        pass  # the client hanging up on a too-big body is expected


class LocalServer:
    def __init__(self, tls_context: ssl.SSLContext | None = None):
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.routes = {}
        self.httpd.requests = []
        if tls_context is not None:
            self.httpd.socket = tls_context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.scheme = "https" if tls_context else "http"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def routes(self) -> dict:
        return self.httpd.routes

    @property
    def requests(self) -> list:
        return self.httpd.requests

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    local = LocalServer()
    yield local
    local.stop()


def body(data: bytes, *, status: int = 200, content_length: bool = True, headers=()):
    def route(handler):
        handler.send_response(status)
        if content_length:
            handler.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            handler.send_header(name, value)
        handler.end_headers()
        for start in range(0, len(data), 256 * 1024):
            handler.wfile.write(data[start : start + 256 * 1024])

    return route


def redirect(location: str, status: int = 302):
    return body(b"moved", status=status, headers=[("Location", location)])


def chunked(data: bytes):
    def route(handler):
        handler.protocol_version = "HTTP/1.1"
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Connection", "close")
        handler.end_headers()
        for start in range(0, len(data), 300 * 1024):
            piece = data[start : start + 300 * 1024]
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        handler.wfile.write(b"0\r\n\r\n")
        handler.close_connection = True

    return route


def truncated(declared: int, sent: bytes):
    def route(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", str(declared))
        handler.end_headers()
        handler.wfile.write(sent)

    return route


def endless(handler):
    handler.send_response(200)
    handler.end_headers()
    block = b"\0" * (64 * 1024)
    while True:
        handler.wfile.write(block)


def slow(seconds: float):
    def route(handler):
        time.sleep(seconds)
        body(b"late")(handler)

    return route


def trickle(data: bytes, *, piece: int, every: float):
    """A server that never pauses long enough for a read timeout, but takes long for the whole file."""

    def route(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        for start in range(0, len(data), piece):
            handler.wfile.write(data[start : start + piece])
            handler.wfile.flush()
            time.sleep(every)

    return route


# --- images -----------------------------------------------------------------------------------


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


@pytest.fixture
def qcow2_bytes(tmp_path) -> bytes:
    path = tmp_path / "made" / "tiny.qcow2"
    path.parent.mkdir()
    qemu_img("create", "-q", "-f", "qcow2", str(path), "16M")
    return path.read_bytes()


def mbr_disk(size: int = 3 * MiB) -> bytes:
    data = bytearray(size)
    data[0:3] = b"\xeb\x63\x90"  # a jump, as boot code starts
    data[510:512] = b"\x55\xaa"
    return bytes(data)


def gpt_only_disk() -> bytes:
    data = bytearray(64 * 1024)
    data[512:520] = b"EFI PART"
    return bytes(data)


def iso_bytes() -> bytes:
    iso = pycdlib.PyCdlib()
    iso.new(vol_ident="TESTISO")
    iso.add_fp(io.BytesIO(b"hello\n"), 6, "/HELLO.TXT;1")
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()


HTML_PAGE = b"<!DOCTYPE html>\n<html><head><title>404</title></head><body>Not here</body></html>\n"


def tar_bytes() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("disk.raw")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    return out.getvalue()


def zip_bytes() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("disk.raw", b"hello")
    return out.getvalue()


def listing(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


@pytest.fixture
def dest(tmp_path) -> Path:
    directory = tmp_path / "dest"
    directory.mkdir()
    return directory


# --- refusals that happen before any traffic --------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1/image.qcow2", "127.0.0.1 is a loopback address"),
        ("http://127.1/image.qcow2", "loopback"),
        ("http://2130706433/image.qcow2", "loopback"),
        ("http://0x7f.1/image.qcow2", "loopback"),
        ("http://localhost/image.qcow2", "localhost resolves to"),
        ("http://10.0.0.1/image.qcow2", "10.0.0.1 is a private address"),
        ("http://172.16.5.4/", "private address"),
        ("http://192.168.1.1/", "private address"),
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254 is the cloud metadata address"),
        ("http://169.254.10.10/", "link-local address"),
        ("http://100.64.0.1/", "100.64.0.1 is a carrier-grade NAT (shared) address"),
        ("http://198.51.100.1/", "reserved address"),
        ("http://240.0.0.1/", "reserved address"),
        ("http://[::1]/", "::1 is a loopback address"),
        ("http://[::ffff:127.0.0.1]/", "loopback address (the IPv4 address 127.0.0.1 inside an IPv6"),
        ("http://[::ffff:10.0.0.1]/", "private address"),
        ("http://[::ffff:169.254.169.254]/", "cloud metadata address"),
        ("http://[64:ff9b::a00:1]/", "private address"),
        ("http://[2002:7f00:1::]/", "loopback address"),
        ("http://[::7f00:1]/", "reserved address"),
        ("http://[fe80::1]/", "link-local address"),
        ("http://[fc00::1]/", "private address"),
        ("http://[fd00:ec2::254]/", "cloud metadata address"),
        ("http://[fec0::1]/", "site-local address"),
        ("http://0.0.0.0/", "unspecified address"),
        ("http://[::]/", "unspecified address"),
        ("http://224.0.0.1/", "multicast address"),
        ("http://[ff02::1]/", "multicast address"),
        ("http://255.255.255.255/", "broadcast address"),
    ],
)
def test_it_refuses_non_public_addresses_without_traffic(url, reason, loopback_only):
    with pytest.raises(FetchRefused) as refused:
        check_source_url(url)
    assert reason in str(refused.value)
    assert loopback_only == []


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://127.0.0.1/image.qcow2", "only http:// and https:// URLs can be fetched, not ftp:"),
        ("file:///etc/passwd", "only http:// and https:// URLs can be fetched, not file:"),
        ("javascript:alert(1)", "not javascript:"),
        ("//127.0.0.1/image.qcow2", "not no scheme"),
        ("", "not no scheme"),
        ("http:///image.qcow2", "the URL has no host"),
        ("http://127.0.0.1:0/", "port must be between 1 and 65535"),
        ("http://127.0.0.1:99999/", "the URL is malformed"),
        ("http://127.0.0.1:http/", "the URL is malformed"),
        ("http://[::1/", "the URL is malformed"),
        ("http://127.0.0.1/a b.qcow2", "a space or a control character"),
        ("http://127.0.0.1/x\r\nX-Injected: 1", "a space or a control character"),
        (" http://127.0.0.1/", "a space or a control character"),
    ],
)
def test_it_refuses_malformed_urls_and_other_schemes(url, reason, loopback_only):
    with pytest.raises(FetchRefused) as refused:
        check_source_url(url, allow_private=True)
    assert reason in str(refused.value)
    assert loopback_only == []


@pytest.mark.parametrize(
    "url",
    ["http://user:pw@127.0.0.1/", "http://user@127.0.0.1/", "http://:pw@127.0.0.1/", "http://@127.0.0.1/"],
)
def test_it_refuses_credentials_without_repeating_them(url, loopback_only):
    with pytest.raises(FetchRefused, match="must not contain a user name or password") as refused:
        check_source_url(url, allow_private=True)
    assert "pw" not in str(refused.value)
    assert loopback_only == []


def test_it_refuses_a_backslash_trick_that_hides_credentials():
    with pytest.raises(FetchRefused, match="user name or password"):
        check_source_url("http://mirror.test\\@127.0.0.1/image.qcow2")


def test_it_refuses_a_name_when_any_of_its_addresses_is_private(fake_dns, loopback_only):
    fake_dns["mixed.test"] = [PUBLIC_IP, "10.1.2.3"]
    with pytest.raises(FetchRefused, match=r"^mixed\.test resolves to 10\.1\.2\.3, a private address"):
        check_source_url("https://mixed.test/image.qcow2")
    assert loopback_only == []


def test_it_refuses_a_name_whose_ipv6_address_is_loopback(fake_dns):
    fake_dns["dual.test"] = [PUBLIC_IP, "::1"]
    with pytest.raises(FetchRefused, match=r"dual\.test resolves to ::1, a loopback address"):
        check_source_url("http://dual.test/")


def test_it_accepts_a_public_name_without_traffic(fake_dns, loopback_only):
    fake_dns["mirror.test"] = [PUBLIC_IP, "2001:4860:4860::8888"]
    check_source_url("https://mirror.test/debian-12.qcow2")
    assert loopback_only == []


def test_it_says_when_a_name_does_not_resolve(monkeypatch):
    def no_such_name(*_args, **_kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(imagefetch.socket, "getaddrinfo", no_such_name)
    with pytest.raises(FetchRefused, match=r"cannot resolve nowhere\.test: Name or service not known"):
        check_source_url("http://nowhere.test/")


def test_it_tells_the_operator_private_sources_can_be_allowed():
    with pytest.raises(FetchRefused, match="must be allowed by an operator first"):
        check_source_url("http://10.0.0.1/")


@pytest.mark.parametrize(
    "url", ["http://10.0.0.1/", "http://127.0.0.1/", "http://169.254.169.254/", "http://[fd12::1]/"]
)
def test_it_allows_private_addresses_when_the_operator_does(url, loopback_only):
    check_source_url(url, allow_private=True)
    assert loopback_only == []


@pytest.mark.parametrize(
    "url", ["http://0.0.0.0/", "http://0.1.2.3/", "http://[::]/", "http://224.0.0.1/", "http://[ff02::1]/"]
)
def test_it_still_refuses_unspecified_and_multicast_when_private_is_allowed(url):
    with pytest.raises(FetchRefused) as refused:
        check_source_url(url, allow_private=True)
    assert "allowed by an operator" not in str(refused.value)


def test_download_refuses_a_loopback_server_unless_allowed(server, dest, qcow2_bytes, loopback_only):
    server.routes["/image.qcow2"] = body(qcow2_bytes)
    with pytest.raises(FetchRefused, match="loopback"):
        download(server.url("/image.qcow2"), str(dest), max_bytes=MiB)
    assert loopback_only == []
    assert server.requests == []
    assert listing(dest) == []


@pytest.mark.parametrize("checksum", ["abc", "g" * 64, "a" * 63, "a" * 65])
def test_download_refuses_a_malformed_checksum_before_connecting(server, dest, checksum, loopback_only):
    with pytest.raises(FetchRefused, match="64 hexadecimal characters"):
        download(server.url("/x"), str(dest), max_bytes=MiB, expected_sha256=checksum, allow_private=True)
    assert loopback_only == []


def test_download_refuses_a_missing_destination_before_connecting(server, tmp_path, loopback_only):
    with pytest.raises(FetchRefused, match="does not exist"):
        download(server.url("/x"), str(tmp_path / "nope"), max_bytes=MiB, allow_private=True)
    assert loopback_only == []


# --- downloads --------------------------------------------------------------------------------


def test_it_downloads_a_qcow2_image(server, dest, qcow2_bytes):
    server.routes["/images/tiny.qcow2"] = body(qcow2_bytes)
    fetched = download(server.url("/images/tiny.qcow2"), str(dest), max_bytes=10 * MiB, allow_private=True)
    assert fetched == Fetched(
        path=fetched.path,
        size_bytes=len(qcow2_bytes),
        sha256=hashlib.sha256(qcow2_bytes).hexdigest(),
        format="qcow2",
        virtual_size_bytes=16 * MiB,
    )
    assert Path(fetched.path).parent == dest
    assert Path(fetched.path).name.endswith(".qcow2")
    assert Path(fetched.path).read_bytes() == qcow2_bytes
    assert listing(dest) == [Path(fetched.path).name]


def test_it_downloads_a_raw_disk_with_an_mbr(server, dest):
    data = mbr_disk()
    server.routes["/disk.img"] = body(data)
    fetched = download(server.url("/disk.img"), str(dest), max_bytes=10 * MiB, allow_private=True)
    assert (fetched.format, fetched.virtual_size_bytes, fetched.size_bytes) == ("raw", len(data), len(data))


def test_it_downloads_a_raw_disk_with_only_a_gpt_header(server, dest):
    server.routes["/gpt.img"] = body(gpt_only_disk())
    fetched = download(server.url("/gpt.img"), str(dest), max_bytes=MiB, allow_private=True)
    assert fetched.format == "raw"


def test_it_downloads_an_iso(server, dest):
    data = iso_bytes()
    server.routes["/cd.iso"] = body(data)
    fetched = download(server.url("/cd.iso"), str(dest), max_bytes=10 * MiB, allow_private=True)
    assert (fetched.format, fetched.virtual_size_bytes) == ("iso", len(data))


def test_it_downloads_a_chunked_answer(server, dest):
    data = mbr_disk(2 * MiB + 5)
    server.routes["/chunked.img"] = chunked(data)
    fetched = download(server.url("/chunked.img"), str(dest), max_bytes=10 * MiB, allow_private=True)
    assert fetched.sha256 == hashlib.sha256(data).hexdigest()


def test_it_sends_the_host_name_and_connects_to_the_address_it_checked(server, dest, fake_dns, loopback_only):
    # Rebinding: the first answer is checked and used; a later, different answer is never asked for.
    answers = iter([["127.0.0.1"], ["127.0.0.2"]])
    fake_dns["rebind.test"] = lambda: next(answers)
    server.routes["/disk.img"] = body(mbr_disk(MiB))
    download(server.url("/disk.img", host="rebind.test"), str(dest), max_bytes=2 * MiB, allow_private=True)
    assert fake_dns["calls"] == ["rebind.test"]
    assert [address[0] for address in loopback_only] == ["127.0.0.1"]
    assert server.requests == [("/disk.img", f"rebind.test:{server.port}")]


def test_it_omits_the_default_port_from_the_host_header(fake_dns, monkeypatch, server, dest):
    fake_dns["mirror.test"] = [PUBLIC_IP]
    real_open = imagefetch._open_socket
    monkeypatch.setattr(
        imagefetch,
        "_open_socket",
        lambda family, sockaddr, timeout: real_open(family, ("127.0.0.1", server.port), timeout),
    )
    server.routes["/disk.img"] = body(mbr_disk(MiB))
    download("http://mirror.test/disk.img", str(dest), max_bytes=2 * MiB)
    assert server.requests == [("/disk.img", "mirror.test")]


def test_it_downloads_from_a_public_name_without_allow_private(server, dest, public_alias):
    server.routes["/disk.img"] = body(mbr_disk(MiB))
    fetched = download(server.url("/disk.img", host="mirror.test"), str(dest), max_bytes=2 * MiB)
    assert fetched.format == "raw"
    assert public_alias == [PUBLIC_IP]


def test_it_percent_encodes_a_non_ascii_path(server, dest):
    server.routes["/images/d%C3%A9bian.img"] = body(mbr_disk(MiB))
    fetched = download(server.url("/images/débian.img"), str(dest), max_bytes=2 * MiB, allow_private=True)
    assert fetched.format == "raw"


# --- redirects --------------------------------------------------------------------------------


def test_it_follows_every_kind_of_redirect(server, dest, qcow2_bytes):
    server.routes["/r1"] = redirect(server.url("/r2"), 301)
    server.routes["/r2"] = redirect("/r3", 302)  # relative
    server.routes["/r3"] = redirect("r4", 303)
    server.routes["/r4"] = redirect(f"//127.0.0.1:{server.port}/r5", 307)  # scheme-relative
    server.routes["/r5"] = redirect("/image.qcow2?token=abc", 308)
    server.routes["/image.qcow2?token=abc"] = body(qcow2_bytes)
    fetched = download(server.url("/r1"), str(dest), max_bytes=10 * MiB, allow_private=True)
    assert fetched.format == "qcow2"
    assert [path for path, _host in server.requests] == [
        "/r1",
        "/r2",
        "/r3",
        "/r4",
        "/r5",
        "/image.qcow2?token=abc",
    ]


def test_it_stops_after_max_redirects(server, dest):
    server.routes["/r1"] = redirect("/r2")
    server.routes["/r2"] = redirect("/r3")
    server.routes["/r3"] = body(mbr_disk(MiB))
    with pytest.raises(
        FetchRefused, match=r"more than 1 redirects; the last one led to http://127\.0\.0\.1:\d+/r3"
    ):
        download(server.url("/r1"), str(dest), max_bytes=2 * MiB, allow_private=True, max_redirects=1)
    assert listing(dest) == []


def test_it_stops_a_redirect_loop(server, dest):
    server.routes["/loop"] = redirect("/loop")
    with pytest.raises(FetchRefused, match="more than 5 redirects"):
        download(server.url("/loop"), str(dest), max_bytes=MiB, allow_private=True)
    assert len(server.requests) == 6
    assert listing(dest) == []


def test_it_refuses_a_redirect_without_location(server, dest):
    server.routes["/nowhere"] = body(b"", status=302)
    with pytest.raises(FetchRefused, match="answered HTTP 302 without a Location"):
        download(server.url("/nowhere"), str(dest), max_bytes=MiB, allow_private=True)


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("http://10.0.0.1/secret", "10.0.0.1 is a private address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is the cloud metadata address"),
        ("http://127.0.0.1:{port}/disk.img", "127.0.0.1 is a loopback address"),
        ("http://localhost:{port}/disk.img", "localhost resolves to 127.0.0.1, a loopback address"),
        ("http://[::ffff:127.0.0.1]:{port}/disk.img", "loopback address"),
        ("http://2130706433:{port}/disk.img", "loopback address"),
        ("file:///etc/passwd", "only http:// and https://"),
    ],
)
def test_it_refuses_a_redirect_to_a_forbidden_place(server, dest, public_alias, location, reason):
    server.routes["/disk.img"] = body(mbr_disk(MiB))
    server.routes["/go"] = redirect(location.format(port=server.port, PUBLIC_IP=PUBLIC_IP))
    with pytest.raises(FetchRefused) as refused:
        download(server.url("/go", host="mirror.test"), str(dest), max_bytes=2 * MiB)
    message = str(refused.value)
    assert message.startswith(f"http://mirror.test:{server.port}/go redirected to ")
    assert reason in message.partition(", which is refused: ")[2]
    assert public_alias == [PUBLIC_IP]  # the redirect target was never connected to
    assert [path for path, _host in server.requests] == ["/go"]
    assert listing(dest) == []


def test_it_refuses_a_redirect_with_credentials_without_repeating_them(server, dest, public_alias):
    server.routes["/go"] = redirect(f"http://admin:s3cr3t@mirror.test:{server.port}/disk.img")
    with pytest.raises(FetchRefused) as refused:
        download(server.url("/go", host="mirror.test"), str(dest), max_bytes=MiB)
    assert "must not contain a user name or password" in str(refused.value)
    assert "s3cr3t" not in str(refused.value)
    assert "admin" not in str(refused.value)


def test_it_refuses_a_redirect_to_an_unspecified_address_even_when_private_is_allowed(server, dest):
    server.routes["/go"] = redirect(f"http://0.0.0.0:{server.port}/disk.img")
    with pytest.raises(FetchRefused, match=r"which is refused: 0\.0\.0\.0 is an unspecified address"):
        download(server.url("/go"), str(dest), max_bytes=MiB, allow_private=True)


# --- size limits, errors, timeouts ------------------------------------------------------------


def test_it_refuses_a_declared_size_over_the_limit_before_reading(server, dest):
    server.routes["/big.img"] = body(mbr_disk(3 * MiB))
    with pytest.raises(FetchRefused, match=r"the file is 3\.0 MiB \(3145728 bytes\), more than the 2\.0 MiB"):
        download(server.url("/big.img"), str(dest), max_bytes=2 * MiB, allow_private=True)
    assert listing(dest) == []


def test_it_stops_an_undeclared_body_over_the_limit(server, dest):
    server.routes["/endless"] = endless
    progress = []
    with pytest.raises(FetchRefused, match=r"sent more than the 2\.0 MiB \(2097152 bytes\) allowed"):
        download(
            server.url("/endless"),
            str(dest),
            max_bytes=2 * MiB,
            allow_private=True,
            progress=lambda done, total: progress.append((done, total)),
        )
    assert listing(dest) == []
    assert progress and progress[-1][0] <= 2 * MiB


def test_it_accepts_a_file_of_exactly_the_limit(server, dest):
    server.routes["/exact.img"] = body(mbr_disk(MiB), content_length=False)
    fetched = download(server.url("/exact.img"), str(dest), max_bytes=MiB, allow_private=True)
    assert fetched.size_bytes == MiB


def test_it_refuses_a_body_cut_short(server, dest):
    server.routes["/cut.img"] = truncated(2 * MiB, mbr_disk(MiB))
    with pytest.raises(FetchRefused, match=r"closed after 1048576 of 2097152 bytes"):
        download(server.url("/cut.img"), str(dest), max_bytes=4 * MiB, allow_private=True)
    assert listing(dest) == []


@pytest.mark.parametrize(
    ("status", "text"), [(404, "HTTP 404 Not Found"), (500, "HTTP 500 Internal Server Error")]
)
def test_it_reports_the_http_status(server, dest, status, text):
    server.routes["/image.qcow2"] = body(b"<html>no</html>", status=status)
    with pytest.raises(FetchRefused, match=rf"^http://127\.0\.0\.1:\d+/image\.qcow2 answered {text}$"):
        download(server.url("/image.qcow2"), str(dest), max_bytes=MiB, allow_private=True)
    assert listing(dest) == []


def test_it_leaves_the_query_out_of_messages(server, dest):
    with pytest.raises(FetchRefused) as refused:
        download(server.url("/missing?signature=s3cr3t"), str(dest), max_bytes=MiB, allow_private=True)
    assert "404" in str(refused.value)
    assert "s3cr3t" not in str(refused.value)


def test_it_times_out(server, dest):
    server.routes["/slow"] = slow(3)
    started = time.monotonic()
    with pytest.raises(FetchRefused, match=r"/slow did not answer within 0\.3 s"):
        download(server.url("/slow"), str(dest), max_bytes=MiB, allow_private=True, timeout=0.3)
    assert time.monotonic() - started < 2
    assert listing(dest) == []


def test_it_stops_a_download_that_trickles_past_the_overall_time_limit(server, dest):
    # 4 KiB every 50 ms: each read answers at once, the whole 3 MiB would take 40 s.
    server.routes["/trickle.img"] = trickle(mbr_disk(), piece=4096, every=0.05)
    started = time.monotonic()
    with pytest.raises(FetchRefused, match=r"^the download did not finish within the 1\.5 s allowed$"):
        download(
            server.url("/trickle.img"), str(dest), max_bytes=4 * MiB, allow_private=True, total_timeout=1.5
        )
    assert 1.4 < time.monotonic() - started < 2.5
    assert listing(dest) == []  # no partial file


def test_the_overall_time_limit_also_bounds_waiting_for_the_answer(server, dest):
    server.routes["/slow"] = slow(3)
    started = time.monotonic()
    with pytest.raises(FetchRefused, match=r"did not finish within the 0\.5 s allowed"):
        download(server.url("/slow"), str(dest), max_bytes=MiB, allow_private=True, total_timeout=0.5)
    assert time.monotonic() - started < 1.5
    assert listing(dest) == []


def test_a_download_within_the_overall_time_limit_is_kept(server, dest):
    data = mbr_disk(64 * 1024)
    server.routes["/trickle.img"] = trickle(data, piece=16 * 1024, every=0.05)
    fetched = download(
        server.url("/trickle.img"), str(dest), max_bytes=MiB, allow_private=True, total_timeout=10
    )
    assert (fetched.format, fetched.size_bytes) == ("raw", len(data))


def test_it_reports_a_refused_connection(dest):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(FetchRefused, match=f"127.0.0.1 refused the connection on port {port}"):
        download(f"http://127.0.0.1:{port}/x", str(dest), max_bytes=MiB, allow_private=True)
    assert listing(dest) == []


# --- checksums and progress -------------------------------------------------------------------


def test_it_accepts_a_matching_checksum_in_any_case(server, dest, qcow2_bytes):
    server.routes["/image.qcow2"] = body(qcow2_bytes)
    expected = hashlib.sha256(qcow2_bytes).hexdigest().upper()
    fetched = download(
        server.url("/image.qcow2"),
        str(dest),
        max_bytes=10 * MiB,
        expected_sha256=expected,
        allow_private=True,
    )
    assert fetched.sha256 == expected.lower()


def test_it_refuses_a_checksum_mismatch_and_removes_the_file(server, dest, qcow2_bytes):
    server.routes["/image.qcow2"] = body(qcow2_bytes)
    actual = hashlib.sha256(qcow2_bytes).hexdigest()
    with pytest.raises(FetchRefused) as refused:
        download(
            server.url("/image.qcow2"),
            str(dest),
            max_bytes=10 * MiB,
            expected_sha256="ab" * 32,
            allow_private=True,
        )
    assert str(refused.value) == f"checksum mismatch: expected SHA-256 {'ab' * 6}…, got {actual[:12]}…"
    assert listing(dest) == []


def test_it_reports_progress_about_every_mib(server, dest):
    data = mbr_disk(5 * MiB + 123)
    server.routes["/disk.img"] = body(data)
    calls = []
    download(
        server.url("/disk.img"),
        str(dest),
        max_bytes=10 * MiB,
        allow_private=True,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls[-1] == (len(data), len(data))
    assert 5 <= len(calls) <= 7
    assert all(total == len(data) for _done, total in calls)
    assert [done for done, _total in calls] == sorted({done for done, _total in calls})
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(calls)]
    assert all(gap >= MiB for gap in gaps[:-1])


def test_it_reports_progress_without_a_total_when_the_server_gives_none(server, dest):
    server.routes["/disk.img"] = body(mbr_disk(2 * MiB), content_length=False)
    calls = []
    download(
        server.url("/disk.img"),
        str(dest),
        max_bytes=4 * MiB,
        allow_private=True,
        progress=lambda *a: calls.append(a),
    )
    assert calls[-1] == (2 * MiB, None)


def test_a_progress_callback_that_raises_cancels_and_removes_the_file(server, dest):
    server.routes["/disk.img"] = body(mbr_disk(3 * MiB))

    class Cancelled(Exception):
        pass

    def cancel(done, total):
        raise Cancelled

    with pytest.raises(Cancelled):
        download(server.url("/disk.img"), str(dest), max_bytes=4 * MiB, allow_private=True, progress=cancel)
    assert listing(dest) == []


# --- content that is not an image, through the download -----------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (HTML_PAGE, "not a disk image: it is an HTML page"),
        (gzip.compress(mbr_disk(64 * 1024)), "not a disk image: it is a gzip archive"),
        (b"Just some text\nand more.\n" * 40, "not a disk image: it is a text file"),
        (b"", "not a disk image: the file is empty"),
    ],
    ids=["html", "gzip", "text", "empty"],
)
def test_it_refuses_a_download_that_is_not_an_image(server, dest, data, reason):
    server.routes["/image.qcow2"] = body(data, headers=[("Content-Type", "application/octet-stream")])
    with pytest.raises(FetchRefused, match=f"^{reason}"):
        download(server.url("/image.qcow2"), str(dest), max_bytes=MiB, allow_private=True)
    assert listing(dest) == []


# --- HTTPS ------------------------------------------------------------------------------------


def _certificate(subject: str, issuer_key, issuer_name, key, *, ca: bool, names=()):
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name) for name in names]), critical=False
        )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture
def tls(tmp_path, fake_dns):
    """An HTTPS server for images.test (a certificate from a CA of our own), and that CA's file."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kvmpanel test CA")])
    ca_cert = _certificate("kvmpanel test CA", ca_key, ca_name, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate("images.test", ca_key, ca_name, key, ca=False, names=["images.test"])
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    chain = tmp_path / "server.pem"
    chain.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain)
    server_names = []
    context.sni_callback = lambda _sock, name, _context: server_names.append(name)
    fake_dns["images.test"] = ["127.0.0.1"]
    fake_dns["other.test"] = ["127.0.0.1"]
    local = LocalServer(context)
    local.server_names = server_names
    local.ca_file = ca_file
    yield local
    local.stop()


def test_it_verifies_https_against_the_host_name_while_connecting_to_the_checked_address(
    tls, dest, monkeypatch, loopback_only
):
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca_file))  # the real default context, trusting our CA
    tls.routes["/disk.img"] = body(mbr_disk(MiB))
    fetched = download(
        tls.url("/disk.img", host="images.test"), str(dest), max_bytes=2 * MiB, allow_private=True
    )
    assert fetched.format == "raw"
    assert tls.server_names == ["images.test"]
    assert tls.requests == [("/disk.img", f"images.test:{tls.port}")]
    assert [address[0] for address in loopback_only] == ["127.0.0.1"]


def test_it_refuses_a_certificate_from_an_unknown_authority(tls, dest, tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "no-such-ca.pem"))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "no-such-dir"))
    with pytest.raises(FetchRefused, match=r"the TLS certificate of images\.test was not accepted"):
        download(tls.url("/disk.img", host="images.test"), str(dest), max_bytes=MiB, allow_private=True)
    assert listing(dest) == []


def test_it_refuses_a_certificate_for_another_name(tls, dest, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca_file))
    with pytest.raises(
        FetchRefused, match=r"the TLS certificate of other\.test was not accepted: Hostname mismatch"
    ):
        download(tls.url("/disk.img", host="other.test"), str(dest), max_bytes=MiB, allow_private=True)
    assert tls.server_names == ["other.test"]
    assert listing(dest) == []


# --- detect_format ----------------------------------------------------------------------------


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_it_reads_the_virtual_size_of_a_qcow2(tmp_path):
    path = tmp_path / "big.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(path), "20G")
    assert detect_format(str(path)) == ("qcow2", 20 * 1024**3)


def test_it_reads_a_version_2_qcow2(tmp_path):
    path = tmp_path / "old.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", "compat=0.10", str(path), "1G")
    assert detect_format(str(path)) == ("qcow2", 1024**3)


def test_it_recognises_an_iso_that_also_carries_a_partition_table(tmp_path):
    data = bytearray(iso_bytes())
    data[510:512] = b"\x55\xaa"  # isohybrid
    assert detect_format(write(tmp_path, "hybrid.iso", bytes(data))) == ("iso", len(data))


def test_it_refuses_a_qcow2_with_a_backing_file(tmp_path):
    base = tmp_path / "base.qcow2"
    overlay = tmp_path / "overlay.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(base), "1M")
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(overlay))
    with pytest.raises(FetchRefused, match="it names a backing file"):
        detect_format(str(overlay))


def test_it_refuses_a_qcow2_with_an_external_data_file(tmp_path):
    image = tmp_path / "image.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={tmp_path / 'data.raw'}", str(image), "1M")
    with pytest.raises(FetchRefused, match="its data lives in an external file"):
        detect_format(str(image))


def test_it_refuses_an_encrypted_qcow2(tmp_path, qcow2_bytes):
    data = bytearray(qcow2_bytes)
    data[32:36] = (1).to_bytes(4, "big")  # crypt_method: AES
    with pytest.raises(FetchRefused, match="it is encrypted"):
        detect_format(write(tmp_path, "secret.qcow2", bytes(data)))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"QFI\xfb\x00\x00\x00\x01" + bytes(64), "a qcow (version 1) image"),
        (b"QFI\xfb\x00\x00\x00\x07" + bytes(200), "unknown qcow2 version 7"),
        (b"QFI\xfb\x00\x00\x00\x03", "the qcow2 header is truncated"),
    ],
    ids=["version-1", "version-7", "truncated"],
)
def test_it_refuses_odd_qcow_headers(tmp_path, data, reason):
    with pytest.raises(FetchRefused, match=re.escape(reason)):
        detect_format(write(tmp_path, "odd.qcow2", data))


@pytest.mark.parametrize(
    ("qemu_format", "name"),
    [
        ("vmdk", "a VMDK image"),
        ("vdi", "a VirtualBox VDI image"),
        ("vpc", "a VHD image"),
        ("vhdx", "a VHDX image"),
        ("qed", "a QED image"),
        ("parallels", "a Parallels image"),
    ],
)
def test_it_names_other_disk_formats_and_refuses_them(tmp_path, qemu_format, name):
    path = tmp_path / f"image.{qemu_format}"
    qemu_img("create", "-q", "-f", qemu_format, str(path), "16M")
    with pytest.raises(FetchRefused, match=f"^not a disk image we take: it is {name} "):
        detect_format(str(path))


def test_it_refuses_another_format_dressed_up_with_a_partition_table(tmp_path):
    # libvirt would probe this upload as VMDK, whose descriptor can name any file on the node.
    data = bytearray(mbr_disk(64 * 1024))
    descriptor = b'# Disk DescriptorFile\nversion=1\nRW 2048 FLAT "/etc/shadow" 0\n'
    data[: len(descriptor)] = descriptor
    with pytest.raises(FetchRefused, match="it is a VMDK descriptor"):
        detect_format(write(tmp_path, "sneaky.img", bytes(data)))


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (gzip.compress(b"disk"), "a gzip archive"),
        (lzma.compress(b"disk"), "an xz archive"),
        (bz2.compress(b"disk"), "a bzip2 archive"),
        (b"\x28\xb5\x2f\xfd" + bytes(100), "a zstd archive"),
        (zip_bytes(), "a zip archive"),
        (b"7z\xbc\xaf\x27\x1c" + bytes(100), "a 7-Zip archive"),
        (tar_bytes(), "a tar archive"),
    ],
    ids=["gzip", "xz", "bzip2", "zstd", "zip", "7z", "tar"],
)
def test_it_names_archives_and_refuses_them(tmp_path, data, name):
    with pytest.raises(FetchRefused, match=f"^not a disk image: it is {name} \\(unpack it"):
        detect_format(write(tmp_path, "archive", data))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (HTML_PAGE, "it is an HTML page"),
        (b"\n\n  <html><body>Error</body></html>", "it is an HTML page"),
        (b'<?xml version="1.0"?><Error><Code>AccessDenied</Code></Error>', "it is an XML document"),
        (b"404 page not found\n", "it is a text file"),
        (b"", "the file is empty"),
        (bytes(range(256)) * 8, "2.0 KiB (2048 bytes) of data with no qcow2 header"),
        (bytes(4096), "of data with no qcow2 header, no ISO 9660 volume descriptor and no partition table"),
    ],
    ids=["html", "html-after-blank-lines", "xml", "text", "empty", "binary", "zeros"],
)
def test_it_refuses_files_that_are_not_images(tmp_path, data, reason):
    with pytest.raises(FetchRefused, match=r"^not a disk image: ") as refused:
        detect_format(write(tmp_path, "page", data))
    assert reason in str(refused.value)
