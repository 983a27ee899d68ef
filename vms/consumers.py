"""WebSocket consumers: the serial console, relayed between xterm.js and a libvirt console stream."""

import asyncio
import contextlib

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer
from django.core.exceptions import ValidationError

from . import hypervisor, live
from .models import Node, VirtualMachine

# Close codes the page explains to the user.
CLOSE_NOT_FOUND = 4404
CLOSE_BUSY = 4409
CLOSE_UNAVAILABLE = 4503
CLOSE_ENDED = 4000


@database_sync_to_async
def _visible_vm(user, vm_uuid):
    if not user.is_authenticated or not user.is_active:
        return None
    return VirtualMachine.objects.visible_to(user).select_related("node").filter(uuid=vm_uuid).first()


class SerialConsoleConsumer(AsyncWebsocketConsumer):
    """One viewer of one VM's serial console. Leaving the page closes the stream."""

    console: hypervisor.SerialConsole | None = None

    async def __call__(self, scope, receive, send):
        # disconnect() runs only when the browser leaves cleanly; if the
        # consumer dies any other way, the console must still be freed.
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._release()

    async def _release(self):
        console, self.console = self.console, None
        if console is not None:
            await asyncio.to_thread(console.close)

    async def connect(self):
        vm = await _visible_vm(self.scope["user"], self.scope["url_route"]["kwargs"]["vm_uuid"])
        await self.accept()
        if vm is None:
            await self.close(CLOSE_NOT_FOUND)  # the same as a VM that does not exist
            return
        force = b"force=1" in self.scope.get("query_string", b"")
        try:
            self.console = await asyncio.to_thread(
                hypervisor.SerialConsole, vm.node.uri, vm.domain_name, force
            )
        except hypervisor.ConsoleBusy:
            await self.close(CLOSE_BUSY)
            return
        except hypervisor.HypervisorError:
            await self.close(CLOSE_UNAVAILABLE)
            return
        self.pump = asyncio.create_task(self._relay_from_guest())

    async def _relay_from_guest(self):
        while True:
            data = await asyncio.to_thread(self.console.recv)
            if not data:
                break
            await self.send(bytes_data=data)
        # The stream ended: VM powered off, or another window took the console over.
        await self.close(CLOSE_ENDED)

    async def receive(self, text_data=None, bytes_data=None):
        if self.console is None:
            return
        data = bytes_data if bytes_data is not None else (text_data or "").encode()
        await asyncio.to_thread(self.console.send, data)

    async def disconnect(self, code):
        await self._release()
        pump = getattr(self, "pump", None)
        if pump is not None and pump is not asyncio.current_task():
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump


@database_sync_to_async
def _usage_node_id(user, content: dict) -> int | None:
    """The node whose usage readings a page may follow: a VM's node it may see, or any node for staff."""
    if "vm" in content:
        vm = VirtualMachine.objects.visible_to(user).filter(uuid=content["vm"]).only("node_id").first()
        return vm.node_id if vm else None
    if "node" in content and user.is_staff:
        return Node.objects.filter(pk=content["node"]).values_list("pk", flat=True).first()
    return None


class LiveConsumer(AsyncJsonWebsocketConsumer):
    """Pushes "this VM changed" to a signed-in user's pages: their own VMs, or every VM for staff.

    A page with usage graphs also sends {"usage": {"vm": uuid}} (or {"node": id}, staff)
    to hear when a new reading of that VM's node is stored.
    """

    async def connect(self):
        user = self.scope["user"]
        if not user.is_authenticated or not user.is_active:
            await self.close(CLOSE_NOT_FOUND)
            return
        self.groups_joined = [live.STAFF_GROUP if user.is_staff else live.owner_group(user.pk)]
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content, **kwargs):
        request = content.get("usage") if isinstance(content, dict) else None
        if not isinstance(request, dict):
            return
        try:
            node_id = await _usage_node_id(self.scope["user"], request)
        except (TypeError, ValueError, ValidationError):
            node_id = None  # a malformed UUID or id: the same as one it may not see
        if node_id is None:
            await self.send_json({"error": "no such VM or node"})
            return
        group = live.node_usage_group(node_id)
        if group not in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
            self.groups_joined.append(group)

    async def vm_changed(self, event):
        await self.send_json({"vm": event["vm"], "state": event["state"]})

    async def usage_sampled(self, event):
        await self.send_json({"usage": event["node"]})
