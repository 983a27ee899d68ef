"""Draining a node: staff put it in maintenance and every VM on it moves to other nodes, a few at a
time (KVMPANEL_DRAIN_PARALLEL), each by its own migrate operation, so each shows its progress and its
outcome like any other. `top_up` asks for the next moves; it runs when a drain starts, when one of
its moves ends, and periodically (Celery beat), so a lost message costs seconds, never the drain.
"""

import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts import audit
from nodes.choices import SERVING_STATUSES, NodeStatus
from nodes.models import Node

from . import actions, moving
from .choices import ACTIVE_OPERATION_STATUSES, OperationKind, OperationStatus, VMState
from .models import Operation, VirtualMachine

log = logging.getLogger(__name__)
DRAIN_TASK = "vms.tasks.drain_node"
MOVABLE_STATES = (VMState.RUNNING, VMState.STOPPED)


class DrainRefused(Exception):
    """The node cannot be drained now; the message is for staff."""


def set_maintenance(node: Node, user, on: bool) -> None:
    """Staff put the node in maintenance (it gets no new VMs; its VMs run on) or take it out (which
    also stops a drain under way: moves already asked for finish)."""
    if on and node.status not in SERVING_STATUSES:
        raise DrainRefused(
            f"Node {node} is {node.get_status_display().lower()}: it cannot go in maintenance."
        )
    if not on and node.status != NodeStatus.MAINTENANCE:
        raise DrainRefused(f"Node {node} is not in maintenance.")
    node.status = NodeStatus.MAINTENANCE if on else NodeStatus.ONLINE
    if not on:
        node.draining, node.drain_note = False, ""
    node.save(update_fields=["status", "draining", "drain_note"])
    audit.record("node.maintenance", node, outcome="succeeded", actor=user, detail="on" if on else "off")


def start(node: Node, user) -> None:
    """Put the node in maintenance and move every VM off it."""
    if node.status == NodeStatus.ONLINE:
        set_maintenance(node, user, True)
    elif node.status != NodeStatus.MAINTENANCE:
        raise DrainRefused(f"Node {node} is {node.get_status_display().lower()}: its VMs cannot move now.")
    node.draining, node.drain_note, node.drain_started_at = True, "", timezone.now()
    node.save(update_fields=["draining", "drain_note", "drain_started_at"])
    audit.record("node.drain", node, outcome="requested", actor=user, detail=f"{remaining(node).count()} VMs")
    transaction.on_commit(lambda: ring(node.pk))


def stop(node: Node, user) -> None:
    """Ask for no more moves (those under way finish); the node stays in maintenance."""
    node.draining = False
    node.save(update_fields=["draining"])
    audit.record("node.drain", node, outcome="cancelled", actor=user)


def ring(node_id: int) -> None:
    """Ask a worker for the drain's next moves (the periodic run does, if this message is lost)."""
    from celery import current_app
    from kombu.exceptions import OperationalError as BrokerError

    try:
        current_app.send_task(DRAIN_TASK, (node_id,))
    except (BrokerError, OSError) as error:
        log.warning("could not ask for the next moves of node %s's drain: %r", node_id, error)


def remaining(node: Node):
    """The VMs still on the node."""
    return node.vms.live()


def moves_under_way(node: Node):
    return Operation.objects.filter(
        kind=OperationKind.MIGRATE, status__in=ACTIVE_OPERATION_STATUSES, params__from_node_id=node.pk
    )


def pick_target(vm: VirtualMachine) -> Node | None:
    """Where placement would put the VM now, among the nodes it can move to (not its own)."""
    candidates = actions.nodes_by_free_memory(vm.image, Node.objects.exclude(pk=vm.node_id))
    for candidate in candidates:
        if candidate.free_mib < vm.plan.memory_mib:
            break  # sorted by free memory: none after it has room either
        try:
            moving.check_target(vm, candidate)
        except moving.MoveRefused:
            continue
        return candidate
    return None


def top_up(node: Node) -> list[Operation]:
    """Ask for moves until KVMPANEL_DRAIN_PARALLEL are under way from the node; returns those asked.
    Ends the drain once no VM is left, and says on the node what cannot move (and why)."""
    node.refresh_from_db()
    if not node.draining:
        return []
    room = settings.KVMPANEL_DRAIN_PARALLEL - moves_under_way(node).count()
    asked, stuck = [], []
    busy = Operation.objects.filter(status__in=ACTIVE_OPERATION_STATUSES).values("vm_id")
    # A VM whose move failed during this drain is not tried again by it (staff see why, and drain
    # again once it is fixed): a move that fails for good must not be retried for ever.
    failed = {
        op.vm_id: op
        for op in Operation.objects.filter(
            kind=OperationKind.MIGRATE,
            status__in=(OperationStatus.FAILED, OperationStatus.CANCELLED),
            params__from_node_id=node.pk,
            created_at__gte=node.drain_started_at or timezone.now(),
        ).select_related("vm")
    }
    for operation in failed.values():
        if operation.vm.node_id == node.pk:
            stuck.append(f"{operation.vm.name}: its move failed: {operation.error}")
    waiting = (
        remaining(node)
        .exclude(pk__in=busy)
        .exclude(pk__in=list(failed))
        .select_related("node", "plan", "image", "iso")
    )
    for vm in waiting.order_by("pk"):
        if room <= 0:
            break
        if vm.state not in MOVABLE_STATES:
            stuck.append(f"{vm.name}: {vm.get_state_display().lower()}, not movable")
            continue
        target = pick_target(vm)
        if target is None:
            stuck.append(f"{vm.name}: no other node can take it (memory, image, address pools)")
            continue
        try:
            asked.append(actions.migrate(vm, None, target))
        except actions.ActionRefused as refusal:
            stuck.append(f"{vm.name}: {refusal}")
            continue
        room -= 1
    if not remaining(node).exists():
        node.draining, node.drain_note = False, ""
        node.save(update_fields=["draining", "drain_note"])
        audit.record("node.drain", node, outcome="succeeded", detail="no VM left")
        log.info("node %s is drained", node)
        return asked
    note = "\n".join(stuck)
    if note != node.drain_note:
        node.drain_note = note
        node.save(update_fields=["drain_note"])
    return asked
