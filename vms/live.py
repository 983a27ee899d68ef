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


def publish_vm_changed(vm) -> None:
    """Tell every page showing `vm` to refresh it. Never fails the caller: the page also reloads."""
    message = {"type": "vm.changed", "vm": str(vm.uuid), "state": vm.state}
    layer = get_channel_layer()
    try:
        for group in (vm_group(vm.uuid), owner_group(vm.owner_id), STAFF_GROUP):
            async_to_sync(layer.group_send)(group, message)
    except (OSError, ConnectionError) as error:  # Redis away: the state is in the database anyway
        log.warning("could not publish a change of %s: %s", vm.uuid, error)
