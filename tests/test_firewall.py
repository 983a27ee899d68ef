"""A VM's firewall: validation, saving through an operation, the filter it becomes, the task."""

import pytest
from lxml import etree

from accounts.models import AuditEntry
from firewall import actions
from firewall.models import Firewall, FirewallRule
from hypervisor import FilterSpec, FirewallRuleSpec, FirewallSpec, nwfilter
from vms import networking
from vms.choices import OperationKind, OperationStatus
from vms.models import NetworkInterface, Operation

from .factories import make_plan, make_user, make_vm
from .test_tasks import FakeTask

pytestmark = pytest.mark.django_db

SSH = {"protocol": "tcp", "port_start": 22}


@pytest.fixture
def vm(alice):
    made = make_vm(alice, plan=make_plan(max_firewall_rules=3))
    NetworkInterface.objects.create(vm=made)
    return made


def errors_of(rules):
    with pytest.raises(actions.RulesInvalid) as raised:
        actions.validated_rules(rules)
    return raised.value.errors


# --- validation ---------------------------------------------------------------------------------


def test_a_single_port_becomes_a_range_of_one_and_the_source_is_normalized():
    (rule,) = actions.validated_rules([{"protocol": "tcp", "port_start": 22, "source": " 198.51.100.7/24 "}])
    assert (rule.port_start, rule.port_end, rule.source) == (22, 22, "198.51.100.0/24")
    (rule,) = actions.validated_rules([{"protocol": "udp", "port_start": 60000, "port_end": 61000}])
    assert rule.ports == "60000-61000" and rule.source == ""


def test_a_bare_address_is_a_host_network_of_its_family():
    rules = actions.validated_rules(
        [{"protocol": "icmp", "source": "203.0.113.9"}, {"protocol": "any", "source": "2001:DB8::1"}]
    )
    assert [r.source for r in rules] == ["203.0.113.9/32", "2001:db8::1/128"]


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_ports_outside_1_to_65535_are_refused(port):
    assert "port_start" in errors_of([{"protocol": "tcp", "port_start": port}])[0]


def test_a_range_that_ends_before_it_starts_is_refused():
    errors = errors_of([SSH, {"protocol": "tcp", "port_start": 9000, "port_end": 8000}])
    assert list(errors) == [1]
    assert errors[1]["port_end"] == ["The range ends (8000) before it starts (9000)."]


def test_tcp_and_udp_need_a_port_and_icmp_and_any_take_none():
    assert "needs a port" in errors_of([{"protocol": "udp"}])[0]["port_start"][0]
    assert "has no ports" in errors_of([{"protocol": "icmp", "port_start": 8}])[0]["port_start"][0]
    assert "has no ports" in errors_of([{"protocol": "any", "port_start": 1}])[0]["port_start"][0]


def test_a_source_that_is_no_network_is_refused_with_an_example():
    message = errors_of([{**SSH, "source": "198.51.100.0/33"}])[0]["source"][0]
    assert "e.g. 198.51.100.0/24" in message
    assert "source" in errors_of([{**SSH, "source": "example.com"}])[0]


def test_an_unknown_protocol_is_refused():
    assert "protocol" in errors_of([{"protocol": "gre"}])[0]


# --- saving --------------------------------------------------------------------------------------


def test_saving_replaces_the_rules_and_asks_for_an_operation(vm, alice, enqueued):
    actions.save(vm, alice, policy="deny", rules=[SSH, {"protocol": "icmp"}])
    Operation.objects.update(status=OperationStatus.SUCCEEDED)
    operation = actions.save(vm, alice, policy="deny", rules=[{"protocol": "tcp", "port_start": 443}])
    firewall = Firewall.objects.get(vm=vm)
    assert firewall.default_policy == "deny"
    assert [r.describe() for r in firewall.rules.all()] == ["TCP 443 from anywhere"]
    assert operation.kind == OperationKind.FIREWALL and operation.status == OperationStatus.QUEUED
    assert operation.params == {"policy": "deny", "rules": ["TCP 443 from anywhere"]}


def test_a_change_while_another_operation_runs_is_refused_and_nothing_is_saved(vm, alice, enqueued):
    Operation.objects.create(vm=vm, kind=OperationKind.REBOOT)
    with pytest.raises(actions.ActionRefused, match="still in progress"):
        actions.save(vm, alice, policy="deny", rules=[SSH])
    assert not Firewall.objects.filter(vm=vm).exists() and not FirewallRule.objects.exists()


def test_more_rules_than_the_plan_allows_are_refused(vm, alice, enqueued):
    rules = [{"protocol": "tcp", "port_start": port} for port in (22, 80, 443, 8080)]
    with pytest.raises(actions.ActionRefused, match="allows 3 firewall rules: this firewall would have 4"):
        actions.save(vm, alice, policy="deny", rules=rules)
    assert not FirewallRule.objects.exists() and not enqueued
    assert AuditEntry.objects.filter(action="vm.firewall", outcome="refused").exists()


def test_a_vm_over_a_lowered_limit_can_still_remove_rules(vm, alice, enqueued):
    actions.save(
        vm, alice, policy="deny", rules=[SSH, {"protocol": "icmp"}, {"protocol": "udp", "port_start": 53}]
    )
    Operation.objects.update(status=OperationStatus.SUCCEEDED)
    vm.plan.max_firewall_rules = 1
    vm.plan.save()
    actions.remove_rule(vm, alice, FirewallRule.objects.get(protocol="icmp").pk)
    assert FirewallRule.objects.count() == 2
    Operation.objects.update(status=OperationStatus.SUCCEEDED)
    with pytest.raises(actions.ActionRefused, match="allows 1 firewall rule:"):
        actions.add_rule(vm, alice, {"protocol": "tcp", "port_start": 80})


def test_invalid_rules_save_nothing(vm, alice, enqueued):
    actions.save(vm, alice, policy="deny", rules=[SSH])
    with pytest.raises(actions.RulesInvalid, match="rule 2: The range ends"):
        actions.save(
            vm, alice, policy="allow", rules=[SSH, {"protocol": "tcp", "port_start": 5, "port_end": 4}]
        )
    firewall = Firewall.objects.get(vm=vm)
    assert firewall.default_policy == "deny" and firewall.rules.count() == 1


def test_a_vm_without_a_nic_has_nothing_to_guard(alice, enqueued):
    with pytest.raises(actions.ActionRefused, match="no public network interface"):
        actions.save(make_vm(alice), alice, policy="deny", rules=[])


def test_changes_are_in_the_audit_log_before_and_after(vm, alice, enqueued):
    actions.save(vm, alice, policy="deny", rules=[SSH])
    entry = AuditEntry.objects.get(action="firewall.change")
    assert entry.detail == "policy allow: no rules -> policy deny: TCP 22 from anywhere"
    assert entry.actor == alice and entry.owner == alice


def test_add_and_remove_keep_the_other_rules_in_order(vm, alice, enqueued):
    actions.save(vm, alice, policy="deny", rules=[SSH, {"protocol": "icmp"}])
    Operation.objects.update(status=OperationStatus.SUCCEEDED)
    actions.add_rule(vm, alice, {"protocol": "udp", "port_start": 53, "source": "2001:db8::/32"})
    Operation.objects.update(status=OperationStatus.SUCCEEDED)
    icmp = FirewallRule.objects.get(protocol="icmp")
    actions.remove_rule(vm, alice, icmp.pk)
    rules = Firewall.objects.get(vm=vm).rules.all()
    assert [r.describe() for r in rules] == ["TCP 22 from anywhere", "UDP 53 from 2001:db8::/32"]
    assert [r.position for r in rules] == [0, 1]


# --- the filter ----------------------------------------------------------------------------------


def rules_of(xml: str):
    document = etree.fromstring(xml.encode())
    return [
        (rule.get("action"), rule.get("direction"), rule.get("priority"), child.tag, dict(child.attrib))
        for rule in document.iterfind("rule")
        for child in rule
    ]


def firewall_rules(spec: FirewallSpec):
    found = rules_of(nwfilter.filter_xml(FilterSpec(name="f", ipv4=("198.51.100.2",), firewall=spec)))
    return [rule for rule in found if int(rule[2]) >= 0]  # the anti-spoofing ones run before, below 0


def test_a_denying_firewall_lets_in_replies_neighbour_discovery_and_what_rules_allow_then_drops():
    spec = FirewallSpec(
        default_deny=True,
        rules=(
            FirewallRuleSpec("tcp", "", 22, 22),
            FirewallRuleSpec("udp", "198.51.100.0/24", 1000, 2000),
            FirewallRuleSpec("icmp", "2001:db8::/32"),
        ),
    )
    assert firewall_rules(spec) == [
        ("accept", "out", "100", "all", {}),
        ("accept", "out", "100", "all-ipv6", {}),
        ("accept", "in", "100", "all", {"state": "ESTABLISHED,RELATED"}),
        ("accept", "in", "100", "all-ipv6", {"state": "ESTABLISHED,RELATED"}),
        *[("accept", "in", "100", "icmpv6", {"type": t}) for t in ("133", "134", "135", "136")],
        ("accept", "in", "200", "tcp", {"dstportstart": "22", "dstportend": "22"}),
        ("accept", "in", "200", "tcp-ipv6", {"dstportstart": "22", "dstportend": "22"}),
        ("accept", "in", "201", "udp",
         {"srcipaddr": "198.51.100.0", "srcipmask": "24", "dstportstart": "1000", "dstportend": "2000"}),
        ("accept", "in", "202", "icmpv6", {"srcipaddr": "2001:db8::", "srcipmask": "32"}),
        ("drop", "in", "900", "all", {"state": "NEW,INVALID"}),
        ("drop", "in", "900", "all-ipv6", {"state": "NEW,INVALID"}),
    ]  # fmt: skip


def test_neighbour_discovery_is_matched_without_connection_state():
    document = etree.fromstring(
        nwfilter.filter_xml(FilterSpec(name="f", firewall=FirewallSpec(True))).encode()
    )
    stateless = [rule for rule in document.iterfind("rule") if rule.get("statematch") == "false"]
    assert [rule[0].get("type") for rule in stateless] == ["133", "134", "135", "136"]


def test_an_allowing_firewall_adds_nothing_to_the_anti_spoofing_rules():
    plain = nwfilter.filter_xml(FilterSpec(name="f", ipv4=("198.51.100.2",)))
    allowing = FirewallSpec(default_deny=False, rules=(FirewallRuleSpec("tcp", "", 22, 22),))
    assert nwfilter.filter_xml(FilterSpec(name="f", ipv4=("198.51.100.2",), firewall=allowing)) == plain


def test_the_vms_filter_carries_its_firewall_from_the_rows(vm, alice, enqueued):
    assert networking.filter_spec(vm).firewall is None  # never had one: everything in, as before
    actions.save(vm, alice, policy="deny", rules=[{**SSH, "source": "203.0.113.0/24"}])
    assert networking.filter_spec(vm).firewall == FirewallSpec(
        default_deny=True, rules=(FirewallRuleSpec("tcp", "203.0.113.0/24", 22, 22),)
    )
    found = rules_of(nwfilter.filter_xml(networking.filter_spec(vm)))
    assert found[0][3:] == ("mac", {"match": "no", "srcmacaddr": "$MAC"})  # anti-spoofing still first
    assert ("accept", "in", "200", "tcp", {"srcipaddr": "203.0.113.0", "srcipmask": "24",
            "dstportstart": "22", "dstportend": "22"}) in found  # fmt: skip


# --- the operation -------------------------------------------------------------------------------


def test_the_operation_defines_the_filter_again_and_keeps_the_vms_state(vm, alice, enqueued, monkeypatch):
    from firewall import applying
    from vms import tasks

    defined = []

    class Node:
        def define_filter(self, spec):
            defined.append(spec)

        def domain_exists(self, name):
            return True

        def power_state(self, name):
            return "running"

    import contextlib

    import hypervisor

    monkeypatch.setattr(hypervisor, "connect", lambda uri: contextlib.nullcontext(Node()))
    operation = actions.save(vm, alice, policy="deny", rules=[SSH])
    tasks.run_operation(FakeTask(), operation.pk, applying.apply)
    operation.refresh_from_db()
    assert operation.status == OperationStatus.SUCCEEDED, operation.error
    assert defined[0].name == networking.filter_name(vm)
    assert defined[0].firewall.rules == (FirewallRuleSpec("tcp", "", 22, 22),)
    assert AuditEntry.objects.filter(action="vm.firewall", outcome="succeeded").exists()


def test_a_failed_operation_can_be_retried_by_staff(vm, alice, enqueued):
    from vms import actions as vm_actions

    operation = actions.save(vm, alice, policy="deny", rules=[SSH])
    Operation.objects.filter(pk=operation.pk).update(status=OperationStatus.FAILED, error="node said no")
    operation.refresh_from_db()
    again = vm_actions.retry_operation(operation, make_user("root", is_staff=True))
    assert again.pk != operation.pk and again.kind == OperationKind.FIREWALL
    assert again.params == operation.params
