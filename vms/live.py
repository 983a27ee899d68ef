"""Pushing VM changes to open browsers through Channels groups (one per VM, per owner, and staff)."""

from kvmpanel import pushes

STAFF_GROUP = "vms.staff"


def owner_group(user_id: int) -> str:
    return f"vms.owner.{user_id}"


def vm_group(vm_uuid) -> str:
    return f"vms.vm.{vm_uuid}"


def node_usage_group(node_id: int) -> str:
    return f"vms.usage.node.{node_id}"


def publish_usage_sampled(node_id: int) -> None:
    """Tell pages showing usage graphs of this node or its VMs that a new reading is stored."""
    pushes.group_send([node_usage_group(node_id)], {"type": "usage.sampled", "node": node_id})


def publish_vm_changed(vm) -> None:
    """Tell every page showing `vm` to refresh it. Never fails the caller: the page also reloads."""
    message = {"type": "vm.changed", "vm": str(vm.uuid), "state": vm.state}
    pushes.group_send([vm_group(vm.uuid), owner_group(vm.owner_id), STAFF_GROUP], message)
