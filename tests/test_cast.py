"""The fixed cast against every page and every websocket route.

alice owns the objects, bob is another customer, staff runs the platform,
carol is suspended (her session was open when it happened), and anonymous
has no session. The routes are read from the URL configuration itself: a new
page fails here until it is given a rule below. The REST API has its own
cast test (tests/test_api_cast.py); every backoffice (Django admin) page is
tried by those who must never reach it.
"""

import re

import pytest
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from accounts import suspension
from accounts.models import AuditEntry, SSHKey
from api import tokens
from api.models import APIToken
from backups.models import Backup, BackupSchedule, BackupStore
from firewall.models import Firewall, FirewallRule
from network import allocation
from network.models import Address, Pool
from vms import actions
from vms.choices import VMState
from vms.models import Operation, Snapshot
from vms.routing import websocket_urlpatterns

from .asgi_helpers import run_off_loop, websocket
from .factories import make_user, make_vm
from .test_console import session_cookie_for
from .test_ssh_keys import ed25519_key

pytestmark = pytest.mark.django_db

# Anyone may open these: signing in, signing up, passwords, email links, signing out.
PUBLIC = {
    "login", "login_verify", "logout", "signup", "resend_confirmation", "confirm_email",
    "password_reset", "password_reset_done", "password_reset_confirm", "password_reset_complete",
}  # fmt: skip
# A signed-in user's own pages: no object of anyone else's is named in them.
OWN = {
    "profile", "reauth", "password_change", "two_factor_setup", "two_factor_disable",
    "recovery_codes_new", "ssh_keys", "activity", "vms:list", "vms:create", "api_tokens",
}  # fmt: skip
# Pages about one VM (vm_uuid): its owner and staff, nobody else.
VM = {
    "vms:detail", "vms:live", "vms:usage", "vms:delete", "vms:reinstall", "vms:reset_password",
    "vms:iso", "vms:rescue", "vms:leave_rescue", "vms:resize", "vms:action", "vms:console",
    "vms:console_token", "vms:serial", "vms:snapshot_take", "vms:snapshot_revert", "vms:snapshot_delete",
    "backups:vm", "backups:start", "backups:schedule", "backups:restore", "vms:address_ptr",
    "firewall:vm", "firewall:add", "firewall:remove", "firewall:policy",
}  # fmt: skip
# Pages about one SSH key (key_id) or API token (token_id): only its owner, staff neither (they are personal).
KEY = {"ssh_key_delete", "api_token_revoke"}
# Actions that only take a POST: a GET gets 405 from anyone, before any check, telling nothing.
POST_ONLY = {
    "vms:action", "vms:console_token", "vms:iso", "vms:leave_rescue", "vms:snapshot_take",
    "vms:snapshot_delete", "backups:start", "backups:schedule", "vms:address_ptr",
    "firewall:add", "firewall:remove", "firewall:policy",
}  # fmt: skip
# Pages about one of the VM's snapshots or backups: the VM's id and the object's.
VM_OBJECT = {
    "vms:snapshot_revert": "snapshot_id",
    "vms:snapshot_delete": "snapshot_id",
    "backups:restore": "backup_id",
    "vms:address_ptr": "address_id",
    "firewall:remove": "rule_id",
}
# Staff only.
STAFF = {"nodes:usage", "metrics"}
# The bare root redirects to the VM list.
ROOT = {None}

SKIPPED_PREFIXES = ("backoffice/", "api/")  # tried below / in the API's own cast test


def panel_routes(within: str | None = None):
    """(name, route) of every URL pattern outside SKIPPED_PREFIXES, or only those `within` a prefix,
    namespaced like reverse() wants."""

    def wanted(route: str) -> bool:
        if within is None:
            return not route.startswith(SKIPPED_PREFIXES)
        return route.startswith(within) or within.startswith(route)  # (a resolver on the way there)

    def walk(patterns, prefix="", namespace=""):
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if not wanted(route):
                continue
            if isinstance(pattern, URLResolver):
                inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
                yield from walk(pattern.url_patterns, route, inner)
            elif isinstance(pattern, URLPattern):
                yield (f"{namespace}{pattern.name}" if pattern.name else None), route

    return list(walk(get_resolver().url_patterns))


def test_every_page_has_a_rule():
    ruled = PUBLIC | OWN | VM | KEY | STAFF | ROOT
    unruled = [(name, route) for name, route in panel_routes() if name not in ruled]
    assert not unruled, f"add these routes to a rule in {__name__}: {unruled}"


@pytest.fixture
def cast(alice, bob, staff, monkeypatch):
    monkeypatch.setattr(actions, "enqueue", lambda operation: None)
    carol = make_user("carol")
    carol_vm = make_vm(carol, state=VMState.RUNNING)
    clients = {"anonymous": Client()}
    for name, user in {"alice": alice, "bob": bob, "staff": staff, "carol": carol}.items():
        clients[name] = Client()
        clients[name].force_login(user)
    suspension.suspend(carol, by=staff, reason="test")
    return clients, carol_vm


@pytest.fixture
def objects(alice):
    vm = make_vm(alice, state=VMState.RUNNING)
    key = SSHKey.objects.create(user=alice, name="laptop", public_key=ed25519_key(), fingerprint="SHA256:x")
    key.api_token, _ = tokens.create(alice, name="ci", scope="read")  # alice's other personal object
    Snapshot.objects.create(vm=vm, name="snap-1", vm_state=VMState.RUNNING)
    store = BackupStore.objects.create(name="store", path="/nonexistent")
    Backup.objects.create(vm=vm, store=store, status="succeeded", disk_bytes=1, restic_id="abc")
    pool = Pool.objects.create(name="public", prefix="198.51.100.0/24", gateway="198.51.100.1")
    pool.nodes.add(vm.node)
    with transaction.atomic():
        allocation.allocate(vm.node, vm.interfaces.create(), 4)
    firewall = Firewall.objects.create(vm=vm)
    FirewallRule.objects.create(firewall=firewall, protocol="tcp", port_start=22, port_end=22)
    return vm, key


def url_for(name, vm, key, kind="reboot"):
    if name in VM_OBJECT:
        owned = {
            "snapshot_id": vm.snapshots.first,
            "backup_id": vm.backups.first,
            "address_id": vm.addresses().first,
            "rule_id": lambda: FirewallRule.objects.filter(firewall__vm=vm).first(),
        }[VM_OBJECT[name]]()
        return reverse(name, kwargs={"vm_uuid": vm.uuid, VM_OBJECT[name]: owned.pk})
    if name in VM:
        return reverse(name, kwargs={"vm_uuid": vm.uuid, **({"kind": kind} if name == "vms:action" else {})})
    if name == "api_token_revoke":
        return reverse(name, kwargs={"token_id": key.api_token.pk})
    if name in KEY:
        return reverse(name, kwargs={"key_id": key.pk})
    if name == "nodes:usage":
        return reverse(name, kwargs={"node_id": vm.node_id})
    return reverse(name)


def is_sign_in(response) -> bool:
    return response.status_code == 302 and response.url.startswith(reverse("login"))


def state_of_the_world(vm, key):
    return (
        Operation.objects.count(),
        SSHKey.objects.filter(pk=key.pk).exists(),
        APIToken.objects.filter(revoked_at__isnull=True).count(),
        type(vm).objects.get(pk=vm.pk).state,
        Backup.objects.count(),
        Snapshot.objects.count(),
        BackupSchedule.objects.count(),
        list(Address.objects.values_list("ptr", "ptr_error")),
        list(FirewallRule.objects.values_list("pk", "port_start")),
        list(Firewall.objects.values_list("default_policy", flat=True)),
    )


@pytest.mark.parametrize("method", ["get", "post"])
@pytest.mark.parametrize("name", sorted(VM | KEY))
def test_the_outsider_gets_404_and_changes_nothing(cast, objects, name, method):
    clients, _ = cast
    vm, key = objects
    before = state_of_the_world(vm, key)
    data = {"confirm_hostname": vm.hostname, "password": "x" * 12, "image": vm.image_id}
    response = getattr(clients["bob"], method)(url_for(name, vm, key), data)
    assert response.status_code == (405 if method == "get" and name in POST_ONLY else 404)
    assert state_of_the_world(vm, key) == before
    assert not AuditEntry.objects.filter(actor__username="bob").exclude(action="account.login").exists()


@pytest.mark.parametrize("name", sorted(KEY))
def test_staff_cannot_touch_a_customers_personal_objects_from_the_portal(cast, objects, name):
    clients, _ = cast
    vm, key = objects
    before = state_of_the_world(vm, key)
    assert clients["staff"].post(url_for(name, vm, key)).status_code == 404
    assert state_of_the_world(vm, key) == before


@pytest.mark.parametrize("method", ["get", "post"])
@pytest.mark.parametrize("name", sorted(OWN | VM | KEY | STAFF - {"metrics"}))
def test_anonymous_and_the_suspended_are_sent_to_sign_in(cast, objects, name, method):
    clients, carol_vm = cast
    vm, key = objects
    for who in ("anonymous", "carol"):
        response = getattr(clients[who], method)(url_for(name, vm, key))
        if method == "get" and name in POST_ONLY:
            assert response.status_code == 405
        elif name == "nodes:usage":  # staff_member_required sends to the backoffice sign-in
            assert response.status_code == 302 and "login" in response.url, who
        else:
            assert is_sign_in(response), (who, response.status_code)
    assert is_sign_in(clients["carol"].get(url_for("vms:detail", carol_vm, key)))


@pytest.mark.parametrize("name", sorted(STAFF))
def test_customers_never_reach_staff_pages(cast, objects, name):
    clients, _ = cast
    vm, key = objects
    for who in ("alice", "bob"):
        response = clients[who].get(url_for(name, vm, key))
        assert response.status_code in (302, 401, 403, 404), who
        if response.status_code == 302:
            assert "/backoffice/login/" in response.url
    assert clients["staff"].get(url_for(name, vm, key)).status_code == 200


def backoffice_paths() -> list[str]:
    """Every backoffice page, with its ids filled in (1 is as good as any: nobody may get past the door)."""
    paths = set()
    for _name, route in panel_routes(within="backoffice/"):
        if not route.startswith("backoffice/"):
            continue  # the root page, on the way in
        paths.add("/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: "vms" if m[1] == "app_label" else "1", route))
    return sorted(paths)


def test_customers_and_the_suspended_never_reach_any_backoffice_page(cast):
    clients, _ = cast
    paths = backoffice_paths()
    assert len(paths) > 50  # every model's list, add, change, delete and history pages
    for path in paths:
        for who in ("anonymous", "alice", "carol"):
            response = clients[who].get(path, follow=True)
            if who == "alice":  # a signed-in customer: refused
                assert response.status_code in (403, 405), (path, who, response.status_code)
            else:  # the panel's sign-in (the backoffice has none of its own)
                final = response.redirect_chain[-1][0] if response.redirect_chain else path
                assert final.startswith("/accounts/login/") or response.status_code == 405, (path, who, final)


@pytest.mark.parametrize("name", sorted(OWN | VM))
def test_the_owner_and_staff_reach_their_pages(cast, objects, name):
    clients, _ = cast
    vm, key = objects
    for who in ("alice", "staff"):
        response = clients[who].get(url_for(name, vm, key))
        assert response.status_code < 500 and response.status_code != 404, (who, response.status_code)


@pytest.mark.parametrize("name", sorted(PUBLIC - {"confirm_email", "password_reset_confirm"}))
def test_public_pages_answer_everyone(cast, name):
    clients, _ = cast
    for who, client in clients.items():
        assert client.get(reverse(name)).status_code < 500, who


# Websockets ---------------------------------------------------------------------------------

WEBSOCKETS = {"ws/vms/<uuid:vm_uuid>/serial/": "vm", "ws/live/": "own"}


def test_every_websocket_route_has_a_rule():
    assert {str(pattern.pattern) for pattern in websocket_urlpatterns} == set(WEBSOCKETS)


def serial_close_code(path: str, cookie: str):
    """How the serial console websocket ends an attempt (its close code)."""

    async def attempt():
        communicator = websocket(path, cookie, "http://127.0.0.1:8000")
        connected, _ = await communicator.connect(timeout=5)
        code = (await communicator.receive_output(timeout=5)).get("code") if connected else None
        await communicator.disconnect()
        return code

    return run_off_loop(attempt())


@pytest.mark.django_db(transaction=True)
def test_the_serial_console_websocket_refuses_all_but_owner_and_staff(alice, bob, staff, monkeypatch):
    monkeypatch.setattr(actions, "enqueue", lambda operation: None)
    vm = make_vm(alice)
    carol = make_user("carol")
    carol_cookie = session_cookie_for(carol)
    suspension.suspend(carol, by=staff)
    path = f"/ws/vms/{vm.uuid}/serial/"
    for who, cookie in {"bob": session_cookie_for(bob), "anonymous": "", "carol": carol_cookie}.items():
        assert serial_close_code(path, cookie) == 4404, who
    for who in (alice, staff):  # past the access check: the factory node does not answer
        assert serial_close_code(path, session_cookie_for(who)) == 4503, who


@pytest.mark.django_db(transaction=True)
def test_the_live_websocket_refuses_anonymous_and_the_suspended_and_tells_outsiders_nothing(
    alice, bob, staff, monkeypatch
):
    monkeypatch.setattr(actions, "enqueue", lambda operation: None)
    vm = make_vm(alice)
    carol = make_user("carol")
    carol_cookie = session_cookie_for(carol)
    suspension.suspend(carol, by=staff)

    async def ask_for_usage(cookie):
        communicator = websocket("/ws/live/", cookie, "http://127.0.0.1:8000")
        connected, _ = await communicator.connect(timeout=5)
        answer = None
        if connected:
            await communicator.send_json_to({"usage": {"vm": str(vm.uuid)}})
            if not await communicator.receive_nothing(timeout=0.5):
                answer = await communicator.receive_json_from()
            await communicator.disconnect()
        return connected, answer

    assert run_off_loop(ask_for_usage("")) == (False, None)
    assert run_off_loop(ask_for_usage(carol_cookie)) == (False, None)
    assert run_off_loop(ask_for_usage(session_cookie_for(bob))) == (True, {"error": "no such VM or node"})
    assert run_off_loop(ask_for_usage(session_cookie_for(alice))) == (True, None)  # joined quietly
