"""Domain verbs: they check, record an operation, and enqueue its task after commit."""

import pytest
from django.urls import reverse

from nodes.choices import NodeStatus
from vms import actions
from vms.choices import OperationKind, OperationStatus, VMState
from vms.models import Operation, VirtualMachine

from .factories import make_image, make_node, make_plan, make_vm

PASSWORD = "correct-horse-battery-9"  # for the image's default user (its hash goes to the seed)

pytestmark = pytest.mark.django_db


def test_a_request_records_an_operation_and_enqueues_it_on_commit(
    alice, alice_vm, enqueued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        operation = actions.request(alice_vm, alice, OperationKind.REBOOT)
    assert (operation.kind, operation.status, operation.user) == ("reboot", "queued", alice)
    assert enqueued == [operation]


def test_a_second_operation_is_refused_while_one_is_active(alice, alice_vm, enqueued):
    actions.request(alice_vm, alice, OperationKind.REBOOT)
    with pytest.raises(actions.ActionRefused, match="still in progress"):
        actions.request(alice_vm, alice, OperationKind.FORCE_OFF)
    assert Operation.objects.count() == 1


def test_the_database_itself_allows_one_active_operation_per_vm(alice, alice_vm):
    from django.db import IntegrityError, transaction

    Operation.objects.create(vm=alice_vm, kind="start", status=OperationStatus.RUNNING)
    with pytest.raises(IntegrityError), transaction.atomic():
        Operation.objects.create(vm=alice_vm, kind="reboot", status=OperationStatus.QUEUED)
    Operation.objects.create(vm=alice_vm, kind="reboot", status=OperationStatus.FAILED)


def test_an_action_that_does_not_fit_the_state_is_refused(alice, alice_vm, enqueued):
    alice_vm.set_state(VMState.STOPPED)
    with pytest.raises(actions.ActionRefused, match="Cannot shut down a VM that is stopped"):
        actions.request(alice_vm, alice, OperationKind.SHUTDOWN)
    assert not Operation.objects.exists()


def test_changes_are_refused_while_the_node_is_unreachable(alice, alice_vm, enqueued):
    alice_vm.node.status = NodeStatus.UNREACHABLE
    alice_vm.node.save()
    with pytest.raises(actions.ActionRefused, match="unreachable"):
        actions.request(alice_vm, alice, OperationKind.REBOOT)


def test_create_places_the_vm_on_an_online_node(alice, enqueued):
    unreachable = make_node(status=NodeStatus.UNREACHABLE)
    online = make_node()
    image = make_image(on=[unreachable, online])
    vm = actions.create_vm(owner=alice, plan=make_plan(), image=image, hostname="web")
    assert vm.node == online
    assert vm.state == VMState.PROVISIONING
    assert vm.operations.get().kind == OperationKind.CREATE


def test_create_is_refused_with_no_node(alice, enqueued):
    with pytest.raises(actions.ActionRefused, match="No hypervisor node"):
        actions.create_vm(owner=alice, plan=make_plan(), image=make_image(), hostname="web")
    assert not VirtualMachine.objects.exists()


def test_the_create_page_creates_a_vm_and_shows_it(client, alice, enqueued):
    node = make_node()
    plan, image = make_plan(), make_image(on=[node])
    client.force_login(alice)
    response = client.post(
        reverse("vms:create"),
        {"plan": plan.pk, "image": image.pk, "hostname": "web-1", "password": PASSWORD},
        follow=True,
    )
    vm = VirtualMachine.objects.get()
    assert (vm.owner, vm.hostname) == (alice, "web-1")
    assert response.redirect_chain[-1][0] == vm.get_absolute_url()
    assert "Creating web-1" in response.content.decode()


def test_the_create_page_rejects_a_hostile_hostname_and_creates_nothing(client, alice, enqueued):
    make_node()
    plan, image = make_plan(), make_image()
    client.force_login(alice)
    response = client.post(
        reverse("vms:create"),
        {"plan": plan.pk, "image": image.pk, "hostname": "x</name><devices>", "password": PASSWORD},
    )
    assert response.status_code == 200
    assert "is-invalid" in response.content.decode()
    assert not VirtualMachine.objects.exists()


def test_delete_needs_the_hostname_typed(client, alice, alice_vm, enqueued, sign_in_confirmed):
    sign_in_confirmed(alice)
    url = reverse("vms:delete", args=[alice_vm.uuid])
    response = client.post(url, {"confirm_hostname": "wrong"})
    assert "exactly" in response.content.decode()
    assert not Operation.objects.exists()
    client.post(url, {"confirm_hostname": alice_vm.hostname})
    assert Operation.objects.get().kind == OperationKind.DELETE


def test_the_list_page_costs_the_same_queries_for_many_vms(client, alice, django_assert_max_num_queries):
    from .factories import make_vm

    node, plan, image = make_node(), make_plan(), make_image()
    for _ in range(30):
        make_vm(alice, node=node, plan=plan, image=image)
    client.force_login(alice)
    client.get(reverse("vms:list"))  # the first request of a session records its activity
    with django_assert_max_num_queries(7):  # one of them: every listed VM's addresses
        assert client.get(reverse("vms:list")).status_code == 200


def test_a_customer_cannot_have_two_live_vms_with_one_hostname(client, alice, bob, enqueued):
    node = make_node()
    plan, image = make_plan(), make_image(on=[node])
    actions.create_vm(owner=alice, plan=plan, image=image, hostname="web")
    client.force_login(alice)
    response = client.post(
        reverse("vms:create"), {"plan": plan.pk, "image": image.pk, "hostname": "web", "password": PASSWORD}
    )
    assert "You already have a VM named web" in response.content.decode()
    with pytest.raises(actions.ActionRefused, match="already have"):
        actions.create_vm(owner=alice, plan=plan, image=image, hostname="web")
    actions.create_vm(owner=bob, plan=plan, image=image, hostname="web")  # another customer may
    assert VirtualMachine.objects.filter(hostname="web").count() == 2


def test_a_deleted_vms_hostname_can_be_used_again(alice, enqueued):
    node = make_node()
    plan, image = make_plan(), make_image(on=[node])
    old = actions.create_vm(owner=alice, plan=plan, image=image, hostname="web")
    old.set_state(VMState.DELETED)
    assert actions.create_vm(owner=alice, plan=plan, image=image, hostname="web").pk != old.pk


def test_the_vm_page_shows_what_is_in_progress(client, alice, alice_vm):
    Operation.objects.create(vm=alice_vm, kind=OperationKind.REBOOT, user=alice)
    client.force_login(alice)
    page = client.get(alice_vm.get_absolute_url()).content.decode()
    assert "Rebooting…" in page
    assert 'data-busy="reboot"' in page
    assert f'data-live-vm="{alice_vm.uuid}"' in page  # pushed changes refresh this block


def reinstall_form(image, **fields):
    return {"image": image.pk, "password": PASSWORD, "confirm_hostname": "", **fields}


def test_reinstall_needs_the_hostname_typed_and_records_the_operation(
    client, alice, alice_vm, enqueued, django_capture_on_commit_callbacks
):
    other_image = make_image(on=[alice_vm.node])
    client.force_login(alice)
    url = reverse("vms:reinstall", args=[alice_vm.uuid])
    response = client.post(url, reinstall_form(other_image, confirm_hostname="wrong"))
    assert response.status_code == 200 and "exactly to confirm" in response.content.decode()
    assert not Operation.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, reinstall_form(other_image, confirm_hostname=alice_vm.hostname))
    assert response.status_code == 302
    operation = Operation.objects.get()
    assert (operation.kind, operation.params["image_id"]) == (OperationKind.REINSTALL, other_image.pk)
    assert operation.params["password_hash"].startswith("$2b$") and PASSWORD not in str(operation.params)
    assert enqueued == [operation]


def test_another_customer_cannot_reinstall_my_vm(client, bob, alice_vm, enqueued):
    client.force_login(bob)
    url = reverse("vms:reinstall", args=[alice_vm.uuid])
    assert client.get(url).status_code == 404
    assert (
        client.post(url, reinstall_form(alice_vm.image, confirm_hostname=alice_vm.hostname)).status_code
        == 404
    )
    assert not Operation.objects.exists()


def test_ssh_keys_of_others_cannot_be_picked(client, alice, bob, enqueued):
    from accounts.models import SSHKey

    bobs_key = SSHKey.objects.create(
        user=bob, name="bob", public_key="ssh-ed25519 AAAA bob", fingerprint="SHA256:b"
    )
    client.force_login(alice)
    plan, image = make_plan(), make_image()
    response = client.post(
        reverse("vms:create"),
        {"plan": plan.pk, "image": image.pk, "hostname": "web", "ssh_keys": [bobs_key.pk]},
    )
    assert response.status_code == 200 and "valid choice" in response.content.decode()
    assert not VirtualMachine.objects.exists()


def test_isos_are_inserted_and_ejected_only_by_who_may_see_the_vm(
    client, alice, bob, alice_vm, enqueued, django_capture_on_commit_callbacks
):
    iso = make_image(format="iso", on=[alice_vm.node])
    url = reverse("vms:iso", args=[alice_vm.uuid])
    client.force_login(bob)
    assert client.post(url, {"iso": iso.pk}).status_code == 404
    client.force_login(alice)
    assert client.post(url, {"iso": make_image().pk}).status_code == 404  # an OS image is not an ISO
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(url, {"iso": iso.pk, "boot": "on"}).status_code == 302
    operation = Operation.objects.get()
    assert (operation.kind, operation.params) == (OperationKind.CHANGE_ISO, {"iso_id": iso.pk, "boot": True})


def test_a_password_reset_sends_only_a_hash(client, alice, bob, alice_vm, enqueued):
    url = reverse("vms:reset_password", args=[alice_vm.uuid])
    client.force_login(bob)
    assert client.post(url, {"password": PASSWORD}).status_code == 404
    client.force_login(alice)
    response = client.post(url, {"password": "12345678"})
    assert "entirely numeric" in response.content.decode() and not Operation.objects.exists()
    assert client.post(url, {"password": PASSWORD}).status_code == 302
    operation = Operation.objects.get()
    assert operation.kind == OperationKind.RESET_PASSWORD and PASSWORD not in str(operation.params)


def test_only_the_owner_starts_a_rescue_system_and_only_an_offered_one(
    client, alice, bob, alice_vm, enqueued, django_capture_on_commit_callbacks
):
    offered, not_offered = make_image(rescue=True, on=[alice_vm.node]), make_image()
    url = reverse("vms:rescue", args=[alice_vm.uuid])
    client.force_login(bob)
    assert client.get(url).status_code == 404
    client.force_login(alice)
    response = client.post(url, {"image": not_offered.pk, "password": PASSWORD})
    assert "valid choice" in response.content.decode() and not Operation.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(url, {"image": offered.pk, "password": PASSWORD}).status_code == 302
    operation = Operation.objects.get()
    assert operation.kind == OperationKind.RESCUE and operation.params["image_id"] == offered.pk


def test_a_new_vm_goes_to_the_node_with_the_most_memory_left_after_its_live_vms(alice):
    image = make_image()
    busy, quiet = make_node(memory_mib=8192), make_node(memory_mib=6144)
    for node in (busy, quiet):
        image.placements.create(node=node, ready=True)
    make_vm(alice, node=busy, plan=make_plan(memory_mib=4096))  # busy: 4096 left
    make_vm(alice, node=quiet, plan=make_plan(memory_mib=4096), state=VMState.DELETED)  # holds nothing
    assert actions.pick_node(make_plan(), image) == quiet  # 6144 left
