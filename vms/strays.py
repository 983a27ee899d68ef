"""Strays: domains on a node that no live VM of this node owns (the reconcile lists them on the node's
row). Staff may adopt one that carries the panel's marker back to the VM row it names, or remove one
that carries the marker, each after a confirmation on the node's backoffice page. A domain without
the marker is never removed by the panel: the worker refuses it again at the door (hypervisor's
NotOurs), whatever the page asked.
"""

import re
import uuid

from celery import current_app
from django.conf import settings
from django.db import transaction

import hypervisor
from accounts import audit
from nodes.models import Node

from .choices import VMState
from .live import publish_vm_changed
from .models import VirtualMachine

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class StrayRefused(Exception):
    """The stray cannot be adopted or removed; the message says why, for the operator."""


def find(node: Node, name: str) -> dict:
    """The stray `name` as the last reconcile reported it on `node`."""
    for stray in node.stray_domains:
        if stray["name"] == name:
            return stray
    raise StrayRefused(f"{name} is not a stray of {node} (the reconcile may have settled it already).")


def owner_vm(name: str) -> VirtualMachine | None:
    """The live VM row the domain's name stands for (its UUID, after the panel's prefix), if any."""
    found = _UUID.fullmatch(name.removeprefix(settings.KVMPANEL_DOMAIN_PREFIX))
    if found is None:
        return None
    return (
        VirtualMachine.objects.live().select_related("node", "owner").filter(uuid=uuid.UUID(found[0])).first()
    )


def adopt(node: Node, name: str) -> VirtualMachine:
    """Give a marked stray back to the VM row it names: the row now says it lives on this node."""
    stray = find(node, name)
    if not stray["panel_metadata"]:
        raise StrayRefused(f"{name} was not made by kvmpanel (no marker): it cannot be adopted.")
    vm = owner_vm(name)
    if vm is None:
        raise StrayRefused(f"No VM of this panel is named {name}: there is nothing to give it back to.")
    if vm.active_operation() is not None:
        raise StrayRefused(f"{vm} has an operation in progress; try again when it has finished.")
    with transaction.atomic():
        moved_from = vm.node
        vm.node = node
        vm.save(update_fields=["node", "updated_at"])
        vm.set_state(stray["state"] if stray["state"] in VMState.values else VMState.UNKNOWN)
        node.stray_domains = [other for other in node.stray_domains if other["name"] != name]
        node.save(update_fields=["stray_domains"])
        audit.record(
            "vm.adopt", vm, outcome="succeeded", detail=f"domain {name} on {node} (was on {moved_from})"
        )
    publish_vm_changed(vm)
    return vm


def request_removal(node: Node, name: str) -> None:
    """Ask the node's worker to remove a marked stray (the domain and its own volumes)."""
    stray = find(node, name)
    if not stray["panel_metadata"]:
        raise StrayRefused(f"{name} was not made by kvmpanel (no marker): the panel never removes it.")
    audit.record("node.remove_stray", node, outcome="requested", detail=name)

    def enqueue():  # by name: the tasks module imports this one
        current_app.send_task("vms.tasks.remove_stray", (node.pk, name), queue=node.queue)

    transaction.on_commit(enqueue)


def remove(node: Node, name: str) -> list[str]:
    """In the worker: undefine the stray (marked domains only) and delete its own volumes; the names
    of the volumes deleted. Checked again here: still no live VM of this node owns it."""
    vm = owner_vm(name)
    if vm is not None and vm.node_id == node.pk:
        raise StrayRefused(f"{name} belongs to {vm} on this node now; left alone.")
    removed = []
    with hypervisor.connect(node.uri) as session:
        if session.domain_exists(name):
            for pool, volume in session.undefine(name):  # NotOurs for a domain without the marker
                if volume.startswith(name):  # its own disks and seeds: never an image or anything shared
                    session.delete_volume(pool, volume)
                    removed.append(volume)
    node.stray_domains = [stray for stray in node.stray_domains if stray["name"] != name]
    node.save(update_fields=["stray_domains"])
    audit.record(
        "node.remove_stray", node, outcome="succeeded", detail=f"{name}; volumes: {removed or 'none'}"
    )
    return removed
