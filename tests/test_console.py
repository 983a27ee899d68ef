"""Console tickets, the bridge's checks, the RFB security proxy and the serial console's access rules."""

import json
import struct
import time

import pytest
import redis
from django.conf import settings
from django.test import Client, override_settings
from django.urls import reverse

from vms.choices import VMState
from vms.consoles import bridge, rfb, tokens

from .asgi_helpers import run_off_loop, websocket
from .factories import make_vm

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def clean_tokens():
    store = redis.Redis.from_url(settings.REDIS_URL)
    yield store
    for key in store.scan_iter(f"{tokens.KEY_PREFIX}*"):
        store.delete(key)


def token_url(vm):
    return reverse("vms:console_token", args=[vm.uuid])


# --- tickets ------------------------------------------------------------------


def test_a_ticket_is_redeemed_once(alice, alice_vm):
    token = tokens.issue(alice, alice_vm)
    assert tokens.redeem(token) == tokens.Grant(user_id=alice.pk, vm_id=alice_vm.pk)
    assert tokens.redeem(token) is None


def test_a_ticket_expires(alice, alice_vm):
    with override_settings(KVMPANEL_CONSOLE_TOKEN_TTL=1):
        token = tokens.issue(alice, alice_vm)
    time.sleep(1.2)
    assert tokens.redeem(token) is None


def test_a_ticket_is_stored_only_hashed(alice, alice_vm, clean_tokens):
    token = tokens.issue(alice, alice_vm)
    keys = [key.decode() for key in clean_tokens.scan_iter(f"{tokens.KEY_PREFIX}*")]
    assert len(keys) == 1 and token not in keys[0]
    assert token not in clean_tokens.get(keys[0]).decode()
    assert clean_tokens.ttl(keys[0]) <= settings.KVMPANEL_CONSOLE_TOKEN_TTL


@pytest.mark.parametrize("token", ["", "x" * 500, "not-a-ticket"])
def test_nonsense_tickets_are_refused(token):
    assert tokens.redeem(token) is None


def test_the_owner_gets_a_ticket_url(client, alice, alice_vm):
    client.force_login(alice)
    response = client.post(token_url(alice_vm))
    assert response.status_code == 200
    url = response.json()["url"]
    assert url.startswith("ws://testserver:") or url.startswith("ws://")
    assert "token=" in url and alice_vm.vnc_password not in url


def test_a_ticket_needs_post(client, alice, alice_vm):
    client.force_login(alice)
    assert client.get(token_url(alice_vm)).status_code == 405


def test_another_customer_gets_404_for_a_ticket(client, bob, alice_vm, clean_tokens):
    client.force_login(bob)
    assert client.post(token_url(alice_vm)).status_code == 404
    assert not list(clean_tokens.scan_iter(f"{tokens.KEY_PREFIX}*"))


def test_a_customer_gets_404_for_a_staff_members_vm(client, alice, staff):
    staff_vm = make_vm(staff)
    client.force_login(alice)
    assert client.post(token_url(staff_vm)).status_code == 404
    assert client.get(reverse("vms:console", args=[staff_vm.uuid])).status_code == 404


def test_staff_get_a_ticket_for_any_vm(client, staff, alice_vm):
    client.force_login(staff)
    assert client.post(token_url(alice_vm)).status_code == 200


def test_no_ticket_for_a_stopped_vm(client, alice, alice_vm):
    alice_vm.set_state(VMState.STOPPED)
    client.force_login(alice)
    response = client.post(token_url(alice_vm))
    assert response.status_code == 409
    assert "stopped" in response.json()["error"]


def test_anonymous_gets_no_ticket(client, alice_vm):
    response = client.post(token_url(alice_vm))
    assert response.status_code == 302


# --- the bridge's checks ---------------------------------------------------


def session_cookie_for(user) -> str:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}; other=1"


@pytest.mark.parametrize(
    "origin, allowed",
    [
        ("http://127.0.0.1:8000", True),
        ("https://localhost", True),
        ("http://evil.example", False),
        ("http://127.0.0.1.evil.example", False),
        ("null", False),
        (None, False),
        ("file://", False),
    ],
)
def test_the_bridge_checks_the_origin(origin, allowed):
    assert bridge.origin_allowed(origin) is allowed


def test_the_bridge_refuses_a_foreign_origin_before_spending_the_ticket(alice, alice_vm):
    token = tokens.issue(alice, alice_vm)
    with pytest.raises(bridge.Refused, match="origin"):
        bridge.resolve(token, "http://evil.example", session_cookie_for(alice))
    assert tokens.redeem(token) is not None


def test_the_bridge_refuses_a_replayed_ticket(alice, alice_vm):
    token = tokens.issue(alice, alice_vm)
    tokens.redeem(token)
    with pytest.raises(bridge.Refused, match="invalid or expired"):
        bridge.resolve(token, "http://127.0.0.1:8000", session_cookie_for(alice))


def test_the_bridge_refuses_a_ticket_used_from_another_session(alice, bob, alice_vm):
    token = tokens.issue(alice, alice_vm)
    with pytest.raises(bridge.Refused, match="does not belong"):
        bridge.resolve(token, "http://127.0.0.1:8000", session_cookie_for(bob))
    with pytest.raises(bridge.Refused, match="invalid or expired"):  # and it is spent
        bridge.resolve(token, "http://127.0.0.1:8000", session_cookie_for(alice))


def test_the_bridge_refuses_a_ticket_for_a_vm_the_user_lost(alice, bob, alice_vm):
    token = tokens.issue(bob, alice_vm)  # as if bob had been allowed once
    with pytest.raises(bridge.Refused, match="no access"):
        bridge.resolve(token, "http://127.0.0.1:8000", session_cookie_for(bob))


def test_the_bridge_refuses_a_suspended_user(alice, alice_vm):
    token = tokens.issue(alice, alice_vm)
    cookie = session_cookie_for(alice)
    alice.is_active = False
    alice.save()
    with pytest.raises(bridge.Refused):
        bridge.resolve(token, "http://127.0.0.1:8000", cookie)


# --- RFB security proxy ------------------------------------------------------


class Pipe:
    """One side of a scripted conversation: what the peer will send, and what we sent."""

    def __init__(self, incoming: bytes):
        self.incoming, self.sent = incoming, b""

    def recv(self, n: int) -> bytes:
        if len(self.incoming) < n:
            raise rfb.RFBError("peer closed")
        data, self.incoming = self.incoming[:n], self.incoming[n:]
        return data

    def send(self, data: bytes) -> None:
        self.sent += data


def test_vnc_authentication_depends_on_the_first_eight_characters():
    # The real check is the integration test: QEMU accepts the bridge's answer.
    response = rfb.vnc_auth_response("password", bytes(16))
    assert len(response) == 16
    assert response != rfb.vnc_auth_response("passwore", bytes(16))
    assert response == rfb.vnc_auth_response("password\0", bytes(16))  # only 8 characters count


def test_the_bridge_authenticates_to_qemu_with_the_vm_password():
    challenge = bytes(range(16))
    server = Pipe(b"RFB 003.008\n" + bytes([1, rfb.SECURITY_VNC_AUTH]) + challenge + struct.pack("!I", 0))
    rfb.authenticate_to_server(server.recv, server.send, "s3cretpw")
    assert server.sent == rfb.VERSION + bytes([2]) + rfb.vnc_auth_response("s3cretpw", challenge)


def test_a_wrong_vnc_password_is_reported():
    reason = b"Authentication failed"
    server = Pipe(b"RFB 003.008\n" + bytes([1, 2]) + bytes(16) + struct.pack("!II", 1, len(reason)) + reason)
    with pytest.raises(rfb.RFBError, match="Authentication failed"):
        rfb.authenticate_to_server(server.recv, server.send, "wrong")


def test_the_browser_is_offered_only_no_authentication():
    client = Pipe(b"RFB 003.008\n" + bytes([rfb.SECURITY_NONE]))
    rfb.accept_client(client.recv, client.send)
    assert client.sent == rfb.VERSION + bytes([1, rfb.SECURITY_NONE]) + struct.pack("!I", 0)


def test_a_browser_choosing_vnc_auth_is_refused():
    client = Pipe(b"RFB 003.008\n" + bytes([rfb.SECURITY_VNC_AUTH]))
    with pytest.raises(rfb.RFBError):
        rfb.accept_client(client.recv, client.send)


# --- serial console websocket ------------------------------------------------


def serial_attempt(vm, cookie: str, origin: str = "http://127.0.0.1:8000"):
    """(accepted, close code) of a serial console websocket attempt."""

    async def attempt():
        communicator = websocket(f"/ws/vms/{vm.uuid}/serial/", cookie, origin)
        connected, _ = await communicator.connect(timeout=5)
        code = None
        if connected:
            message = await communicator.receive_output(timeout=5)
            code = message.get("code")
        await communicator.disconnect()
        return connected, code

    return run_off_loop(attempt())


@pytest.mark.django_db(transaction=True)
def test_a_non_owner_cannot_open_the_serial_console(alice, bob, alice_vm):
    assert serial_attempt(alice_vm, session_cookie_for(bob))[1] == 4404


@pytest.mark.django_db(transaction=True)
def test_anonymous_cannot_open_the_serial_console(alice_vm):
    assert serial_attempt(alice_vm, "")[1] == 4404


@pytest.mark.django_db(transaction=True)
def test_the_serial_console_refuses_a_foreign_origin(alice, alice_vm):
    connected, _ = serial_attempt(alice_vm, session_cookie_for(alice), origin="http://evil.example")
    assert not connected


@pytest.mark.django_db(transaction=True)
def test_the_owner_reaches_the_node_for_the_serial_console(alice, alice_vm):
    # The factory's node URI answers nothing: the owner passes the access check
    # and is told the node is unavailable (not "not found").
    assert serial_attempt(alice_vm, session_cookie_for(alice))[1] == 4503


def test_a_ticket_holds_only_the_user_and_the_vm(alice, alice_vm, clean_tokens):
    tokens.issue(alice, alice_vm)
    (key,) = list(clean_tokens.scan_iter(f"{tokens.KEY_PREFIX}*"))
    assert json.loads(clean_tokens.get(key)) == {"user": alice.pk, "vm": alice_vm.pk}
