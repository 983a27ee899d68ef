"""/api/v1/vms/<uuid>/firewall/: read and replace a VM's firewall (the cast is in test_api_cast.py)."""

import pytest

from firewall.models import Firewall
from vms.models import NetworkInterface

from .factories import make_plan, make_vm

pytestmark = pytest.mark.django_db


@pytest.fixture
def vm(alice):
    made = make_vm(alice, plan=make_plan(max_firewall_rules=2))
    NetworkInterface.objects.create(vm=made)
    return made


def url(vm):
    return f"/api/v1/vms/{vm.uuid}/firewall/"


def test_a_vm_without_a_firewall_lets_everything_in(api_client, alice, vm):
    answer = api_client(alice).get(url(vm))
    assert answer.status_code == 200
    assert answer.json() == {"default_policy": "allow", "rules": [], "max_rules": 2, "applying": False}


def test_replacing_the_rules_answers_the_operation_and_reads_back_normalized(api_client, alice, vm, no_tasks):
    client = api_client(alice)
    body = {
        "default_policy": "deny",
        "rules": [
            {"protocol": "tcp", "port_start": 22, "comment": "ssh"},
            {"protocol": "icmp", "source": "2001:DB8::7/32"},
        ],
    }
    answer = client.put(url(vm), body, format="json")
    assert answer.status_code == 202 and answer.json()["kind"] == "firewall"
    assert client.get(url(vm)).json() == {
        "default_policy": "deny",
        "rules": [
            {"protocol": "tcp", "port_start": 22, "port_end": 22, "source": "", "comment": "ssh"},
            {
                "protocol": "icmp",
                "port_start": None,
                "port_end": None,
                "source": "2001:db8::/32",
                "comment": "",
            },
        ],
        "max_rules": 2,
        "applying": True,
    }


def test_invalid_rules_answer_400_naming_the_rule_and_field(api_client, alice, vm, no_tasks):
    body = {
        "default_policy": "deny",
        "rules": [
            {"protocol": "tcp", "port_start": 22},
            {"protocol": "udp", "port_start": 90, "port_end": 80},
        ],
    }
    answer = api_client(alice).put(url(vm), body, format="json")
    assert answer.status_code == 400
    assert answer.json()["error"]["fields"] == {
        "rules[1].port_end": ["The range ends (80) before it starts (90)."]
    }
    assert not Firewall.objects.exists()


def test_more_rules_than_the_plan_allows_answer_409(api_client, alice, vm, no_tasks):
    rules = [{"protocol": "tcp", "port_start": port} for port in (22, 80, 443)]
    answer = api_client(alice).put(url(vm), {"default_policy": "deny", "rules": rules}, format="json")
    assert answer.status_code == 409 and "allows 2 firewall rules" in answer.json()["error"]["message"]


def test_another_customers_vm_answers_404(api_client, bob, vm, no_tasks):
    client = api_client(bob)
    assert client.get(url(vm)).status_code == 404
    answer = client.put(url(vm), {"default_policy": "deny", "rules": []}, format="json")
    assert answer.status_code == 404 and not Firewall.objects.exists()


def test_a_read_only_token_cannot_change_it(api_client, alice, vm, no_tasks):
    answer = api_client(alice, scope="read").put(
        url(vm), {"default_policy": "deny", "rules": []}, format="json"
    )
    assert answer.status_code == 403 and not Firewall.objects.exists()


def test_an_accept_header_the_api_cannot_satisfy_still_gets_json(api_client, alice, vm):
    """Found by the schema fuzz (a random Accept header): JSON, never an undocumented 406."""
    answer = api_client(alice).get(url(vm), HTTP_ACCEPT="CP>CDd0%aq")
    assert answer.status_code == 200 and answer["Content-Type"] == "application/json"
