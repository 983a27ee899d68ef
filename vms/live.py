"""Pushing VM changes to open browsers through Channels groups (one per VM, per owner, and staff)."""

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

STAFF_GROUP = "vms.staff"


def owner_group(user_id: int) -> str:
    return f"vms.owner.{user_id}"


def vm_group(vm_uuid) -> str:
    return f"vms.vm.{vm_uuid}"


def node_usage_group(node_id: int) -> str:
    return f"vms.usage.node.{node_id}"


def publish_usage_sampled(node_id: int) -> None:
    """Tell pages showing usage graphs of this node or its VMs that a new reading is stored."""
    _send([node_usage_group(node_id)], {"type": "usage.sampled", "node": node_id})


def publish_vm_changed(vm) -> None:
    """Tell every page showing `vm` to refresh it. Never fails the caller: the page also reloads."""
    message = {"type": "vm.changed", "vm": str(vm.uuid), "state": vm.state}
    _send([vm_group(vm.uuid), owner_group(vm.owner_id), STAFF_GROUP], message)


def _send(groups: list[str], message: dict) -> None:
    # One trip into async code for all the groups: each async_to_sync call runs a fresh event
    # loop, and the channel layer opens a Redis connection per loop (a third of the cost).
    layer = get_channel_layer()

    async def send_to_all():
        for group in groups:
            await layer.group_send(group, message)

    try:
        async_to_sync(send_to_all)()
    except (OSError, ConnectionError) as error:  # Redis away: the data is in the database anyway
        log.warning("could not publish %s to %s: %s", message["type"], groups, error)
