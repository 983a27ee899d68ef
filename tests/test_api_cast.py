"""Every API route, tried by the fixed cast: the owner (alice), the outsider (bob), staff, a suspended
user, anonymous, and the owner's read-only token.

The routes come from the URL resolver, and a route missing from ROUTES fails the suite, so a new
endpoint cannot ship without saying who may use it. The outsider never sees or changes alice's
objects (404, or lists without them); customers never reach staff functions (403).
"""

import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from vms.models import Operation, VirtualMachine

from .api_world import PASSWORD, make_world, public_key_line, suspend

pytestmark = pytest.mark.django_db

ROLES = ("owner", "outsider", "staff", "suspended", "anonymous", "reader")
# Routes that are no endpoint of data: the schema and docs (public), and the JSON 404 for the rest.
NOT_DATA = {"api/v1/schema/", "api/v1/docs/", r"api/[\s\S]*"}

OK, CREATED, ACCEPTED, GONE = 200, 201, 202, 204
REFUSED, NOT_YOURS, FORBIDDEN = 409, 404, 403


def customer(owner, outsider=None, staff=None):
    """Expected codes: the outsider gets `outsider` (404 for alice's objects), staff what staff gets."""
    return {
        "owner": owner,
        "outsider": outsider if outsider is not None else owner,
        "staff": staff if staff is not None else owner,
    }


def staff_only(code):
    return {"owner": FORBIDDEN, "outsider": FORBIDDEN, "staff": code}


# (method, route) -> (path parameters, body, expected codes). {vm}, {key}, ... name objects of the world.
VM_SNAPSHOT = {"vm_uuid": "vm", "pk": "snapshot"}
VM_BACKUP = {"vm_uuid": "vm", "pk": "backup"}
ROUTES = {
    ("GET", "api/v1/me/"): ({}, None, customer(OK)),
    ("GET", "api/v1/plans/"): ({}, None, customer(OK)),
    ("GET", "api/v1/plans/{pk}/"): ({"pk": "plan"}, None, customer(OK)),
    ("GET", "api/v1/images/"): ({}, None, customer(OK)),
    ("GET", "api/v1/images/{pk}/"): ({"pk": "image"}, None, customer(OK)),
    ("GET", "api/v1/ssh-keys/"): ({}, None, customer(OK)),
    ("POST", "api/v1/ssh-keys/"): ({}, "new_key", customer(CREATED)),
    # Keys are their owner's only, staff included (as on the pages).
    ("GET", "api/v1/ssh-keys/{pk}/"): ({"pk": "key"}, None, customer(OK, NOT_YOURS, NOT_YOURS)),
    ("DELETE", "api/v1/ssh-keys/{pk}/"): ({"pk": "key"}, None, customer(GONE, NOT_YOURS, NOT_YOURS)),
    ("GET", "api/v1/vms/"): ({}, None, customer(OK)),
    ("POST", "api/v1/vms/"): ({}, "new_vm", customer(CREATED)),
    ("GET", "api/v1/vms/{uuid}/"): ({"uuid": "vm"}, None, customer(OK, NOT_YOURS)),
    ("DELETE", "api/v1/vms/{uuid}/"): ({"uuid": "vm"}, None, customer(ACCEPTED, NOT_YOURS)),
    # alice's VM is running: start is refused by the domain (409), which proves the call got there.
    ("POST", "api/v1/vms/{uuid}/start/"): ({"uuid": "vm"}, None, customer(REFUSED, NOT_YOURS)),
    ("POST", "api/v1/vms/{uuid}/shutdown/"): ({"uuid": "vm"}, None, customer(ACCEPTED, NOT_YOURS)),
    ("POST", "api/v1/vms/{uuid}/force-off/"): ({"uuid": "vm"}, None, customer(ACCEPTED, NOT_YOURS)),
    ("POST", "api/v1/vms/{uuid}/reboot/"): ({"uuid": "vm"}, None, customer(ACCEPTED, NOT_YOURS)),
    ("POST", "api/v1/vms/{uuid}/leave-rescue/"): ({"uuid": "vm"}, None, customer(REFUSED, NOT_YOURS)),
    ("POST", "api/v1/vms/{uuid}/reinstall/"): ({"uuid": "vm"}, "reinstall", customer(ACCEPTED, NOT_YOURS)),
    ("POST", "api/v1/vms/{uuid}/reset-password/"): (
        {"uuid": "vm"},
        "password",
        customer(ACCEPTED, NOT_YOURS),
    ),
    ("POST", "api/v1/vms/{uuid}/rescue/"): ({"uuid": "vm"}, "rescue", customer(ACCEPTED, NOT_YOURS)),
    # alice's VM is running: a resize is refused by the domain (409), after the form accepted the plan.
    ("POST", "api/v1/vms/{uuid}/resize/"): ({"uuid": "vm"}, "resize", customer(REFUSED, NOT_YOURS)),
    ("POST", "api/v1/vms/{uuid}/iso/"): ({"uuid": "vm"}, "iso", customer(ACCEPTED, NOT_YOURS)),
    ("POST", "api/v1/vms/{uuid}/console-token/"): ({"uuid": "vm"}, None, customer(OK, NOT_YOURS)),
    ("GET", "api/v1/vms/{uuid}/usage/"): ({"uuid": "vm"}, None, customer(OK, NOT_YOURS)),
    ("GET", "api/v1/vms/{uuid}/operations/"): ({"uuid": "vm"}, None, customer(OK, NOT_YOURS)),
    ("GET", "api/v1/operations/"): ({}, None, customer(OK)),
    ("GET", "api/v1/operations/{pk}/"): ({"pk": "operation"}, None, customer(OK, NOT_YOURS)),
    ("GET", "api/v1/vms/{vm_uuid}/snapshots/"): ({"vm_uuid": "vm"}, None, customer(OK, NOT_YOURS)),
    ("POST", "api/v1/vms/{vm_uuid}/snapshots/"): (
        {"vm_uuid": "vm"},
        "snapshot",
        customer(ACCEPTED, NOT_YOURS),
    ),
    ("GET", "api/v1/vms/{vm_uuid}/snapshots/{pk}/"): (VM_SNAPSHOT, None, customer(OK, NOT_YOURS)),
    ("DELETE", "api/v1/vms/{vm_uuid}/snapshots/{pk}/"): (VM_SNAPSHOT, None, customer(ACCEPTED, NOT_YOURS)),
    ("POST", "api/v1/vms/{vm_uuid}/snapshots/{pk}/revert/"): (
        VM_SNAPSHOT,
        None,
        customer(ACCEPTED, NOT_YOURS),
    ),
    ("GET", "api/v1/vms/{vm_uuid}/backups/"): ({"vm_uuid": "vm"}, None, customer(OK, NOT_YOURS)),
    ("POST", "api/v1/vms/{vm_uuid}/backups/"): ({"vm_uuid": "vm"}, None, customer(CREATED, NOT_YOURS)),
    ("GET", "api/v1/vms/{vm_uuid}/backups/{pk}/"): (VM_BACKUP, None, customer(OK, NOT_YOURS)),
    ("POST", "api/v1/vms/{vm_uuid}/backups/{pk}/restore/"): (
        VM_BACKUP,
        "restore",
        customer(ACCEPTED, NOT_YOURS),
    ),
    ("GET", "api/v1/vms/{vm_uuid}/firewall/"): ({"vm_uuid": "vm"}, None, customer(OK, NOT_YOURS)),
    ("PUT", "api/v1/vms/{vm_uuid}/firewall/"): ({"vm_uuid": "vm"}, "firewall", customer(ACCEPTED, NOT_YOURS)),
    ("GET", "api/v1/admin/backup-stores/"): ({}, None, staff_only(OK)),
    ("GET", "api/v1/admin/backup-stores/{pk}/"): ({"pk": "store"}, None, staff_only(OK)),
    ("GET", "api/v1/admin/backups/"): ({}, None, staff_only(OK)),
    ("GET", "api/v1/admin/backups/{pk}/"): ({"pk": "backup"}, None, staff_only(OK)),
    ("POST", "api/v1/vms/{uuid}/addresses/"): ({"uuid": "vm"}, "family", staff_only(ACCEPTED)),
    ("DELETE", "api/v1/vms/{uuid}/addresses/{address_id}/"): (
        {"uuid": "vm", "address_id": "address"},
        None,
        staff_only(ACCEPTED),
    ),
    # Reverse DNS is off in the test settings: the domain refuses (409), which proves the call got there.
    ("PUT", "api/v1/vms/{uuid}/addresses/{address_id}/ptr/"): (
        {"uuid": "vm", "address_id": "address"},
        "ptr",
        customer(REFUSED, NOT_YOURS),
    ),
    ("GET", "api/v1/admin/nodes/"): ({}, None, staff_only(OK)),
    ("POST", "api/v1/admin/nodes/"): ({}, "new_node", staff_only(ACCEPTED)),
    ("GET", "api/v1/admin/nodes/{pk}/"): ({"pk": "node"}, None, staff_only(OK)),
    ("POST", "api/v1/admin/nodes/{pk}/maintenance/"): ({"pk": "node"}, "maintenance", staff_only(OK)),
    ("POST", "api/v1/admin/nodes/{pk}/drain/"): ({"pk": "node"}, None, staff_only(ACCEPTED)),
    ("POST", "api/v1/admin/nodes/{pk}/stop-drain/"): ({"pk": "node"}, None, staff_only(OK)),
    # The world's VM is already on the node named: refused, after the permission check let staff through.
    ("POST", "api/v1/admin/vms/{uuid}/migrate/"): ({"uuid": "vm"}, "migrate", staff_only(REFUSED)),
    ("GET", "api/v1/admin/plans/"): ({}, None, staff_only(OK)),
    ("POST", "api/v1/admin/plans/"): ({}, "new_plan", staff_only(CREATED)),
    ("GET", "api/v1/admin/plans/{pk}/"): ({"pk": "plan"}, None, staff_only(OK)),
    ("PUT", "api/v1/admin/plans/{pk}/"): ({"pk": "plan"}, "new_plan", staff_only(OK)),
    ("PATCH", "api/v1/admin/plans/{pk}/"): ({"pk": "plan"}, "plan_change", staff_only(OK)),
    ("DELETE", "api/v1/admin/plans/{pk}/"): ({"pk": "spare_plan"}, None, staff_only(GONE)),
    ("GET", "api/v1/admin/images/"): ({}, None, staff_only(OK)),
    ("POST", "api/v1/admin/images/"): ({}, "new_image", staff_only(CREATED)),
    ("GET", "api/v1/admin/images/{pk}/"): ({"pk": "image"}, None, staff_only(OK)),
    ("DELETE", "api/v1/admin/images/{pk}/"): ({"pk": "spare_image"}, None, staff_only(GONE)),
    ("GET", "api/v1/admin/users/"): ({}, None, staff_only(OK)),
    ("GET", "api/v1/admin/users/{pk}/"): ({"pk": "alice"}, None, staff_only(OK)),
    ("PATCH", "api/v1/admin/users/{pk}/"): ({"pk": "alice"}, "quota", staff_only(OK)),
    ("POST", "api/v1/admin/users/{pk}/suspend/"): ({"pk": "alice"}, "reason", staff_only(OK)),
    # alice is not suspended: lifting it is refused, after the permission check let staff through.
    ("POST", "api/v1/admin/users/{pk}/unsuspend/"): ({"pk": "alice"}, None, staff_only(REFUSED)),
}


def bodies(world) -> dict:
    return {
        "new_key": {"public_key": public_key_line("new")},
        "new_vm": {
            "plan": world.plan.pk,
            "image": world.image.pk,
            "hostname": "new-vm",
            "password": PASSWORD,
        },
        "reinstall": {"image": world.image.pk, "password": PASSWORD, "confirm_hostname": "web"},
        "password": {"password": PASSWORD},
        "rescue": {"image": world.rescue_image.pk, "password": PASSWORD},
        "iso": {"iso": world.iso.pk, "boot": True},
        "resize": {"plan": world.spare_plan.pk},
        # TLS: an SSH node's host key would be read from the network (tests/test_api_staff.py fakes it).
        "new_node": {"name": "node-new", "uri": "qemu+tls://10.0.0.9/system"},
        "maintenance": {"on": True},
        "migrate": {"target_node": world.vm.node_id},
        "new_plan": {"name": "big", "vcpus": 4, "memory_mib": 8192, "disk_gb": 80},
        "plan_change": {"active": False},
        "new_image": {"name": "existing", "volume_name": "kvmpanel-image-existing"},
        "quota": {"max_vms": 2},
        "reason": {"reason": "unpaid"},
        "snapshot": {"description": "before the upgrade"},
        "restore": {"as_new": False},
        "family": {"family": 4},
        "ptr": {"ptr": "mail.example.com"},
        "firewall": {"default_policy": "deny", "rules": [{"protocol": "tcp", "port_start": 22}]},
    }


def api_routes() -> set[tuple[str, str]]:
    """(method, route) of every endpoint under api/, read from the URL resolver."""
    found = set()
    for route, callback in _walk(get_resolver().url_patterns, ""):
        if not route.startswith("api/"):
            continue
        for method in _methods(callback):
            found.add((method, route))
    return found


def _walk(patterns, prefix):
    for entry in patterns:
        route = prefix + _clean(str(entry.pattern))
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, route)
        elif isinstance(entry, URLPattern):
            yield route, entry.callback


def _clean(pattern: str) -> str:
    pattern = pattern.removeprefix("^").removesuffix("$")
    return re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern)


def _methods(callback) -> list[str]:
    actions = getattr(callback, "actions", None)  # a DRF viewset: its method -> action map
    if actions is not None:
        # DRF adds head (GET's twin) to this map at the first request; it is not a route of its own.
        return [method.upper() for method in actions if method != "head"]
    view_class = getattr(callback, "view_class", None)
    if view_class is None:
        return ["ANY"]
    return [m.upper() for m in ("get", "post", "put", "patch", "delete") if hasattr(view_class, m)]


def test_every_api_route_is_in_the_table():
    found = {(method, route) for method, route in api_routes() if route not in NOT_DATA}
    assert found - set(ROUTES) == set(), "a new API route: add it to ROUTES with who may use it"
    assert set(ROUTES) - found == set(), "ROUTES names a route that is gone"


@pytest.fixture
def cast(alice, bob, staff, api_client, no_tasks):
    world = make_world(alice, staff)
    clients = {
        "owner": api_client(alice),
        "outsider": api_client(bob),
        "staff": api_client(staff),
        "suspended": api_client(world.suspended),
        "anonymous": api_client(),
        "reader": api_client(alice, scope="read"),
    }
    suspend(world.suspended, staff)
    world.alice = alice
    return world, clients


def _url(route: str, params: dict, world) -> str:
    values = {name: getattr(world, obj) for name, obj in params.items()}
    keys = {name: (obj.uuid if name.endswith("uuid") else obj.pk) for name, obj in values.items()}
    return "/" + route.format(**keys)


def _expected(method: str, codes: dict, role: str) -> int:
    if role in ("suspended", "anonymous"):
        return 401
    if role == "reader":
        if method not in ("GET", "HEAD", "OPTIONS"):
            return 403
        return codes["owner"]
    return codes[role]


def _traces(world) -> dict:
    """What alice has, to check that nobody else changed it."""
    return {
        "operations": Operation.objects.filter(vm=world.vm).count(),
        "vm": VirtualMachine.objects.filter(pk=world.vm.pk).values_list("state", flat=True).first(),
        "key": type(world.key).objects.filter(pk=world.key.pk).exists(),
        "is_active": type(world.alice).objects.get(pk=world.alice.pk).is_active,
    }


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("method", "route"), sorted(ROUTES))
def test_the_cast_gets_what_the_table_says(cast, method, route, role):
    world, clients = cast
    params, body_name, codes = ROUTES[(method, route)]
    before = _traces(world)
    body = bodies(world)[body_name] if body_name else None

    response = clients[role].generic(
        method, _url(route, params, world), data=_json(body), content_type="application/json"
    )

    assert response.status_code == _expected(method, codes, role), response.content[:500]
    assert "error" in response.json() if response.status_code >= 400 else True
    if role in ("outsider", "suspended", "anonymous", "reader") or (
        role == "owner" and route.startswith("api/v1/admin/")
    ):
        assert _traces(world) == before, "alice's objects changed"
        _assert_nothing_of_alices_shown(response, world, role)


def _assert_nothing_of_alices_shown(response, world, role):
    if role == "reader":
        return  # alice's own read-only token: seeing her things is the point
    text = response.content.decode()
    assert str(world.vm.uuid) not in text
    assert world.key.fingerprint not in text
    assert f"/{world.operation.pk}/" not in text


def _json(body) -> str:
    import json

    return json.dumps(body) if body is not None else ""
