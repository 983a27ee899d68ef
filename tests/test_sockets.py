"""Websockets and the VNC bridge follow the pages' session rules: two-factor where it is due (staff
who have not set it up are refused, as every page sends them to set it up), and an open socket ends
with its session (sign-out, password change, two-factor change, suspension), told at once through the
user's Channels group and checked again on a timer."""

import asyncio
import json
import queue

import pytest
from asgiref.sync import sync_to_async
from django.test import Client, override_settings
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.plugins.otp_totp.models import TOTPDevice

import hypervisor
from accounts import suspension, twofactor
from vms import consumers, live
from vms.consoles import bridge, tokens

from .asgi_helpers import run_off_loop, websocket
from .factories import make_user, make_vm

pytestmark = pytest.mark.django_db(transaction=True)
ORIGIN = "http://127.0.0.1:8000"
STAFF_MUST_HAVE_2FA = override_settings(KVMPANEL_STAFF_2FA_REQUIRED=True)


def staff_with_two_factor(username="operator"):
    user = make_user(username, is_staff=True, two_factor_enabled=True)
    device = TOTPDevice.objects.create(user=user, name=twofactor.AUTHENTICATOR, confirmed=True)
    return user, device


def signed_in(user, device=None) -> tuple[Client, str]:
    """A browser signed in as `user` (having given the code of `device`, if any), and its cookie."""
    client = Client()
    client.force_login(user)
    if device is not None:
        session = client.session
        session[DEVICE_ID_SESSION_KEY] = device.persistent_id
        session.save()
    return client, f"sessionid={client.cookies['sessionid'].value}"


class EchoConsole:
    """A serial console at the hypervisor's door: whatever is typed comes back, as a guest's echo does.
    (libvirt's test driver has no consoles; tests/integration/test_session_sockets.py uses a real one.)"""

    opened: list = []

    def __init__(self, uri, domain_name, force=False):
        self.incoming: queue.Queue = queue.Queue()
        self.closed = False
        EchoConsole.opened.append(self)

    def recv(self, size=4096) -> bytes:
        data = self.incoming.get()
        return b"" if data is None else data

    def send(self, data: bytes) -> None:
        if not self.closed:
            self.incoming.put(b"echo:" + data)

    def close(self) -> None:
        self.closed = True
        self.incoming.put(None)


@pytest.fixture
def echo_consoles(monkeypatch):
    EchoConsole.opened = []
    monkeypatch.setattr(hypervisor, "SerialConsole", EchoConsole)
    return EchoConsole.opened


async def open_serial(vm, cookie, query=""):
    """A serial console websocket, accepted (whatever it does next)."""
    communicator = websocket(f"/ws/vms/{vm.uuid}/serial/{query}", cookie, ORIGIN)
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    return communicator


def serial_code(vm, cookie, query=""):
    """The close code of a serial console attempt (None if it stayed open and relayed)."""

    async def attempt():
        communicator = await open_serial(vm, cookie, query)
        await communicator.send_to(bytes_data=b"ls\r")
        message = await communicator.receive_output(timeout=5)
        await communicator.disconnect()
        return message.get("code")

    return run_off_loop(attempt())


# 1. The staff two-factor rule on every websocket and on the bridge ---------------------------------


@STAFF_MUST_HAVE_2FA
def test_staff_without_two_factor_cannot_open_a_customers_serial_console(alice, echo_consoles):
    vm = make_vm(alice)
    operator = make_user("operator", is_staff=True)
    _, cookie = signed_in(operator)
    assert serial_code(vm, cookie, "?force=1") == consumers.CLOSE_NOT_FOUND
    assert echo_consoles == []  # the node was never asked


@STAFF_MUST_HAVE_2FA
def test_staff_with_two_factor_given_open_it(alice, echo_consoles):
    vm = make_vm(alice)
    _, cookie = signed_in(*staff_with_two_factor())
    assert serial_code(vm, cookie) is None  # the echo came back
    assert len(echo_consoles) == 1


def test_a_two_factor_user_who_never_gave_the_code_cannot_open_their_own_console(echo_consoles):
    owner = make_user("dana", two_factor_enabled=True)
    TOTPDevice.objects.create(user=owner, name=twofactor.AUTHENTICATOR, confirmed=True)
    vm = make_vm(owner)
    _, cookie = signed_in(owner)  # a session that skipped the second step
    assert serial_code(vm, cookie) == consumers.CLOSE_NOT_FOUND


def test_a_code_of_another_users_device_does_not_count(echo_consoles):
    owner = make_user("dana", two_factor_enabled=True)
    TOTPDevice.objects.create(user=owner, name=twofactor.AUTHENTICATOR, confirmed=True)
    _, someone_elses = staff_with_two_factor()
    _, cookie = signed_in(owner, someone_elses)
    assert serial_code(make_vm(owner), cookie) == consumers.CLOSE_NOT_FOUND


def live_connects(cookie) -> bool:
    async def attempt():
        communicator = websocket("/ws/live/", cookie, ORIGIN)
        connected, _ = await communicator.connect(timeout=5)
        await communicator.disconnect()
        return connected

    return run_off_loop(attempt())


@STAFF_MUST_HAVE_2FA
def test_staff_without_two_factor_do_not_join_the_staff_live_group():
    _, cookie = signed_in(make_user("operator", is_staff=True))
    assert not live_connects(cookie)
    _, cookie = signed_in(*staff_with_two_factor("verified"))
    assert live_connects(cookie)


@STAFF_MUST_HAVE_2FA
def test_the_bridge_refuses_staff_without_two_factor(alice):
    vm = make_vm(alice)
    operator = make_user("operator", is_staff=True)
    _, cookie = signed_in(operator)
    with pytest.raises(bridge.Refused, match="second factor"):
        bridge.resolve(tokens.issue(operator, vm), ORIGIN, cookie)


@STAFF_MUST_HAVE_2FA
def test_the_bridge_lets_staff_with_two_factor_through_to_the_node(alice):
    vm = make_vm(alice)  # the factory's node answers nothing: past every check, the node is asked
    operator, device = staff_with_two_factor()
    _, cookie = signed_in(operator, device)
    with pytest.raises(bridge.Refused, match="did not answer"):
        bridge.resolve(tokens.issue(operator, vm), ORIGIN, cookie)


@STAFF_MUST_HAVE_2FA
def test_the_pages_and_the_sockets_apply_one_rule():
    operator = make_user("operator", is_staff=True)
    client, _ = signed_in(operator)
    assert client.get("/vms/").url == "/accounts/2fa/setup/"  # what the middleware does
    assert twofactor.owes_second_factor(operator, verified=False)


# 2. An open socket ends with its session --------------------------------------------------------


def open_console_then(vm, cookie, act, *, wait=5):
    """Open the serial console, check it relays, run `act()` (sync), then report what the socket did:
    (close code or None, whether typing still reached the console afterwards)."""

    async def session():
        communicator = await open_serial(vm, cookie)
        await communicator.send_to(bytes_data=b"before")
        relayed = await communicator.receive_output(timeout=5)
        assert relayed == {"type": "websocket.send", "bytes": b"echo:before"}
        await sync_to_async(act, thread_sensitive=False)()
        message = await communicator.receive_output(timeout=wait)
        code = message.get("code") if message["type"] == "websocket.close" else None
        await communicator.send_to(bytes_data=b"after")
        await asyncio.sleep(0.3)
        await communicator.disconnect()
        return code

    code = run_off_loop(session())
    console = EchoConsole.opened[-1]
    return code, console.closed


def test_signing_out_ends_the_open_serial_console(alice, echo_consoles):
    vm = make_vm(alice)
    client, cookie = signed_in(alice)
    code, console_closed = open_console_then(vm, cookie, lambda: client.post("/accounts/logout/"))
    assert code == consumers.CLOSE_SIGNED_OUT
    assert console_closed  # the libvirt stream is gone: nothing more reaches the guest


def test_a_password_change_ends_the_other_browsers_console(alice, echo_consoles):
    vm = make_vm(alice)
    _, cookie = signed_in(alice)
    other_browser, _ = signed_in(alice)

    NEW_PASSWORD = "n3w-Passw0rd!x"

    def change_password():
        response = other_browser.post(
            "/accounts/password/",
            {"old_password": "alice-pass-123", "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
        )
        assert response.status_code == 302

    assert open_console_then(vm, cookie, change_password) == (consumers.CLOSE_SIGNED_OUT, True)


def test_turning_two_factor_on_ends_the_sessions_that_never_gave_a_code(alice, echo_consoles):
    vm = make_vm(alice)
    _, cookie = signed_in(alice)

    def turn_on_elsewhere():
        alice.two_factor_enabled = True  # as accounts.twofactor.confirm does, from another browser
        alice.save(update_fields=["two_factor_enabled"])

    assert open_console_then(vm, cookie, turn_on_elsewhere) == (consumers.CLOSE_SIGNED_OUT, True)


def test_suspension_ends_the_open_console(alice, staff, echo_consoles, monkeypatch):
    from vms import actions

    monkeypatch.setattr(actions, "enqueue", lambda operation: None)
    vm = make_vm(alice)
    _, cookie = signed_in(alice)
    result = open_console_then(vm, cookie, lambda: suspension.suspend(alice, by=staff, reason="unpaid"))
    assert result == (consumers.CLOSE_SIGNED_OUT, True)


def test_another_browser_signing_out_leaves_this_console_open(alice, echo_consoles):
    vm = make_vm(alice)
    _, cookie = signed_in(alice)
    other_browser, _ = signed_in(alice)

    async def session():
        communicator = websocket(f"/ws/vms/{vm.uuid}/serial/", cookie, ORIGIN)
        await communicator.connect(timeout=5)
        await sync_to_async(other_browser.post, thread_sensitive=False)("/accounts/logout/")
        await asyncio.sleep(0.5)  # the group was told; this session still holds
        await communicator.send_to(bytes_data=b"still")
        answer = await communicator.receive_output(timeout=5)
        await communicator.disconnect()
        return answer

    assert run_off_loop(session()) == {"type": "websocket.send", "bytes": b"echo:still"}


@override_settings(KVMPANEL_SOCKET_RECHECK_SECONDS=0.5)
def test_a_session_that_ends_unannounced_is_found_on_the_next_check(alice, echo_consoles):
    from django.contrib.sessions.models import Session

    vm = make_vm(alice)
    _, cookie = signed_in(alice)
    # Gone from the store without any signal (an operator cleared sessions, say).
    code, console_closed = open_console_then(vm, cookie, lambda: Session.objects.all().delete())
    assert (code, console_closed) == (consumers.CLOSE_SIGNED_OUT, True)


def test_the_live_socket_says_why_before_it_closes(alice, staff, monkeypatch):
    from vms import actions

    monkeypatch.setattr(actions, "enqueue", lambda operation: None)
    vm = make_vm(alice)
    _, cookie = signed_in(alice)

    async def session():
        communicator = websocket("/ws/live/", cookie, ORIGIN)
        assert (await communicator.connect(timeout=5))[0]
        suspend = sync_to_async(suspension.suspend, thread_sensitive=False)
        await suspend(alice, by=staff, reason="unpaid bills")
        heard = [await communicator.receive_output(timeout=5)]  # the VM's shutdown may come first
        while heard[-1]["type"] != "websocket.close":
            heard.append(await communicator.receive_output(timeout=5))
        await sync_to_async(live.publish_vm_changed, thread_sensitive=False)(vm)
        heard_more = not await communicator.receive_nothing(timeout=0.5)
        return heard, heard_more

    heard, heard_more = run_off_loop(session())
    said = [json.loads(message["text"]) for message in heard[:-1]]
    assert said[-1] == {"signed_out": "Your account was suspended: unpaid bills"}  # the last word
    assert heard[-1] == {"type": "websocket.close", "code": consumers.CLOSE_SIGNED_OUT}
    assert not heard_more


def test_the_bridge_ends_a_console_whose_session_ended(alice):
    _, cookie = signed_in(alice)
    handler = object.__new__(bridge.ConsoleProxyHandler)  # only what the heartbeat needs
    handler.session_key = bridge.session_key(cookie)
    pings = []
    handler.request = type("Socket", (), {"ping": lambda self, data: pings.append(data)})()
    handler.send_ping()
    assert pings == [b""]
    from django.contrib.sessions.models import Session

    Session.objects.all().delete()
    with pytest.raises(bridge.ConsoleProxyHandler.CClose):
        handler.send_ping()
    assert pings == [b""]


# 4. A message that is not JSON on the live socket ---------------------------------------------


def test_a_message_that_is_not_json_gets_an_error_and_the_socket_stays(alice, alice_vm):
    _, cookie = signed_in(alice)

    async def session():
        communicator = websocket("/ws/live/", cookie, ORIGIN)
        assert (await communicator.connect(timeout=5))[0]
        await communicator.send_to(text_data="hello, not json")
        error = await communicator.receive_json_from(timeout=5)
        await communicator.send_to(bytes_data=b"\xff\xfe")
        error_for_bytes = await communicator.receive_json_from(timeout=5)
        await communicator.send_json_to({"usage": {"vm": str(alice_vm.uuid)}})
        still_open = await communicator.receive_nothing(timeout=0.5)  # joined quietly
        await communicator.disconnect()
        return error, error_for_bytes, still_open

    error, error_for_bytes, still_open = run_off_loop(session())
    assert error == error_for_bytes == {"error": "messages must be JSON"}
    assert still_open
