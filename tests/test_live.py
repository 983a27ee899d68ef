"""Live state: libvirt events become VM rows and pushes; the live websocket's access rules."""

import pytest
from asgiref.sync import sync_to_async

import hypervisor
from hypervisor.events import state_after
from nodes.choices import NodeStatus
from vms import live, monitor
from vms.choices import OperationKind, VMState

from .asgi_helpers import run_off_loop, websocket
from .factories import make_node, make_vm
from .test_console import session_cookie_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def pushes(monkeypatch):
    sent = []
    monkeypatch.setattr(monitor, "publish_vm_changed", lambda vm: sent.append((str(vm.uuid), vm.state)))
    return sent


def test_lifecycle_events_map_to_power_states():
    import libvirt

    assert state_after(libvirt.VIR_DOMAIN_EVENT_STOPPED) == hypervisor.PowerState.STOPPED
    assert state_after(libvirt.VIR_DOMAIN_EVENT_STARTED) == hypervisor.PowerState.RUNNING
    assert state_after(libvirt.VIR_DOMAIN_EVENT_CRASHED) == hypervisor.PowerState.CRASHED
    assert state_after(libvirt.VIR_DOMAIN_EVENT_UNDEFINED) is None
    assert state_after(libvirt.VIR_DOMAIN_EVENT_DEFINED) is False


def test_an_event_updates_the_vm_and_pushes_it(alice_vm, pushes):
    assert monitor.apply_domain_state(alice_vm.node, alice_vm.domain_name, hypervisor.PowerState.STOPPED)
    alice_vm.refresh_from_db()
    assert alice_vm.state == VMState.STOPPED
    assert pushes == [(str(alice_vm.uuid), "stopped")]


def test_a_repeated_state_is_not_pushed_again(alice_vm, pushes):
    monitor.apply_domain_state(alice_vm.node, alice_vm.domain_name, hypervisor.PowerState.RUNNING)
    assert pushes == []


@pytest.mark.parametrize(
    "name", ["foreign-vm", "test-not-a-uuid", "test-6f1c6c2e-4c9b-4a3e-9a4e-0c1d2e3f4a5b"]
)
def test_domains_the_panel_does_not_know_are_ignored(alice_vm, pushes, name):
    assert not monitor.apply_domain_state(alice_vm.node, name, hypervisor.PowerState.STOPPED)
    assert pushes == []


def test_an_event_on_another_node_does_not_touch_the_vm(alice_vm, pushes):
    other = make_node()
    assert not monitor.apply_domain_state(other, alice_vm.domain_name, hypervisor.PowerState.STOPPED)


@pytest.mark.parametrize("state", [VMState.DELETED, VMState.PROVISIONING, VMState.ERROR])
def test_states_the_panel_owns_are_kept(alice, pushes, state):
    vm = make_vm(alice, state=state)
    assert not monitor.apply_domain_state(vm.node, vm.domain_name, hypervisor.PowerState.RUNNING)


def test_an_unreachable_node_makes_its_vms_unknown_never_stopped(alice, pushes):
    from vms import actions

    vm = make_vm(alice)
    monitor.apply_node_status(vm.node, False, "connection refused")
    vm.refresh_from_db()
    vm.node.refresh_from_db()
    assert (vm.state, vm.node.status) == (VMState.UNKNOWN, NodeStatus.UNREACHABLE)
    assert vm.node.last_error == "connection refused"
    with pytest.raises(actions.ActionRefused, match="unreachable"):
        actions.request(vm, alice, OperationKind.REBOOT)
    monitor.apply_node_status(vm.node, True, "")
    vm.node.refresh_from_db()
    assert vm.node.status == NodeStatus.ONLINE
    monitor.apply_domain_state(vm.node, vm.domain_name, hypervisor.PowerState.RUNNING)
    vm.refresh_from_db()
    assert vm.state == VMState.RUNNING


def live_messages(cookie: str, vms_to_change=(), origin="http://127.0.0.1:8000"):
    """Connect to the live websocket, publish changes of `vms_to_change`, and collect what arrives."""

    async def session():
        communicator = websocket("/ws/live/", cookie, origin)
        connected, _ = await communicator.connect(timeout=5)
        received = []
        if connected:
            for vm in vms_to_change:
                await sync_to_async(live.publish_vm_changed)(vm)  # as a sync caller in this loop would
            while not await communicator.receive_nothing(timeout=1):
                message = await communicator.receive_output()
                if message["type"] == "websocket.close":
                    connected = False
                    break
                received.append(message.get("text"))
            await communicator.disconnect()
        return connected, received

    return run_off_loop(session())


@pytest.mark.django_db(transaction=True)
def test_the_owner_hears_of_their_vm_and_not_of_others(alice, bob, alice_vm):
    bobs_vm = make_vm(bob)
    connected, received = live_messages(session_cookie_for(alice), [alice_vm, bobs_vm])
    assert connected
    assert len(received) == 1 and str(alice_vm.uuid) in received[0]


@pytest.mark.django_db(transaction=True)
def test_staff_hear_of_every_vm(staff, alice_vm):
    connected, received = live_messages(session_cookie_for(staff), [alice_vm])
    assert connected and str(alice_vm.uuid) in received[0]


@pytest.mark.django_db(transaction=True)
def test_anonymous_gets_no_live_updates(alice_vm):
    connected, received = live_messages("", [alice_vm])
    assert not connected and received == []


@pytest.mark.django_db(transaction=True)
def test_the_live_websocket_refuses_a_foreign_origin(alice, alice_vm):
    connected, _ = live_messages(session_cookie_for(alice), [alice_vm], origin="http://evil.example")
    assert not connected


def usage_messages(cookie: str, request: dict, node_id: int):
    """Ask the live websocket for usage news, store a reading of `node_id`, and collect what arrives."""

    async def session():
        communicator = websocket("/ws/live/", cookie, "http://127.0.0.1:8000")
        connected, _ = await communicator.connect(timeout=5)
        assert connected
        await communicator.send_json_to({"usage": request})
        received = []
        if await communicator.receive_nothing(timeout=0.5):  # no refusal: it has joined
            await sync_to_async(live.publish_usage_sampled)(node_id)
        while not await communicator.receive_nothing(timeout=1):
            received.append(await communicator.receive_json_from())
        await communicator.disconnect()
        return received

    return run_off_loop(session())


@pytest.mark.django_db(transaction=True)
def test_a_page_hears_of_new_readings_of_its_own_vm(alice, alice_vm):
    received = usage_messages(session_cookie_for(alice), {"vm": str(alice_vm.uuid)}, alice_vm.node_id)
    assert received == [{"usage": alice_vm.node_id}]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("request_kind", ["their vm", "a node", "garbage"])
def test_usage_news_is_refused_for_what_the_user_may_not_see(alice, bob, alice_vm, request_kind):
    request = {"their vm": {"vm": str(alice_vm.uuid)}, "a node": {"node": alice_vm.node_id}}.get(
        request_kind, {"vm": "not-a-uuid"}
    )
    received = usage_messages(session_cookie_for(bob), request, alice_vm.node_id)
    assert received == [{"error": "no such VM or node"}]


@pytest.mark.django_db(transaction=True)
def test_staff_follow_a_nodes_totals(staff, alice_vm):
    received = usage_messages(session_cookie_for(staff), {"node": alice_vm.node_id}, alice_vm.node_id)
    assert received == [{"usage": alice_vm.node_id}]
