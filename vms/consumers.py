"""WebSocket consumers: the serial console, relayed between xterm.js and a libvirt console stream, and
the live updates of open pages.

Both let in only a session that may act now, by the rules pages follow (accounts.sessions: active,
not owing the second factor), and end when that session ends (SessionBound).
"""

import asyncio
import contextlib
import json

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer
from django.conf import settings
from django.core.exceptions import ValidationError

import hypervisor
from accounts import sessions
from nodes.models import Node

from . import live
from .models import VirtualMachine

# Close codes the page explains to the user.
CLOSE_NOT_FOUND = 4404
CLOSE_BUSY = 4409
CLOSE_UNAVAILABLE = 4503
CLOSE_ENDED = 4000
CLOSE_SIGNED_OUT = 4401  # the session ended (signed out, password or two-factor changed, suspended)

_session_user = database_sync_to_async(sessions.user_of_session)


@database_sync_to_async
def _visible_vm(user, vm_uuid):
    if user is None:
        return None
    return VirtualMachine.objects.visible_to(user).select_related("node").filter(uuid=vm_uuid).first()


class SessionBound:
    """A websocket that lives only as long as its session: it joins its user's group (accounts.sessions
    tells it when a session of the user may have ended) and checks again every
    KVMPANEL_SOCKET_RECHECK_SECONDS. `session_ended()` is what the consumer does then."""

    session_key = ""
    _user_group = None
    _rechecks = None

    async def signed_in_user(self):
        """The user whose session opened this socket, if they may act now (else None)."""
        self.session_key = getattr(self.scope.get("session"), "session_key", None) or ""
        return await _session_user(self.session_key)

    async def follow_session(self, user) -> None:
        self._user_group = sessions.user_group(user.pk)
        await self.channel_layer.group_add(self._user_group, self.channel_name)
        self._rechecks = asyncio.create_task(self._recheck_periodically())

    async def unfollow_session(self) -> None:
        if self._rechecks is not None and self._rechecks is not asyncio.current_task():
            self._rechecks.cancel()
        if self._user_group is not None:
            await self.channel_layer.group_discard(self._user_group, self.channel_name)
            self._user_group = None

    async def _recheck_periodically(self):
        while True:
            await asyncio.sleep(settings.KVMPANEL_SOCKET_RECHECK_SECONDS)
            if await _session_user(self.session_key) is None:
                await self.session_ended("Your session has ended: please sign in again.")
                return

    async def session_check(self, event):
        """accounts.sessions says a session of this user may have ended: is it this one?"""
        ended = event.get("ended") and event["ended"] == self.session_key
        if ended or await _session_user(self.session_key) is None:
            await self.session_ended(event.get("reason") or "Your session has ended: please sign in again.")

    async def session_ended(self, reason: str) -> None:
        raise NotImplementedError


class SerialConsoleConsumer(SessionBound, AsyncWebsocketConsumer):
    """One viewer of one VM's serial console. Leaving the page closes the stream."""

    console: hypervisor.SerialConsole | None = None

    async def __call__(self, scope, receive, send):
        # disconnect() runs only when the browser leaves cleanly; if the
        # consumer dies any other way, the console must still be freed.
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._release()
            await self.unfollow_session()

    async def _release(self):
        console, self.console = self.console, None
        if console is not None:
            await asyncio.to_thread(console.close)

    async def connect(self):
        user = await self.signed_in_user()
        vm = await _visible_vm(user, self.scope["url_route"]["kwargs"]["vm_uuid"])
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
        await self.follow_session(user)
        self.pump = asyncio.create_task(self._relay_from_guest(self.console))

    async def _relay_from_guest(self, console):
        while True:
            data = await asyncio.to_thread(console.recv)
            if not data or self.console is not console:  # ended, or released (the session ended)
                break
            await self.send(bytes_data=data)
        if self.console is console:
            # The stream ended: VM powered off, or another window took the console over.
            await self.close(CLOSE_ENDED)

    async def session_ended(self, reason: str) -> None:
        # The stream goes first: not one more byte either way once the session is over.
        await self._release()
        await self.close(CLOSE_SIGNED_OUT)

    async def receive(self, text_data=None, bytes_data=None):
        if self.console is None:
            return
        data = bytes_data if bytes_data is not None else (text_data or "").encode()
        await asyncio.to_thread(self.console.send, data)

    async def disconnect(self, code):
        await self._release()
        await self.unfollow_session()
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


class LiveConsumer(SessionBound, AsyncJsonWebsocketConsumer):
    """Pushes "this VM changed" to a signed-in user's pages: their own VMs, or every VM for staff.

    A page with usage graphs also sends {"usage": {"vm": uuid}} (or {"node": id}, staff)
    to hear when a new reading of that VM's node is stored. When the session ends, the page is told
    why ({"signed_out": reason}) before the socket closes.
    """

    signed_out = False

    async def connect(self):
        user = await self.signed_in_user()
        if user is None:
            await self.close(CLOSE_NOT_FOUND)
            return
        self.user = user
        self.groups_joined = [live.STAFF_GROUP if user.is_staff else live.owner_group(user.pk)]
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.follow_session(user)
        await self.accept()

    async def disconnect(self, code):
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)
        self.groups_joined = []
        await self.unfollow_session()

    async def session_ended(self, reason: str) -> None:
        await self.disconnect(CLOSE_SIGNED_OUT)  # no more news from now on
        self.signed_out = True  # (and none of what was already on its way)
        await self.send_json({"signed_out": reason})
        await self.close(CLOSE_SIGNED_OUT)

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        # A message that is not JSON is the page's mistake (or a probe's): say so and keep the socket.
        try:
            content = json.loads(text_data if text_data is not None else bytes_data)
        except (TypeError, ValueError):
            await self.send_json({"error": "messages must be JSON"})
            return
        await self.receive_json(content)

    async def receive_json(self, content, **kwargs):
        request = content.get("usage") if isinstance(content, dict) else None
        if not isinstance(request, dict):
            return
        try:
            node_id = await _usage_node_id(self.user, request)
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
        if not self.signed_out:
            await self.send_json({"vm": event["vm"], "state": event["state"]})

    async def usage_sampled(self, event):
        if not self.signed_out:
            await self.send_json({"usage": event["node"]})
