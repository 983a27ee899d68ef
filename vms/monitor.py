"""The node monitor: libvirt events in, VM rows and browser pushes out.

Runs as its own process (manage.py node_monitor), one thread per node.
"""

import logging
import threading
import uuid

from django.conf import settings
from django.db import DatabaseError, close_old_connections
from django.utils import timezone

import hypervisor
from nodes.choices import NodeStatus
from nodes.models import Node

from .choices import PANEL_OWNED_STATES, VMState
from .live import publish_vm_changed
from .models import VirtualMachine
from .usage import UsageRecorder

log = logging.getLogger(__name__)


def vm_for_domain(node: Node, domain_name: str) -> VirtualMachine | None:
    """The panel VM behind a domain name on this node, if any."""
    prefix = settings.KVMPANEL_DOMAIN_PREFIX
    if not domain_name.startswith(prefix):
        return None
    try:
        vm_uuid = uuid.UUID(domain_name[len(prefix) :])
    except ValueError:
        return None  # not a panel name: the reconcile reports such strays
    return VirtualMachine.objects.select_related("owner").filter(node=node, uuid=vm_uuid).first()


def apply_domain_state(node: Node, domain_name: str, state: hypervisor.PowerState | None) -> bool:
    """Record a domain's new power state on its VM and push it; True when the row changed."""
    vm = vm_for_domain(node, domain_name)
    if vm is None or state is None or vm.state in PANEL_OWNED_STATES or vm.state == state:
        return False
    if not VirtualMachine.objects.set_state_if(vm.pk, expected=vm.state, state=state):
        return False  # a task changed the row since we read it: its write stands
    vm.state = state
    publish_vm_changed(vm)
    return True


def apply_node_status(node: Node, reachable: bool, reason: str) -> None:
    """Mark the node and its VMs: unreachable makes their state unknown, never "stopped"."""
    try:
        node.refresh_from_db()
    except Node.DoesNotExist:
        return  # removed meanwhile; its watcher stops at the next rescan
    if reachable:
        node.status = NodeStatus.ONLINE if node.status == NodeStatus.UNREACHABLE else node.status
        node.last_seen_at = timezone.now()
        node.last_error = ""
        node.save(update_fields=["status", "last_seen_at", "last_error"])
        return  # the watcher reports every domain's state right after this
    if node.status == NodeStatus.ONLINE:
        node.status = NodeStatus.UNREACHABLE
    node.last_error = reason
    node.save(update_fields=["status", "last_error"])
    for vm in node.vms.live().exclude(state__in=PANEL_OWNED_STATES).select_related("owner"):
        if VirtualMachine.objects.set_state_if(vm.pk, expected=vm.state, state=VMState.UNKNOWN):
            vm.state = VMState.UNKNOWN
            publish_vm_changed(vm)
    log.warning("node %s unreachable: %s", node, reason)


def watch_node(node: Node, stop: threading.Event) -> None:
    def on_state(name, state):
        close_old_connections()  # a long-lived thread: drop connections the database closed
        apply_domain_state(node, name, state)

    def on_status(reachable, reason):
        close_old_connections()
        apply_node_status(node, reachable, reason)

    recorder = UsageRecorder(node)

    def on_counters(sampled_at, counters):
        close_old_connections()
        recorder.record(sampled_at, counters)

    hypervisor.NodeWatcher(
        node.uri,
        on_state=on_state,
        on_status=on_status,
        on_counters=on_counters,
        stats_interval=settings.KVMPANEL_STATS_INTERVAL,
    ).run(stop)


def run(stop: threading.Event, rescan_seconds: float | None = None) -> None:
    """Watch every node until `stop` is set; nodes added or removed later are picked up on each rescan."""
    rescan_seconds = rescan_seconds or settings.KVMPANEL_MONITOR_RESCAN_SECONDS
    watchers: dict[int, tuple[threading.Thread, threading.Event]] = {}
    while not stop.is_set():
        close_old_connections()
        try:
            nodes = {node.pk: node for node in Node.objects.exclude(status=NodeStatus.DISABLED)}
        except DatabaseError as error:  # away for a moment: keep watching what we watch
            log.warning("node monitor: could not read the nodes: %r", error)
            stop.wait(rescan_seconds)
            continue
        for pk, (thread, node_stop) in list(watchers.items()):
            if pk not in nodes or not thread.is_alive():
                node_stop.set()
                del watchers[pk]
        for pk, node in nodes.items():
            if pk not in watchers:
                node_stop = threading.Event()
                thread = threading.Thread(
                    target=watch_node, args=(node, node_stop), name=f"watch-{node}", daemon=True
                )
                thread.start()
                watchers[pk] = (thread, node_stop)
                log.info("watching node %s (%s)", node, node.uri)
        stop.wait(rescan_seconds)
    for _thread, node_stop in watchers.values():
        node_stop.set()
