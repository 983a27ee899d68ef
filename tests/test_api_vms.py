"""VMs through the API: the portal's forms validate, vms.actions acts, nothing secret comes back."""

import pytest

from images.models import Image
from vms.choices import VMState
from vms.models import Operation, VirtualMachine

from .api_world import PASSWORD, add_key
from .factories import make_image, make_node, make_plan, make_vm

pytestmark = pytest.mark.django_db


@pytest.fixture
def as_alice(alice, api_client, no_tasks):
    return api_client(alice)


def test_create_makes_a_vm_through_the_domain_function(alice, as_alice):
    plan, image = make_plan(), make_image(on=(make_node(),))
    key = add_key(alice)
    body = {"plan": plan.pk, "image": image.pk, "hostname": "Web-1", "ssh_keys": [key.pk]}
    response = as_alice.post("/api/v1/vms/", body, format="json")
    assert response.status_code == 201, response.content
    vm = VirtualMachine.objects.get()
    assert (vm.owner, vm.hostname, vm.state) == (alice, "web-1", VMState.PROVISIONING)
    assert response.json()["uuid"] == str(vm.uuid)
    assert vm.operations.get().params["ssh_keys"] == [key.public_key]


def test_create_reports_the_forms_errors_field_by_field(as_alice):
    plan, image = make_plan(disk_gb=1), make_image(min_disk_gb=10, on=(make_node(),))
    body = {"plan": plan.pk, "image": image.pk, "hostname": "bad_name!", "password": "short"}
    response = as_alice.post("/api/v1/vms/", body, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert set(error["fields"]) >= {"hostname", "password", "plan"}
    assert "needs a disk of at least 10 GiB" in error["fields"]["plan"][0]
    assert not VirtualMachine.objects.exists()


def test_create_refuses_another_customers_ssh_key(bob, as_alice):
    make_node()
    body = {
        "plan": make_plan().pk,
        "image": make_image().pk,
        "hostname": "web",
        "ssh_keys": [add_key(bob).pk],
    }
    response = as_alice.post("/api/v1/vms/", body, format="json")
    assert response.status_code == 400
    assert "ssh_keys" in response.json()["error"]["fields"]


def test_create_past_the_quota_is_a_conflict_with_the_quota_message(alice, as_alice):
    node = make_node()
    alice.max_vms = 0
    alice.save()
    image = make_image(on=(node,))
    body = {"plan": make_plan().pk, "image": image.pk, "hostname": "web", "password": PASSWORD}
    response = as_alice.post("/api/v1/vms/", body, format="json")
    assert response.status_code == 409
    assert "past your limit of 0 VMs" in response.json()["error"]["message"]


def test_an_action_the_state_does_not_allow_is_a_conflict(alice, as_alice):
    vm = make_vm(alice, state=VMState.STOPPED)
    response = as_alice.post(f"/api/v1/vms/{vm.uuid}/shutdown/")
    assert response.status_code == 409
    assert response.json() == {
        "error": {"code": "refused", "message": "Cannot shut down a VM that is stopped."}
    }


def test_reinstall_needs_the_hostname_typed_again(alice, as_alice):
    vm = make_vm(alice, hostname="web")
    body = {"image": vm.image_id, "password": PASSWORD, "confirm_hostname": "wrong"}
    response = as_alice.post(f"/api/v1/vms/{vm.uuid}/reinstall/", body, format="json")
    assert response.status_code == 400
    assert "confirm_hostname" in response.json()["error"]["fields"]
    assert not Operation.objects.exists()


def test_reset_password_stores_only_a_hash(alice, as_alice):
    vm = make_vm(alice)
    response = as_alice.post(f"/api/v1/vms/{vm.uuid}/reset-password/", {"password": PASSWORD}, format="json")
    assert response.status_code == 202
    operation = Operation.objects.get()
    assert PASSWORD not in str(operation.params) and operation.params["password_hash"].startswith("$2")
    assert "params" not in response.json() and PASSWORD not in response.content.decode()


def test_rescue_takes_only_rescue_systems(alice, as_alice):
    vm = make_vm(alice)
    plain = make_image()
    body = {"image": plain.pk, "password": PASSWORD}
    assert as_alice.post(f"/api/v1/vms/{vm.uuid}/rescue/", body, format="json").status_code == 400
    body["image"] = make_image(rescue=True, on=(vm.node,)).pk
    assert as_alice.post(f"/api/v1/vms/{vm.uuid}/rescue/", body, format="json").status_code == 202


def test_iso_inserts_and_ejects(alice, as_alice):
    vm = make_vm(alice)
    iso = make_image(format=Image.Format.ISO, on=(vm.node,))
    response = as_alice.post(f"/api/v1/vms/{vm.uuid}/iso/", {"iso": iso.pk, "boot": True}, format="json")
    assert response.status_code == 202
    assert Operation.objects.get().params == {"iso_id": iso.pk, "boot": True}


def test_iso_refuses_an_image_that_is_not_an_iso(alice, as_alice):
    vm = make_vm(alice)
    response = as_alice.post(f"/api/v1/vms/{vm.uuid}/iso/", {"iso": vm.image_id}, format="json")
    assert response.status_code == 400


def test_a_console_token_needs_a_running_vm(alice, as_alice):
    stopped = make_vm(alice, state=VMState.STOPPED)
    assert as_alice.post(f"/api/v1/vms/{stopped.uuid}/console-token/").status_code == 409
    running = make_vm(alice)
    response = as_alice.post(f"/api/v1/vms/{running.uuid}/console-token/")
    assert response.status_code == 200
    assert "token=" in response.json()["url"]


def test_usage_refuses_an_unknown_range(alice, as_alice):
    vm = make_vm(alice)
    assert as_alice.get(f"/api/v1/vms/{vm.uuid}/usage/?range=year").status_code == 400
    assert as_alice.get(f"/api/v1/vms/{vm.uuid}/usage/?range=day").json()["range"] == "day"


def test_no_secret_or_node_address_reaches_a_customer(alice, as_alice):
    vm = make_vm(alice, node=make_node(uri="qemu+ssh://root@node7.internal/system"))
    as_alice.post(f"/api/v1/vms/{vm.uuid}/reset-password/", {"password": PASSWORD}, format="json")
    texts = [
        as_alice.get(url).content.decode()
        for url in (f"/api/v1/vms/{vm.uuid}/", "/api/v1/vms/", "/api/v1/operations/")
    ]
    for text in texts:
        assert vm.vnc_password not in text
        assert "node7" not in text and "password_hash" not in text and "$2b$" not in text
    assert '"node":null' in texts[0]


def test_staff_see_the_node_by_name_and_every_vm(alice, bob, staff, api_client):
    make_vm(alice)
    make_vm(bob)
    listed = api_client(staff).get("/api/v1/vms/").json()
    assert listed["count"] == 2
    assert all(row["node"]["name"] for row in listed["results"])


def test_lists_are_paginated_filtered_and_ordered(alice, as_alice):
    for n in range(30):
        make_vm(alice, hostname=f"vm-{n:02}", state=VMState.STOPPED if n % 3 else VMState.RUNNING)
    page = as_alice.get("/api/v1/vms/?page_size=5&ordering=hostname").json()
    assert page["count"] == 30 and len(page["results"]) == 5 and page["next"]
    assert [vm["hostname"] for vm in page["results"]] == [f"vm-{n:02}" for n in range(5)]
    assert as_alice.get("/api/v1/vms/?state=running").json()["count"] == 10
    assert as_alice.get("/api/v1/vms/?page_size=1000").json()["results"].__len__() == 30  # capped at 100
    assert as_alice.get("/api/v1/vms/?state=nonsense").status_code == 400
    assert as_alice.get("/api/v1/vms/?page=99").status_code == 404


def test_the_vm_list_costs_the_same_number_of_queries_for_more_vms(
    alice, as_alice, django_assert_max_num_queries
):
    for _ in range(3):
        make_vm(alice)
    with django_assert_max_num_queries(8):
        as_alice.get("/api/v1/vms/")
    for _ in range(20):
        make_vm(alice)
    with django_assert_max_num_queries(8):
        as_alice.get("/api/v1/vms/")


def test_images_are_listed_by_kind(as_alice):
    os_image, iso, rescue = make_image(), make_image(format=Image.Format.ISO), make_image(rescue=True)
    make_image(status=Image.Status.DOWNLOADING)
    make_image(active=False)

    def ids(kind=""):
        query = f"?kind={kind}" if kind else ""
        return {row["id"] for row in as_alice.get(f"/api/v1/images/{query}").json()["results"]}

    assert ids() == {os_image.pk, iso.pk, rescue.pk}
    assert ids("os") == {os_image.pk, rescue.pk}
    assert ids("iso") == {iso.pk}
    assert ids("rescue") == {rescue.pk}
    assert as_alice.get("/api/v1/images/?kind=all").status_code == 400


def test_ssh_keys_follow_the_portals_rules(as_alice):
    response = as_alice.post(
        "/api/v1/ssh-keys/", {"public_key": "-----BEGIN OPENSSH PRIVATE KEY-----"}, format="json"
    )
    assert response.status_code == 400
    assert "public_key" in response.json()["error"]["fields"]
