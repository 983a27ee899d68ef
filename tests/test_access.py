"""Who sees what on the VM pages (every route against the whole cast: tests/test_cast.py)."""

import pytest
from django.urls import reverse

from vms.models import Operation

pytestmark = pytest.mark.django_db


def test_the_owner_sees_their_vm(client, alice, alice_vm):
    client.force_login(alice)
    response = client.get(alice_vm.get_absolute_url())
    assert response.status_code == 200
    assert alice_vm.hostname in response.content.decode()


def test_staff_see_any_vm(client, staff, alice_vm):
    client.force_login(staff)
    assert client.get(alice_vm.get_absolute_url()).status_code == 200


def test_the_list_shows_only_my_vms(client, alice, bob, alice_vm):
    from .factories import make_vm

    bobs = make_vm(bob, hostname="bobs-secret-vm")
    client.force_login(alice)
    page = client.get(reverse("vms:list")).content.decode()
    assert alice_vm.hostname in page
    assert bobs.hostname not in page


def test_staff_list_shows_everyone(client, staff, alice_vm):
    client.force_login(staff)
    assert alice_vm.hostname in client.get(reverse("vms:list")).content.decode()


@pytest.mark.parametrize("kind", ["start", "shutdown", "force_off", "reboot"])
def test_actions_reject_get(client, alice, alice_vm, kind):
    client.force_login(alice)
    response = client.get(reverse("vms:action", args=[alice_vm.uuid, kind]))
    assert response.status_code == 405


def test_an_unknown_action_is_404(client, alice, alice_vm):
    client.force_login(alice)
    response = client.post(reverse("vms:action", args=[alice_vm.uuid, "migrate"]))
    assert response.status_code == 404


def test_actions_need_csrf(alice, alice_vm):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post(reverse("vms:action", args=[alice_vm.uuid, "reboot"]))
    assert response.status_code == 403
    assert not Operation.objects.exists()


def test_customers_cannot_reach_the_backoffice(client, alice):
    client.force_login(alice)
    response = client.get(reverse("admin:vms_virtualmachine_changelist"))
    assert response.status_code == 302
    assert "login" in response["Location"]


def test_the_list_refresh_returns_only_the_table(client, alice, alice_vm):
    client.force_login(alice)
    page = client.get(reverse("vms:list"), headers={"HX-Request": "true"}).content.decode()
    assert f'data-vm="{alice_vm.uuid}"' in page
    assert "<html" not in page


def test_the_backoffice_node_list_counts_live_vms_in_one_query(
    client, staff, alice, django_assert_max_num_queries
):
    from vms.choices import VMState

    from .factories import make_vm

    node = make_vm(alice).node
    make_vm(alice, node=node)
    make_vm(alice, node=node, state=VMState.DELETED)
    client.force_login(staff)
    staff.is_superuser = True
    staff.save()
    with django_assert_max_num_queries(8):
        page = client.get(reverse("admin:nodes_node_changelist")).content.decode()
    assert '<td class="field-vm_count">2</td>' in page
