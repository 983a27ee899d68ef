"""Fetching OS images from a URL an operator gives, without letting that URL reach inside our network.

A worker calls `download()` (images/fetch.py) and then places the file on each node
(images/placement.py). The URL is untrusted twice over:

- where it points (SSRF): a name is resolved once, every address it has is checked (loopback,
  private, link-local, metadata and other non-public addresses are refused unless the operator
  allows private sources), and we then connect to an address we checked, never to the name again,
  so a DNS answer that changes between check and connect (rebinding) cannot move us. Redirects
  are followed by hand and every new URL is checked the same way.
- what it serves: only qcow2, ISO 9660 and raw disks with a partition table are kept, judged by
  their bytes (images/formats.py).
"""

import contextlib
import hashlib
import http.client
import ipaddress
import os
import re
import socket
import ssl
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO
from urllib.parse import SplitResult, quote, urljoin, urlsplit, urlunsplit

from .formats import FetchRefused, detect_format, size_text

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Progress = Callable[[int, int | None], None]

DEFAULT_PORTS = {"http": 80, "https": 443}
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
CHUNK_BYTES = 64 * 1024
PROGRESS_STEP_BYTES = 1024 * 1024
USER_AGENT = "kvmpanel-imagefetch/1"
PART_SUFFIX = ".part"  # a file still carrying it was left by a killed worker: safe to delete

# Refused even when the operator allows private sources: nothing is ever served from these.
_NEVER = (
    (("0.0.0.0/8", "::/128"), "an unspecified address"),  # Linux treats 0.x as "this host"
    (("224.0.0.0/4", "ff00::/8"), "a multicast address"),
    (("255.255.255.255/32",), "the broadcast address"),
)
_METADATA = (ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"))
# Refused unless the operator allows private sources; anything else not public is "reserved".
_NOT_PUBLIC = (
    (("127.0.0.0/8", "::1/128"), "a loopback address"),
    (("169.254.0.0/16", "fe80::/10"), "a link-local address"),
    (("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"), "a private address"),
    (("100.64.0.0/10",), "a carrier-grade NAT (shared) address"),
    (("fec0::/10",), "a site-local address"),  # deprecated, and not "private" to Python 3.11
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

# Space and control characters: refused rather than guessed at (they also split HTTP headers).
_UNSAFE_URL_CHARS = re.compile(r"[\x00-\x20\x7f]")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_PATH_SAFE = "/%!$&'()*+,;=:@-._~"


@dataclass(frozen=True)
class Fetched:
    """A downloaded, checked image, waiting in `path` to be uploaded to the nodes."""

    path: str
    size_bytes: int
    sha256: str
    format: str
    virtual_size_bytes: int | None


@dataclass(frozen=True)
class _Target:
    """A URL taken apart, with the addresses its host resolved to, every one of them checked."""

    url: str
    scheme: str
    host: str
    port: int
    request_target: str
    addresses: tuple[tuple[int, tuple], ...]  # (family, sockaddr) as getaddrinfo gave them

    @property
    def shown(self) -> str:
        return _shown(self.url)


# --- where the URL points ---------------------------------------------------------------------


def check_source_url(url: str, *, allow_private: bool = False) -> None:
    """Refuse a URL we would not fetch: wrong scheme, credentials, or a host with any non-public
    address (unless `allow_private`). Resolves the name, sends nothing to it."""
    _checked_target(url, allow_private=allow_private)


def _checked_target(url: str, *, allow_private: bool) -> _Target:
    parts = _split(url)
    host = parts.hostname or ""
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    addresses = _resolve(host, port)
    for _family, sockaddr in addresses:
        _check_address(host, ipaddress.ip_address(sockaddr[0]), allow_private=allow_private)
    return _Target(url, parts.scheme, host, port, _request_target(parts), tuple(addresses))


def _split(url: str) -> SplitResult:
    if _UNSAFE_URL_CHARS.search(url):
        raise FetchRefused("the URL contains a space or a control character (percent-encode it)")
    try:
        parts = urlsplit(url)
        port = parts.port  # parsed lazily: a bad port only shows here
    except ValueError as error:
        raise FetchRefused(f"the URL is malformed: {error}") from error
    if parts.scheme not in DEFAULT_PORTS:
        given = f"{parts.scheme[:20]}:" if parts.scheme else "no scheme"
        raise FetchRefused(f"only http:// and https:// URLs can be fetched, not {given}")
    if "@" in parts.netloc:
        # Never echoed back: the message would carry the password into logs and pages.
        raise FetchRefused("the URL must not contain a user name or password")
    if not parts.hostname:
        raise FetchRefused("the URL has no host")
    if port == 0:
        raise FetchRefused("the URL's port must be between 1 and 65535")
    return parts


def _request_target(parts: SplitResult) -> str:
    """Path and query as sent on the request line; non-ASCII is percent-encoded, '%' kept."""
    target = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        target += "?" + quote(parts.query, safe=_PATH_SAFE + "?")
    return target


def _resolve(host: str, port: int) -> list[tuple[int, tuple]]:
    """Every address of `host`, as (family, sockaddr): the one place that asks DNS."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise FetchRefused(f"cannot resolve {host}: {error.strerror}") from error
    except UnicodeError as error:
        raise FetchRefused(f"{host} is not a valid host name") from error
    addresses = []
    for family, _type, _proto, _name, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and (family, sockaddr) not in addresses:
            addresses.append((family, sockaddr))
    if not addresses:
        raise FetchRefused(f"{host} has no IPv4 or IPv6 address")
    return addresses


def _check_address(host: str, ip: IPAddress, *, allow_private: bool) -> None:
    embedded = _embedded_ipv4(ip)
    judged = embedded if embedded is not None else ip
    problem = _address_problem(judged, allow_private=allow_private)
    if problem is None:
        return
    if _is_ip_literal(host):
        message = f"{host} is {problem}"
        if judged is not ip:
            message += f" (the IPv4 address {judged} inside an IPv6 address)"
    else:
        message = f"{host} resolves to {ip}, {problem}"
    if _address_problem(judged, allow_private=True) is None:
        message += (
            "; fetching from the panel's own network must be allowed by an operator first "
            "(KVMPANEL_IMAGE_ALLOW_PRIVATE=1 in the panel's environment)"
        )
    raise FetchRefused(message)


def _address_problem(ip: IPAddress, *, allow_private: bool) -> str | None:
    """What makes `ip` unfit to fetch from, or None."""
    for networks, description in _NEVER:
        if any(ip in ipaddress.ip_network(network) for network in networks):
            return description
    if allow_private:
        return None
    if ip in _METADATA:
        return "the cloud metadata address"
    for networks, description in _NOT_PUBLIC:
        if any(ip in ipaddress.ip_network(network) for network in networks):
            return description
    # Deny by default: documentation, benchmarking, 240/4, Teredo, ::/8 and the rest.
    if ip.is_reserved or not ip.is_global:
        return "a reserved address (not publicly routable)"
    return None


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, NAT64, 6to4): the one packets reach."""
    if ip.version != 6:
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _shown(url: str) -> str:
    """The URL as put in messages: without credentials or query (signed URLs carry secrets there)."""
    parts = urlsplit(url)
    shown = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
    return shown if len(shown) <= 120 else shown[:119] + "…"


# --- talking to the server --------------------------------------------------------------------


def _tls_context() -> ssl.SSLContext:
    """The system's CAs, certificate and host name verified (the default context does both)."""
    return ssl.create_default_context()


def _open_socket(family: int, sockaddr: tuple, timeout: float) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(sockaddr)
    except OSError:
        sock.close()
        raise
    return sock


class _PinnedConnection(http.client.HTTPConnection):
    """HTTP or HTTPS to a host name, over a socket to an address we already checked.

    http.client still writes `Host:` from the name, and TLS sends the name as SNI and verifies
    the certificate against it; only the TCP connection skips DNS.
    """

    def __init__(self, target: _Target, timeout: float):
        super().__init__(target.host, target.port, timeout=timeout)
        self.default_port = DEFAULT_PORTS[target.scheme]  # so Host: names the port only when unusual
        self._target = target
        # Kept after http.client lets go of `sock` (it does once the answer says "Connection: close";
        # the answer still reads from it): the read timeout is changed on it as the deadline nears.
        self.pinned_socket: socket.socket | None = None

    def connect(self) -> None:
        sock = self._first_reachable()
        if self._target.scheme == "https":
            try:
                sock = _tls_context().wrap_socket(sock, server_hostname=self._target.host)
            except OSError:
                sock.close()
                raise
        self.sock = self.pinned_socket = sock

    def _first_reachable(self) -> socket.socket:
        last_error: OSError | None = None
        for family, sockaddr in self._target.addresses:
            try:
                return _open_socket(family, sockaddr, self.timeout)
            except OSError as error:
                last_error = error
        assert last_error is not None  # _resolve never returns an empty list
        raise last_error


class _Deadline:
    """The whole download's time limit: every connect and read waits at most what is left of it."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self._at = None if seconds is None else time.monotonic() + seconds

    def left(self) -> float | None:
        return None if self._at is None else self._at - time.monotonic()

    def bound(self, timeout: float) -> float:
        """`timeout`, or less when the download must end sooner; refuses once the time is up."""
        left = self.left()
        if left is None:
            return timeout
        if left <= 0:
            raise self.exceeded()
        return min(timeout, left)

    def passed(self) -> bool:
        left = self.left()
        return left is not None and left <= 0

    def exceeded(self) -> "FetchRefused":
        return FetchRefused(f"the download did not finish within the {self.seconds:g} s allowed")


@contextlib.contextmanager
def _network_errors(target: _Target, timeout: float, deadline: _Deadline | None = None) -> Iterator[None]:
    """Socket, TLS and HTTP errors as FetchRefused with a sentence an operator can act on."""
    try:
        yield
    except TimeoutError as error:
        if deadline is not None and deadline.passed():
            raise deadline.exceeded() from error
        raise FetchRefused(f"{target.shown} did not answer within {timeout:g} s") from error
    except ssl.SSLCertVerificationError as error:
        raise FetchRefused(
            f"the TLS certificate of {target.host} was not accepted: {error.verify_message}"
        ) from error
    except ssl.SSLError as error:
        raise FetchRefused(f"TLS with {target.host} failed: {error.reason or error}") from error
    except http.client.RemoteDisconnected as error:
        raise FetchRefused(f"{target.shown} closed the connection without answering") from error
    except http.client.IncompleteRead as error:
        raise FetchRefused(f"the connection to {target.host} broke before the whole file arrived") from error
    except http.client.HTTPException as error:
        raise FetchRefused(f"{target.shown} did not answer in valid HTTP ({type(error).__name__})") from error
    except ConnectionRefusedError as error:
        raise FetchRefused(f"{target.host} refused the connection on port {target.port}") from error
    except OSError as error:
        raise FetchRefused(f"could not reach {target.host}: {error.strerror or error}") from error


def _get(
    target: _Target, timeout: float, deadline: _Deadline
) -> tuple[_PinnedConnection, http.client.HTTPResponse]:
    connection = _PinnedConnection(target, deadline.bound(timeout))
    try:
        with _network_errors(target, timeout, deadline):
            connection.request(
                "GET",
                target.request_target,
                headers={"User-Agent": USER_AGENT, "Accept": "*/*", "Connection": "close"},
            )
            return connection, connection.getresponse()
    except BaseException:
        connection.close()
        raise


def _get_following_redirects(
    url: str, *, allow_private: bool, timeout: float, max_redirects: int, deadline: _Deadline
) -> tuple[_PinnedConnection, http.client.HTTPResponse, _Target]:
    """The first answer that is not a redirect; every URL on the way is checked before use."""
    target = _checked_target(url, allow_private=allow_private)
    for hop in range(max_redirects + 1):
        connection, response = _get(target, timeout, deadline)
        if response.status not in REDIRECT_STATUSES:
            return connection, response, target
        location = (response.getheader("Location") or "").strip()
        connection.close()  # the body of a redirect is never read
        if not location:
            raise FetchRefused(f"{target.shown} answered HTTP {response.status} without a Location to go to")
        next_url = urljoin(target.url, location)
        if hop == max_redirects:
            raise FetchRefused(f"more than {max_redirects} redirects; the last one led to {_shown(next_url)}")
        try:
            target = _checked_target(next_url, allow_private=allow_private)
        except FetchRefused as error:
            raise FetchRefused(
                f"{target.shown} redirected to {_shown(next_url)}, which is refused: {error}"
            ) from error
    raise AssertionError("unreachable: the loop returns or raises")


def _declared_length(response: http.client.HTTPResponse, target: _Target, max_bytes: int) -> int | None:
    """Content-Length when the server sent one; refuses errors and files too big before any body."""
    if response.status != 200:
        raise FetchRefused(f"{target.shown} answered HTTP {_status_text(response.status)}")
    declared = response.length  # http.client's parsed Content-Length, None when absent or chunked
    if declared is not None and declared > max_bytes:
        raise FetchRefused(f"the file is {size_text(declared)}, more than the {size_text(max_bytes)} allowed")
    return declared


def _status_text(status: int) -> str:
    # Our own phrase, not the server's: that one is arbitrary text from a stranger.
    try:
        return f"{status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


# --- storing what arrives ---------------------------------------------------------------------


@contextlib.contextmanager
def _disk_errors(dest_dir: str) -> Iterator[None]:
    try:
        yield
    except OSError as error:
        raise FetchRefused(
            f"could not write the download into {dest_dir}: {error.strerror or error}"
        ) from error


@contextlib.contextmanager
def _removed_on_failure(path: str) -> Iterator[None]:
    """Whatever goes wrong (a refusal, a crash, a progress callback that cancels), the partial file
    goes: nothing half-downloaded or unchecked may be left for anyone to upload."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise


def _stream(
    connection: _PinnedConnection,
    response: http.client.HTTPResponse,
    handle: IO[bytes],
    *,
    target: _Target,
    declared: int | None,
    max_bytes: int,
    progress: Progress | None,
    timeout: float,
    deadline: _Deadline,
) -> tuple[int, str]:
    """Copy the body into `handle`, hashing as it goes; returns (size, sha256 hex)."""
    digest = hashlib.sha256()
    done = reported = 0
    while True:
        with _network_errors(target, timeout, deadline):
            if deadline.seconds is not None and not response.isclosed():
                # A server that trickles bytes never trips the per-read timeout: the deadline stops it.
                connection.pinned_socket.settimeout(deadline.bound(timeout))
            chunk = response.read(CHUNK_BYTES)
        if not chunk:
            break
        done += len(chunk)
        if done > max_bytes:
            raise FetchRefused(f"{target.shown} sent more than the {size_text(max_bytes)} allowed")
        digest.update(chunk)
        with _disk_errors(os.path.dirname(handle.name)):
            handle.write(chunk)
        if progress is not None and done - reported >= PROGRESS_STEP_BYTES:
            progress(done, declared)
            reported = done
    # http.client does not notice a close-delimited body cut short: Content-Length does.
    if declared is not None and done != declared:
        raise FetchRefused(f"the connection to {target.host} closed after {done} of {declared} bytes")
    if progress is not None and reported != done:
        progress(done, declared)
    return done, digest.hexdigest()


def _expected_digest(expected_sha256: str) -> str:
    expected = expected_sha256.strip().lower()
    if expected and not _SHA256_HEX.fullmatch(expected):
        raise FetchRefused(
            f"the expected SHA-256 must be 64 hexadecimal characters (got {len(expected)} characters)"
        )
    return expected


def download(
    url: str,
    dest_dir: str,
    *,
    max_bytes: int,
    expected_sha256: str = "",
    allow_private: bool = False,
    progress: Progress | None = None,
    timeout: float = 30.0,
    total_timeout: float | None = None,
    max_redirects: int = 5,
) -> Fetched:
    """Fetch `url` into a new file in `dest_dir` and check it is a disk image we can use.

    Raises FetchRefused, leaving nothing in `dest_dir`, for a refused URL or redirect, an HTTP
    error, a timeout, more than `max_bytes`, a checksum mismatch or a file that is not an image.
    `timeout` bounds each connect and each read; `total_timeout`, when given, the whole download
    (redirects included). `progress(done, total)` is called about every MiB and once at the end;
    `total` is None when the server did not say.
    """
    expected = _expected_digest(expected_sha256)
    if max_bytes <= 0 or max_redirects < 0 or (total_timeout is not None and total_timeout <= 0):
        raise FetchRefused("the size and time limits must be positive and the redirect limit not negative")
    deadline = _Deadline(total_timeout)
    if not os.path.isdir(dest_dir):
        raise FetchRefused(f"the download directory {dest_dir} does not exist")
    connection, response, target = _get_following_redirects(
        url, allow_private=allow_private, timeout=timeout, max_redirects=max_redirects, deadline=deadline
    )
    with contextlib.closing(connection):
        declared = _declared_length(response, target, max_bytes)
        with _disk_errors(dest_dir):
            handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed below; kept on success)
                dir=dest_dir, prefix="imagefetch-", suffix=PART_SUFFIX, delete=False
            )
        with _removed_on_failure(handle.name), handle:
            size, sha256 = _stream(
                connection,
                response,
                handle,
                target=target,
                declared=declared,
                max_bytes=max_bytes,
                progress=progress,
                timeout=timeout,
                deadline=deadline,
            )
    return accept_file(handle.name, size=size, sha256=sha256, expected_sha256=expected)


def accept_file(path: str, *, size: int, sha256: str, expected_sha256: str = "") -> Fetched:
    """The checks every new image passes, however it arrived (downloaded here, or uploaded by an
    operator's browser): the expected SHA-256, when given, and the format read from its bytes.

    `path` is a complete `.part` file whose size and SHA-256 were counted as it was written. It is
    renamed to end in its format and returned as Fetched; on refusal (FetchRefused) it is removed.
    """
    with _removed_on_failure(path):
        expected = _expected_digest(expected_sha256)
        if expected and expected != sha256:
            raise FetchRefused(f"checksum mismatch: expected SHA-256 {expected[:12]}…, got {sha256[:12]}…")
        image_format, virtual_size = detect_format(path)
        accepted = path.removesuffix(PART_SUFFIX) + "." + image_format
        with _disk_errors(os.path.dirname(path)):
            os.replace(path, accepted)
    return Fetched(accepted, size, sha256, image_format, virtual_size)
