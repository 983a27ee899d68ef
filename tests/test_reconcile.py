"""The periodic reconcile on the libvirt test driver: fixes states, flags gone domains, reports strays."""

import pytest

from vms import reconcile
from vms.choices import OperationKind, OperationStatus, VMState
from vms.models import Operation
from vms.tasks import domain_spec

from .factories import make_vm

pytestmark = pytest.mark.django_db

FOREIGN_DOMAIN = (
    "<domain type='test'><name>someone-elses</name><memory>65536</memory><os><type>hvm</type></os></domain>"
)


@pytest.fixture
def pushes(monkeypatch):
    sent = []
    monkeypatch.setattr(reconcile, "publish_vm_changed", lambda vm: sent.append((vm.hostname, vm.state)))
    return sent


def defined(session, vm, running=True):
    session.define_domain(domain_spec(vm))
    if running:
        session.start(vm.domain_name)
    return vm


def state_of(vm):
    vm.refresh_from_db()
    return vm.state


def test_a_state_the_events_missed_is_fixed_and_pushed(alice, test_node, test_session, pushes):
    vm = defined(test_session, make_vm(alice, node=test_node, hostname="drifted", state=VMState.STOPPED))
    report = reconcile.reconcile_node(test_node)
    assert state_of(vm) == VMState.RUNNING
    assert report.fixed == ["drifted: stopped -> running"]
    assert pushes == [("drifted", "running")]


def test_a_vm_whose_domain_is_gone_is_flagged_missing(alice, test_node, test_session, pushes):
    vm = make_vm(alice, node=test_node, hostname="vanished", state=VMState.RUNNING)
    report = reconcile.reconcile_node(test_node)
    assert state_of(vm) == VMState.MISSING
    assert report.missing == ["vanished: running -> missing"]
    # nothing to power on or off; a backup may bring it back (a restore defines the domain again)
    assert vm.allowed_actions() == {OperationKind.DELETE, OperationKind.RESTORE}


def test_the_domain_coming_back_clears_the_flag(alice, test_node, test_session, pushes):
    vm = make_vm(alice, node=test_node, state=VMState.MISSING)
    defined(test_session, vm)
    reconcile.reconcile_node(test_node)
    assert state_of(vm) == VMState.RUNNING


def test_strays_are_reported_and_never_touched(alice, test_node, test_session, pushes):
    test_session._conn.defineXML(FOREIGN_DOMAIN)
    orphan = make_vm(alice, node=test_node, hostname="orphan")
    defined(test_session, orphan)
    orphan.delete()  # a domain of ours that no row knows any more
    report = reconcile.reconcile_node(test_node)
    assert [(s["name"], s["panel_metadata"]) for s in report.strays] == [
        ("someone-elses", False),
        (orphan.domain_name, True),
    ]
    test_node.refresh_from_db()
    assert test_node.stray_domains == report.strays and test_node.reconciled_at is not None
    assert sorted(test_session.domain_names()) == sorted(["someone-elses", orphan.domain_name])
    assert test_session.power_state(orphan.domain_name) == "running"


def test_vms_being_changed_or_owned_by_the_panel_are_left_alone(alice, test_node, test_session, pushes):
    busy = make_vm(alice, node=test_node, state=VMState.STOPPED)
    defined(test_session, busy)
    Operation.objects.create(vm=busy, kind=OperationKind.START, status=OperationStatus.RUNNING)
    provisioning = make_vm(alice, node=test_node, state=VMState.PROVISIONING)
    failed = make_vm(alice, node=test_node, state=VMState.ERROR)
    reconcile.reconcile_node(test_node)
    assert (state_of(busy), state_of(provisioning), state_of(failed)) == ("stopped", "provisioning", "error")
    assert pushes == []


def test_an_unreachable_node_is_skipped(alice, test_node, monkeypatch, pushes):
    import hypervisor

    def refuse(uri):
        raise hypervisor.NodeUnreachable("connection refused")

    monkeypatch.setattr(hypervisor, "connect", refuse)
    vm = make_vm(alice, node=test_node, state=VMState.RUNNING)
    assert reconcile.reconcile_node(test_node) is None
    assert state_of(vm) == VMState.RUNNING  # never "missing" because we could not look
