"""The Firewall part of a VM's page, and the changes it asks for. Access is vms' own (owner and
staff; anyone else gets 404)."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from vms.choices import OperationKind
from vms.views import _get_vm_for_user

from . import actions
from .forms import PolicyForm, RuleForm
from .models import FirewallRule


@login_required
def vm_firewall(request, vm_uuid):
    """The partial the VM page loads (and reloads every few seconds while a change is applied)."""
    vm = _get_vm_for_user(request.user, vm_uuid)
    return render(request, "firewall/_vm_firewall.html", context(vm))


def context(vm, rule_form=None) -> dict:
    firewall = actions.firewall_of(vm)
    rules = list(firewall.rules.all()) if firewall.pk else []
    last = vm.operations.filter(kind=OperationKind.FIREWALL).order_by("-created_at", "-id").first()
    return {
        "vm": vm,
        "firewall": firewall,
        "rules": rules,
        "limit": vm.plan.max_firewall_rules,
        "has_nic": vm.interfaces.exists(),
        "applying": last is not None and last.is_active,
        "failed": last if last is not None and last.status == "failed" else None,
        "rule_form": rule_form or RuleForm(),
        "policy_form": PolicyForm(initial={"default_policy": firewall.default_policy}),
    }


def _saved(request, vm, change) -> None:
    try:
        change()
    except (actions.ActionRefused, actions.RulesInvalid) as refusal:
        messages.error(request, f"The firewall was not changed: {refusal}")
    else:
        messages.info(request, f"Firewall of {vm.name}: applying the change now, without a restart.")


@require_POST
@login_required
def vm_firewall_add(request, vm_uuid):
    vm = _get_vm_for_user(request.user, vm_uuid)
    form = RuleForm(request.POST)
    if not form.is_valid():
        errors = " ".join(e for field_errors in form.errors.values() for e in field_errors)
        messages.error(request, f"The rule was not added: {errors}")
    else:
        _saved(request, vm, lambda: actions.add_rule(vm, request.user, form.rule()))
    return redirect(f"{vm.get_absolute_url()}#firewall")


@require_POST
@login_required
def vm_firewall_remove(request, vm_uuid, rule_id):
    vm = _get_vm_for_user(request.user, vm_uuid)
    rule = get_object_or_404(FirewallRule, firewall__vm=vm, pk=rule_id)
    _saved(request, vm, lambda: actions.remove_rule(vm, request.user, rule.pk))
    return redirect(f"{vm.get_absolute_url()}#firewall")


@require_POST
@login_required
def vm_firewall_policy(request, vm_uuid):
    vm = _get_vm_for_user(request.user, vm_uuid)
    form = PolicyForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The firewall was not changed: pick allow or deny.")
    else:
        _saved(request, vm, lambda: actions.set_policy(vm, request.user, form.cleaned_data["default_policy"]))
    return redirect(f"{vm.get_absolute_url()}#firewall")
