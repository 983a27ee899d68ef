"""A real serial console socket (a running QEMU domain's console stream, through the panel's consumer)
ends when its session ends: the socket closes and the libvirt console is free again, so nothing more
is relayed to or from the guest after sign-out."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

import hypervisor
from vms import consumers

from ..asgi_helpers import run_off_loop, websocket

pytestmark = pytest.mark.integration


@pytest.fixture
def running_vm(stopped_vm):
    """The stopped VM's domain started: QEMU runs, so its serial console can be opened (no boot needed)."""
    with hypervisor.connect(stopped_vm.node.uri) as session:
        session.start(stopped_vm.domain_name)
    stopped_vm.set_state("running")
    return stopped_vm


def test_signing_out_ends_a_real_serial_console(running_vm):
    browser = Client()
    browser.force_login(running_vm.owner)
    cookie = f"sessionid={browser.cookies['sessionid'].value}"

    async def session():
        communicator = websocket(f"/ws/vms/{running_vm.uuid}/serial/", cookie, "http://127.0.0.1:8000")
        connected, _ = await communicator.connect(timeout=10)
        assert connected
        await communicator.send_to(bytes_data=b"\r")
        relayed = []  # what the guest printed meanwhile (firmware, kernel): the stream is open
        while not await communicator.receive_nothing(timeout=1):
            relayed.append(await communicator.receive_output())
        opened = all(message["type"] == "websocket.send" for message in relayed) or relayed
        await sync_to_async(browser.post, thread_sensitive=False)("/accounts/logout/")
        closed = await communicator.receive_output(timeout=10)
        while closed["type"] != "websocket.close":  # whatever the guest printed before
            closed = await communicator.receive_output(timeout=10)
        await asyncio.sleep(0.5)
        await communicator.disconnect()
        return opened, closed

    opened, closed = run_off_loop(session())
    assert opened and closed == {"type": "websocket.close", "code": consumers.CLOSE_SIGNED_OUT}
    # The stream was let go: a new viewer gets the console without taking it over.
    console = hypervisor.SerialConsole(running_vm.node.uri, running_vm.domain_name, force=False)
    console.close()
