"""Changing a VM's firewall: validate, save the rows, and let an operation put them on the node.

The rows are the truth (the filter is built from them each time); the `firewall` operation makes the
node say the same. A change is refused whole, with nothing saved, when a rule is invalid, when there
are more rules than the plan allows, or when another operation on the VM is under way.
"""

from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.template.defaultfilters import pluralize

from accounts import audit
from vms import actions as vm_actions
from vms.models import Operation, VirtualMachine

from .choices import Policy
from .models import Firewall, FirewallRule

ActionRefused = vm_actions.ActionRefused
RULE_FIELDS = ("protocol", "port_start", "port_end", "source", "comment")


@dataclass
class RulesInvalid(Exception):
    """Some rules are invalid: their errors by position in the list (field -> messages)."""

    errors: dict[int, dict[str, list[str]]]

    def __str__(self):
        return "; ".join(
            f"rule {index + 1}: " + " ".join(m for messages in fields.values() for m in messages)
            for index, fields in sorted(self.errors.items())
        )


def firewall_of(vm: VirtualMachine) -> Firewall:
    """The VM's firewall, unsaved (allow, no rules) for a VM that never had one."""
    return Firewall.objects.filter(vm=vm).first() or Firewall(vm=vm)


def validated_rules(rules: list[dict]) -> list[FirewallRule]:
    """Unsaved rules from plain values, cleaned (source normalized, a single port made a range of
    one); raises RulesInvalid with every error of every rule."""
    made, errors = [], {}
    for index, values in enumerate(rules):
        rule = FirewallRule(position=index, **{k: v for k, v in values.items() if k in RULE_FIELDS})
        rule.comment = (rule.comment or "").strip()
        try:
            rule.full_clean(exclude=["firewall"])
        except ValidationError as error:
            errors[index] = error.message_dict
        made.append(rule)
    if errors:
        raise RulesInvalid(errors)
    return made


def save(vm: VirtualMachine, user, *, policy: str, rules: list[dict]) -> Operation:
    """Replace the VM's firewall: its default policy and all its rules, in this order."""
    if policy not in Policy.values:
        raise ActionRefused(f"The default policy is allow or deny, not {policy!r}.")
    made = validated_rules(rules)
    limit = vm.plan.max_firewall_rules
    # A plan lowered below what a VM holds still lets it remove rules (and change its policy).
    if len(made) > limit and len(made) > len(current_rules(vm)):
        refusal = ActionRefused(
            f"The {vm.plan.name} plan allows {limit} firewall rule{pluralize(limit)}: "
            f"this firewall would have {len(made)}. "
            "Cover several ports with a range, or sources with a wider network."
        )
        audit.record("vm.firewall", vm, outcome="refused", detail=str(refusal))
        raise refusal
    if not vm.interfaces.exists():
        raise ActionRefused(
            f"{vm.name} has no public network interface, so there is nothing for a firewall to guard."
        )
    before = describe(firewall_of(vm))

    def change() -> None:
        firewall, _made = Firewall.objects.select_for_update().get_or_create(vm=vm)
        firewall.default_policy = policy
        firewall.save()
        firewall.rules.all().delete()
        for rule in made:
            rule.firewall = firewall
        FirewallRule.objects.bulk_create(made)

    params = {"policy": policy, "rules": [rule.describe() for rule in made]}
    operation = vm_actions.change_firewall(vm, user, change, params)
    after = describe(Firewall.objects.get(vm=vm))
    audit.record("firewall.change", vm, outcome="succeeded", actor=user, detail=f"{before} -> {after}")
    return operation


def current_rules(vm: VirtualMachine) -> list[dict]:
    """The VM's rules as plain values, in order (what `save` takes)."""
    firewall = firewall_of(vm)
    if firewall.pk is None:
        return []
    return [{field: getattr(rule, field) for field in RULE_FIELDS} for rule in firewall.rules.all()]


def add_rule(vm: VirtualMachine, user, values: dict) -> Operation:
    return save(vm, user, policy=firewall_of(vm).default_policy, rules=[*current_rules(vm), values])


def remove_rule(vm: VirtualMachine, user, rule_id: int) -> Operation:
    firewall = firewall_of(vm)
    kept = [
        {field: getattr(rule, field) for field in RULE_FIELDS}
        for rule in (firewall.rules.all() if firewall.pk else [])
        if rule.pk != rule_id
    ]
    return save(vm, user, policy=firewall.default_policy, rules=kept)


def set_policy(vm: VirtualMachine, user, policy: str) -> Operation:
    return save(vm, user, policy=policy, rules=current_rules(vm))


def describe(firewall: Firewall) -> str:
    """The firewall in one line, for the audit log."""
    rules = list(firewall.rules.all()) if firewall.pk else []
    listed = "; ".join(rule.describe() for rule in rules) or "no rules"
    return f"policy {firewall.default_policy}: {listed}"
