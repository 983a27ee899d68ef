"""The VNC console bridge: websockify with the panel's token check and RFB security proxy.

Browser ──WebSocket(token)──► bridge ──TCP──► QEMU VNC on the node (127.0.0.1 or its management address)

For every connection the bridge: checks the Origin against ALLOWED_HOSTS;
redeems the one-time token (a replay, an expired or unknown token is refused);
checks that the session cookie is a session that may act now (accounts.sessions:
the rules pages follow, two-factor included) and belongs to the token's user,
and that this user may still open this VM; looks the VNC port up through
libvirt; authenticates to QEMU with the VM's password; and offers the browser
an unauthenticated RFB session on this one connection. While the connection
is open, the session is checked again at every heartbeat: a session that
ended (signed out, password or two-factor changed, suspended) ends it.
"""

import logging
import select
import socket
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlparse

from django.conf import settings
from django.db import close_old_connections, connections
from django.http.request import split_domain_port, validate_host
from websockify.websocketproxy import ProxyRequestHandler, WebSocketProxy

import hypervisor
from accounts import sessions
from vms.models import VirtualMachine

from . import rfb, tokens

log = logging.getLogger(__name__)
CONNECT_TIMEOUT = 5
HANDSHAKE_TIMEOUT = 30


class Refused(Exception):
    """The connection is not allowed; the message is safe to show."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def origin_allowed(origin: str | None) -> bool:
    """True when the Origin header names one of the panel's own hosts."""
    if not origin:
        return False
    parsed = urlparse(origin)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return False
    host, _port = split_domain_port(parsed.netloc)
    return validate_host(host, settings.ALLOWED_HOSTS)


def session_key(cookie_header: str | None) -> str | None:
    """The Django session key in the Cookie header, if any."""
    if not cookie_header:
        return None
    cookie = SimpleCookie()
    cookie.load(cookie_header)
    morsel = cookie.get(settings.SESSION_COOKIE_NAME)
    return morsel.value if morsel is not None else None


def resolve(token: str, origin: str | None, cookie_header: str | None) -> tuple[str, int, str]:
    """(host, port, VNC password) for a console connection, or Refused."""
    if not origin_allowed(origin):
        raise Refused(403, "origin not allowed")
    grant = tokens.redeem(token)
    if grant is None:
        raise Refused(403, "invalid or expired console token")
    user = sessions.user_of_session(session_key(cookie_header))
    if user is None:
        raise Refused(403, "the session is signed out, suspended or owes its second factor")
    if user.pk != grant.user_id:
        raise Refused(403, "console token does not belong to this session")
    vm = VirtualMachine.objects.visible_to(user).select_related("node").filter(pk=grant.vm_id).first()
    if vm is None:
        raise Refused(403, "no access to this VM")
    try:
        with hypervisor.connect(vm.node.uri) as node:
            port = node.vnc_port(vm.domain_name)
    except hypervisor.HypervisorError as error:
        raise Refused(503, f"the VM's node did not answer: {error}") from error
    if port is None:
        raise Refused(409, "the VM is not running")
    return vm.node.console_host, port, vm.vnc_password


class ConsoleProxyHandler(ProxyRequestHandler):
    """One browser connection. websockify forks a process for each."""

    def validate_connection(self):
        close_old_connections()
        token = (parse_qs(urlparse(self.path).query).get("token") or [""])[0]
        self.session_key = session_key(self.headers.get("Cookie"))
        try:
            self.target = resolve(token, self.headers.get("Origin"), self.headers.get("Cookie"))
        except Refused as refusal:
            log.warning("console refused from %s: %s", self.client_address[0], refusal)
            self.send_error(refusal.status, str(refusal))
            raise self.server.EClose(str(refusal)) from None
        finally:
            connections.close_all()

    def send_ping(self, data=b""):
        # Every heartbeat while the console is open: does its session still hold?
        close_old_connections()
        try:
            user = sessions.user_of_session(self.session_key)
        finally:
            connections.close_all()
        if user is None:
            raise self.CClose(4401, "the session has ended")
        super().send_ping(data)

    def new_websocket_client(self):
        host, port, password = self.target
        try:
            vnc = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
        except OSError as error:
            raise self.CClose(1011, "cannot reach the VM's display") from error
        try:
            vnc.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._handshake(vnc, password)
            vnc.settimeout(None)
            self.do_proxy(vnc)
        finally:
            vnc.close()

    def _handshake(self, vnc: socket.socket, password: str) -> None:
        client = _ClientReader(self)
        try:
            rfb.authenticate_to_server(lambda n: _recv_exact(vnc, n), vnc.sendall, password)
            rfb.accept_client(client.recv, lambda data: self.send_frames([data]))
        except (rfb.RFBError, OSError) as error:
            raise self.CClose(1011, str(error)[:120]) from error
        if client.leftover:  # the client's first message after the handshake (ClientInit)
            vnc.sendall(client.leftover)


class _ClientReader:
    """Exact reads from the browser's WebSocket frames, keeping what is left over."""

    def __init__(self, handler: ConsoleProxyHandler):
        self.handler = handler
        self.leftover = b""

    def recv(self, n: int) -> bytes:
        while len(self.leftover) < n:
            readable, _, _ = select.select([self.handler.request], [], [], HANDSHAKE_TIMEOUT)
            if not readable:
                raise rfb.RFBError("the browser did not finish the handshake")
            frames, closed = self.handler.recv_frames()
            if closed:
                raise rfb.RFBError("the browser closed the connection")
            self.leftover += b"".join(frames)
        data, self.leftover = self.leftover[:n], self.leftover[n:]
        return data


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise rfb.RFBError("the VNC server closed the connection")
        data += chunk
    return data


def serve(host: str, port: int) -> None:
    """Run the bridge until stopped."""
    server = WebSocketProxy(
        RequestHandlerClass=ConsoleProxyHandler,
        listen_host=host,
        listen_port=port,
        heartbeat=settings.KVMPANEL_SOCKET_RECHECK_SECONDS,  # and the session is checked again each time
        # The handler finds each connection's target itself.
        target_host="unused",
        target_port=0,
    )
    server.start_server()
