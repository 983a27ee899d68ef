"""Staff endpoints: the backoffice's work through the same domain functions."""

import pytest

from accounts.models import AuditEntry
from api import tasks as api_tasks
from images.models import Image
from nodes.choices import NodeStatus
from nodes.models import Node
from vms.choices import VMState
from vms.models import Plan

from .factories import make_image, make_plan, make_user, make_vm

pytestmark = pytest.mark.django_db


@pytest.fixture
def registrations(monkeypatch):
    calls = []
    monkeypatch.setattr(api_tasks.register_node_task, "delay", lambda *args: calls.append(args))
    return calls


@pytest.fixture
def node2_host_key(monkeypatch, settings, tmp_path):
    """node2's SSH host key, as ssh-keyscan would read it."""
    from nodes import remote

    settings.KVMPANEL_KNOWN_HOSTS_DIR = tmp_path
    remote.configure()
    key = remote.HostKey(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPzUoXhm3dxkhiOV9CM2MxWCHMCuIMd4SVpyfl0m2jk7", ""
    )
    key = remote.HostKey(key.key, remote.fingerprint(key.key))
    monkeypatch.setattr(remote, "scan_host_key", lambda uri: key)
    return key


def test_registering_a_node_records_it_and_hands_the_work_to_a_worker(
    as_staff, registrations, django_capture_on_commit_callbacks, node2_host_key
):
    body = {
        "name": "node-2",
        "uri": "qemu+ssh://root@node2/system",
        "pool_path": "/srv/pool",
        "ssh_host_key_fingerprint": node2_host_key.fingerprint,
    }
    with django_capture_on_commit_callbacks(execute=True):
        response = as_staff.post("/api/v1/admin/nodes/", body, format="json")
    assert response.status_code == 202, response.content
    node = Node.objects.get()
    assert node.status == NodeStatus.UNREACHABLE  # no VM goes there before the worker prepared it
    assert registrations == [(node.pk, "/srv/pool", None)]
    assert AuditEntry.objects.filter(action="node.register").exists()
    assert node.ssh_host_key == node2_host_key.key  # pinned, and written where libvirt reads it
    from hypervisor import remote as hypervisor_remote

    pinned = hypervisor_remote.known_hosts_path("node2", 22).read_text()
    assert pinned == f"node2 {node2_host_key.key}\n"


def test_an_ssh_node_is_refused_until_its_host_key_is_confirmed(as_staff, registrations, node2_host_key):
    body = {"name": "node-2", "uri": "qemu+ssh://root@node2/system"}
    response = as_staff.post("/api/v1/admin/nodes/", body, format="json")
    assert response.status_code == 400
    assert node2_host_key.fingerprint in str(response.json())
    wrong = {**body, "ssh_host_key_fingerprint": "SHA256:somebody-elses-key"}
    assert as_staff.post("/api/v1/admin/nodes/", wrong, format="json").status_code == 400
    assert not Node.objects.exists() and registrations == []


@pytest.mark.parametrize("uri", ["qemu+tcp://node2/system", "http://node2/", "node2"])
def test_a_node_uri_without_ssh_or_tls_is_refused(as_staff, registrations, uri):
    response = as_staff.post("/api/v1/admin/nodes/", {"name": "n", "uri": uri}, format="json")
    assert response.status_code == 400
    assert "uri" in response.json()["error"]["fields"]
    assert not Node.objects.exists()


def test_the_registration_task_prepares_the_node(test_driver_uri, test_session, settings):
    settings.KVMPANEL_POOL_PATH = "/test-pool"
    node = Node.objects.create(
        name="n1",
        uri=test_driver_uri,
        status=NodeStatus.UNREACHABLE,
        pool_name="test-pool",
        network_name="test-net",
    )
    api_tasks.register_node_task(node.pk, "/test-pool", "qemu")
    node.refresh_from_db()
    assert node.status == NodeStatus.ONLINE and node.cpus == 4 and node.last_error == ""


def test_a_plan_in_use_cannot_be_deleted(alice, as_staff):
    vm = make_vm(alice)
    response = as_staff.delete(f"/api/v1/admin/plans/{vm.plan_id}/")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "in_use"
    assert Plan.objects.filter(pk=vm.plan_id).exists()


def test_an_inactive_plan_is_hidden_from_customers(alice, api_client, as_staff):
    plan = make_plan()
    as_staff.patch(f"/api/v1/admin/plans/{plan.pk}/", {"active": False}, format="json")
    assert api_client(alice).get(f"/api/v1/plans/{plan.pk}/").status_code == 404


def test_an_image_by_url_is_checked_like_the_backoffice_and_downloaded_by_a_worker(
    as_staff, monkeypatch, django_capture_on_commit_callbacks
):
    from images import tasks

    started = []
    monkeypatch.setattr(tasks.fetch_image, "delay", started.append)
    private = {"name": "evil", "source_url": "http://169.254.169.254/latest/meta-data"}
    assert as_staff.post("/api/v1/admin/images/", private, format="json").status_code == 400
    body = {"name": "debian-13", "source_url": "https://93.184.215.14/debian-13.qcow2"}
    with django_capture_on_commit_callbacks(execute=True):
        response = as_staff.post("/api/v1/admin/images/", body, format="json")
    assert response.status_code == 201, response.content
    image = Image.objects.get(name="debian-13")
    assert image.status == Image.Status.PENDING and started == [image.pk]
    assert response.json()["status"] == "pending"
    assert AuditEntry.objects.filter(action="image.add").exists()


def test_an_image_in_use_cannot_be_deleted(alice, as_staff):
    vm = make_vm(alice)
    assert as_staff.delete(f"/api/v1/admin/images/{vm.image_id}/").status_code == 409
    unused = make_image()
    assert as_staff.delete(f"/api/v1/admin/images/{unused.pk}/").status_code == 204
    assert not Image.objects.filter(pk=unused.pk).exists()


def test_quota_changes_apply_and_are_audited(alice, as_staff):
    response = as_staff.patch(
        f"/api/v1/admin/users/{alice.pk}/", {"max_vms": 1, "is_staff": True}, format="json"
    )
    assert response.status_code == 200
    alice.refresh_from_db()
    assert alice.max_vms == 1 and not alice.is_staff  # only quotas change here
    assert response.json()["quota"]["limits"]["vms"] == 1
    assert AuditEntry.objects.filter(action="account.quota", owner=alice).exists()


def test_suspend_and_unsuspend_use_the_suspension_functions(alice, as_staff):
    make_vm(alice, state=VMState.RUNNING)
    response = as_staff.post(f"/api/v1/admin/users/{alice.pk}/suspend/", {"reason": "unpaid"}, format="json")
    assert response.status_code == 200 and response.json()["suspended"] is True
    alice.refresh_from_db()
    assert not alice.is_active and alice.suspension_reason == "unpaid"
    assert alice.vms.get().operations.get().kind == "shutdown"
    assert as_staff.post(f"/api/v1/admin/users/{alice.pk}/suspend/").status_code == 409
    assert as_staff.post(f"/api/v1/admin/users/{alice.pk}/unsuspend/").status_code == 200
    alice.refresh_from_db()
    assert alice.is_active


def test_staff_cannot_suspend_themselves(staff, as_staff):
    response = as_staff.post(f"/api/v1/admin/users/{staff.pk}/suspend/", {}, format="json")
    assert response.status_code == 409
    assert "your own account" in response.json()["error"]["message"]


def test_users_filter_by_suspension(alice, staff, as_staff):
    make_user("carol", is_active=False, suspended_at="2026-01-01T00:00Z")
    names = [row["username"] for row in as_staff.get("/api/v1/admin/users/?suspended=true").json()["results"]]
    assert names == ["carol"]
