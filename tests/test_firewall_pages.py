"""The Firewall part of the VM page: the rules table, adding and removing rules, the policy."""

import pytest

from firewall.models import Firewall, FirewallRule
from vms.choices import OperationKind, OperationStatus
from vms.models import NetworkInterface, Operation

from .factories import make_plan, make_vm

pytestmark = pytest.mark.django_db


@pytest.fixture
def vm(alice):
    made = make_vm(alice, plan=make_plan(max_firewall_rules=2))
    NetworkInterface.objects.create(vm=made)
    return made


def url(vm, what=""):
    return f"/vms/{vm.uuid}/firewall/{what}"


def finish_operations():
    Operation.objects.update(status=OperationStatus.SUCCEEDED)


def messages_of(response):
    return [str(m) for m in response.context["messages"]]


def test_the_vm_page_loads_the_firewall_part(client, alice, vm):
    client.force_login(alice)
    page = client.get(f"/vms/{vm.uuid}/")
    assert f'data-part-url="{url(vm)}"'.encode() in page.content
    part = client.get(url(vm))
    assert part.status_code == 200
    assert b"0 of 2 rules" in part.content and b"No rules." in part.content
    assert b"Everything gets in" in part.content


def test_the_owner_adds_a_rule_and_sees_it_applying(client, alice, vm, enqueued):
    client.force_login(alice)
    rule = {"protocol": "tcp", "ports": "8000-8100", "source": "198.51.100.9/24", "comment": "web"}
    response = client.post(url(vm, "rules/"), rule, follow=True)
    assert "applying the change now" in messages_of(response)[-1]
    rule = FirewallRule.objects.get()
    assert (rule.port_start, rule.port_end, rule.source, rule.comment) == (
        8000,
        8100,
        "198.51.100.0/24",
        "web",
    )
    assert Operation.objects.get().kind == OperationKind.FIREWALL
    part = client.get(url(vm))
    assert b"Applying" in part.content and b"data-part-poll" in part.content
    assert b"198.51.100.0/24" in part.content and b"8000-8100" in part.content
    finish_operations()
    assert b"Applied" in client.get(url(vm)).content


def test_an_invalid_rule_says_why_and_saves_nothing(client, alice, vm, enqueued):
    client.force_login(alice)
    response = client.post(url(vm, "rules/"), {"protocol": "tcp", "ports": "70000"}, follow=True)
    assert "port_start" not in messages_of(response)[-1]
    assert "less than or equal to 65535" in messages_of(response)[-1]
    response = client.post(url(vm, "rules/"), {"protocol": "icmp", "ports": "8"}, follow=True)
    assert "ICMP has no ports" in messages_of(response)[-1]
    response = client.post(url(vm, "rules/"), {"protocol": "tcp", "ports": "eighty"}, follow=True)
    assert "Write a port (22) or a range (8000-8100)." in messages_of(response)[-1]
    assert not FirewallRule.objects.exists() and not Operation.objects.exists()


def test_the_plans_limit_holds_in_the_page(client, alice, vm, enqueued):
    client.force_login(alice)
    for port in ("22", "80"):
        client.post(url(vm, "rules/"), {"protocol": "tcp", "ports": port})
        finish_operations()
    part = client.get(url(vm)).content
    assert b"allows 2 rules: remove one to add another" in part and b'id="firewall-add"' not in part
    response = client.post(url(vm, "rules/"), {"protocol": "tcp", "ports": "443"}, follow=True)
    assert "allows 2 firewall rules" in messages_of(response)[-1]
    assert FirewallRule.objects.count() == 2


def test_the_owner_removes_a_rule_and_sets_the_policy(client, alice, vm, enqueued):
    client.force_login(alice)
    client.post(url(vm, "rules/"), {"protocol": "udp", "ports": "53"})
    finish_operations()
    client.post(url(vm, "policy/"), {"default_policy": "deny"})
    finish_operations()
    assert Firewall.objects.get(vm=vm).default_policy == "deny"
    assert b"Only what a rule allows gets in." in client.get(url(vm)).content
    rule = FirewallRule.objects.get()
    client.post(url(vm, f"rules/{rule.pk}/remove/"))
    assert not FirewallRule.objects.exists()
    assert Firewall.objects.get(vm=vm).default_policy == "deny"


def test_a_change_while_one_is_applied_is_refused(client, alice, vm, enqueued):
    client.force_login(alice)
    client.post(url(vm, "rules/"), {"protocol": "tcp", "ports": "22"})
    response = client.post(url(vm, "policy/"), {"default_policy": "deny"}, follow=True)
    assert "still in progress" in messages_of(response)[-1]
    assert Firewall.objects.get(vm=vm).default_policy == "allow"


def test_another_customer_gets_404_everywhere(client, bob, alice, vm, enqueued):
    client.force_login(alice)
    client.post(url(vm, "rules/"), {"protocol": "tcp", "ports": "22"})
    rule = FirewallRule.objects.get()
    client.force_login(bob)
    assert client.get(url(vm)).status_code == 404
    assert client.post(url(vm, "rules/"), {"protocol": "tcp", "ports": "23"}).status_code == 404
    assert client.post(url(vm, f"rules/{rule.pk}/remove/")).status_code == 404
    assert client.post(url(vm, "policy/"), {"default_policy": "deny"}).status_code == 404
    assert FirewallRule.objects.count() == 1 and Firewall.objects.get().default_policy == "allow"


def test_a_rule_of_another_vm_cannot_be_removed_through_yours(client, alice, vm, enqueued):
    other = make_vm(alice)
    NetworkInterface.objects.create(vm=other)
    client.force_login(alice)
    client.post(url(other, "rules/"), {"protocol": "tcp", "ports": "22"})
    rule = FirewallRule.objects.get()
    assert client.post(url(vm, f"rules/{rule.pk}/remove/")).status_code == 404


def test_changes_are_posts(client, alice, vm):
    client.force_login(alice)
    assert client.get(url(vm, "rules/")).status_code == 405
    assert client.get(url(vm, "policy/")).status_code == 405


def test_a_vm_without_a_nic_says_there_is_nothing_to_guard(client, alice):
    vm = make_vm(alice)
    client.force_login(alice)
    assert b"nothing for a firewall to guard" in client.get(url(vm)).content


def test_staff_read_a_vms_firewall_in_the_backoffice_and_cannot_change_it_there(client, alice, vm, enqueued):
    from firewall import actions

    from .factories import make_user

    actions.save(vm, alice, policy="deny", rules=[{"protocol": "tcp", "port_start": 22, "comment": "ssh"}])
    firewall = Firewall.objects.get(vm=vm)
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    listing = client.get("/backoffice/firewall/firewall/")
    assert listing.status_code == 200 and vm.hostname.encode() in listing.content
    page = client.get(f"/backoffice/firewall/firewall/{firewall.pk}/change/")
    assert page.status_code == 200 and b"ssh" in page.content
    client.post(f"/backoffice/firewall/firewall/{firewall.pk}/change/", {"default_policy": "allow"})
    assert Firewall.objects.get(pk=firewall.pk).default_policy == "deny"
    client.force_login(alice)
    assert client.get("/backoffice/firewall/firewall/").status_code in (302, 403)
