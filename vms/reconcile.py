"""The periodic reconcile: compare a node's domains with the database and repair what events missed.

It fixes each VM's state, flags VMs whose domain has gone (state "missing"),
and reports domains no VM owns ("strays") on the node's row. It never creates,
changes or deletes a domain itself: it writes the panel's own rows, and asks
(as an operation) for a suspended customer's VMs that still run to be forced off.
"""

import contextlib
import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.utils import timezone

import hypervisor
from nodes.choices import SERVING_STATUSES
from nodes.models import Node

from . import actions
from .choices import ACTIVE_OPERATION_STATUSES, PANEL_OWNED_STATES, OperationKind, VMState
from .live import publish_vm_changed
from .models import VirtualMachine
from .suspension import STOP_BY_STATE

log = logging.getLogger(__name__)


@dataclass
class Report:
    fixed: list[str] = field(default_factory=list)  # "<vm>: <old> -> <new>"
    missing: list[str] = field(default_factory=list)
    strays: list[dict] = field(default_factory=list)


def reconcile_node(node: Node) -> Report | None:
    """Reconcile one node; None when it does not answer (the node monitor marks it)."""
    try:
        with hypervisor.connect(node.uri) as session:
            domains = session.domain_states()
            vms = _vms_to_check(node)
            strays = _strays(session, domains, node)
    except hypervisor.NodeUnreachable as error:
        log.info("reconcile of %s skipped: %s", node, error)
        return None
    report = Report(strays=strays)
    for vm in vms:
        actual = domains.get(vm.domain_name, VMState.MISSING)
        if actual == vm.state:
            continue
        if not VirtualMachine.objects.set_state_if(vm.pk, expected=vm.state, state=actual):
            continue  # changed since we read it (a task, the monitor): theirs is newer
        (report.missing if actual == VMState.MISSING else report.fixed).append(
            f"{vm}: {vm.state} -> {actual}"
        )
        vm.state = actual
        publish_vm_changed(vm)
    _stop_suspended(vms)
    _record(node, report)
    return report


def _stop_suspended(vms) -> None:
    """Force off what a suspended customer still runs: the guest ignored the shutdown, or an
    operation in flight at suspension (a create, a start) brought it up afterwards."""
    for vm in vms:
        if vm.owner.is_suspended and vm.state in STOP_BY_STATE:
            with contextlib.suppress(actions.ActionRefused):
                actions.request(vm, None, OperationKind.FORCE_OFF)


def _vms_to_check(node: Node) -> list:
    """The node's VMs whose state libvirt decides, minus those an operation is changing right now."""
    return list(
        node.vms.live()
        .exclude(state__in=PANEL_OWNED_STATES)
        .exclude(operations__status__in=ACTIVE_OPERATION_STATUSES)
        .select_related("owner")
    )


def _strays(session: hypervisor.NodeSession, domains: dict, node: Node) -> list[dict]:
    """Domains on the node that no live VM of this panel owns, each with whether it carries our marker."""
    prefix = settings.KVMPANEL_DOMAIN_PREFIX
    known = {f"{prefix}{vm_uuid}" for vm_uuid in node.vms.live().values_list("uuid", flat=True)}
    strays = []
    for name in sorted(set(domains) - known):
        try:
            ours = session.is_panel_domain(name)
        except hypervisor.NotFound:
            continue  # undefined between the two calls
        strays.append({"name": name, "state": domains[name], "panel_metadata": ours})
    return strays


def _record(node: Node, report: Report) -> None:
    previous = {stray["name"] for stray in node.stray_domains}
    for stray in report.strays:
        if stray["name"] not in previous:
            log.warning("node %s has a domain no VM owns: %s (left untouched)", node, stray["name"])
    for line in report.missing:
        log.warning("node %s: domain gone for %s", node, line)
    node.stray_domains = report.strays
    node.reconciled_at = timezone.now()
    node.save(update_fields=["stray_domains", "reconciled_at"])


def reconcilable_nodes():
    """Online nodes: an unreachable node's VMs stay "unknown" until its monitor sees it answer."""
    return Node.objects.filter(status__in=SERVING_STATUSES)
