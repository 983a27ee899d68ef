"""Suspended accounts: no sign-in, no session, VMs stopped and kept; lifting it restores sign-in only."""

import pytest
from django.urls import reverse

from accounts import suspension
from accounts.models import AuditEntry
from vms import reconcile
from vms.choices import OperationKind, VMState
from vms.models import Operation

from .factories import make_user, make_vm

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(db):
    return make_user("operator", is_staff=True, is_superuser=True)


def test_suspending_stops_running_vms_and_keeps_them(alice, operator, enqueued):
    make_vm(alice, hostname="web", state=VMState.RUNNING)
    make_vm(alice, hostname="db", state=VMState.PAUSED)
    stopped = make_vm(alice, hostname="old", state=VMState.STOPPED)

    assert suspension.suspend(alice, by=operator, reason="unpaid invoice") == 2

    alice.refresh_from_db()
    assert alice.is_suspended and not alice.is_active and alice.suspension_reason == "unpaid invoice"
    kinds = dict(Operation.objects.values_list("vm__hostname", "kind"))
    assert kinds == {"web": OperationKind.SHUTDOWN, "db": OperationKind.FORCE_OFF}
    assert not stopped.operations.exists()
    assert alice.vms.live().count() == 3  # nothing is deleted
    entry = AuditEntry.objects.get(action="account.suspend")
    assert (entry.actor, entry.owner, entry.detail) == (operator, alice, "unpaid invoice")


def test_a_suspended_user_cannot_sign_in_and_their_open_session_ends(client, alice, operator, enqueued):
    client.force_login(alice)
    assert client.get(reverse("vms:list")).status_code == 200
    suspension.suspend(alice, by=operator)
    response = client.get(reverse("vms:list"))
    assert response.status_code == 302 and response.url.startswith(reverse("login"))
    response = client.post(reverse("login"), {"username": "alice", "password": "alice-pass-123"})
    assert "This account is suspended. Please contact support." in response.content.decode()
    response = client.post(reverse("login"), {"username": "alice", "password": "wrong"})
    assert "suspended" not in response.content.decode()  # only the right password learns it


def test_lifting_the_suspension_restores_sign_in_but_starts_nothing(alice, operator, enqueued, client):
    make_vm(alice, state=VMState.STOPPED)
    suspension.suspend(alice, by=operator)
    suspension.unsuspend(alice, by=operator)
    alice.refresh_from_db()
    assert alice.is_active and not alice.is_suspended
    response = client.post(reverse("login"), {"username": "alice", "password": "alice-pass-123"})
    assert response.status_code == 302 and response.url == reverse("vms:list")
    assert not Operation.objects.exists()


def test_operators_cannot_suspend_themselves_and_staff_cannot_suspend_a_superuser(operator, enqueued):
    with pytest.raises(suspension.SuspensionRefused, match="your own"):
        suspension.suspend(operator, by=operator)
    staff_member = make_user("helpdesk", is_staff=True)
    with pytest.raises(suspension.SuspensionRefused, match="superuser"):
        suspension.suspend(operator, by=staff_member)
    operator.refresh_from_db()
    assert operator.is_active and not operator.is_suspended


def test_the_reconcile_forces_off_what_a_suspended_customer_still_runs(
    alice, operator, test_node, test_session, enqueued, monkeypatch
):
    from vms.tasks import domain_spec

    monkeypatch.setattr(reconcile, "publish_vm_changed", lambda vm: None)
    vm = make_vm(alice, node=test_node, state=VMState.STOPPED)
    suspension.suspend(alice, by=operator)  # nothing running: nothing to stop
    test_session.define_domain(domain_spec(vm))
    test_session.start(vm.domain_name)  # e.g. a create that was in flight finished afterwards

    reconcile.reconcile_node(test_node)

    operation = vm.operations.get()
    assert (operation.kind, operation.user) == (OperationKind.FORCE_OFF, None)


def test_the_backoffice_action_suspends_with_a_reason(client, alice, operator, enqueued):
    make_vm(alice, state=VMState.RUNNING)
    client.force_login(operator)
    changelist = reverse("admin:accounts_user_changelist")
    response = client.post(
        changelist,
        {"action": "suspend", "_selected_action": [alice.pk], "reason": "abuse report #12"},
        follow=True,
    )
    assert "Suspended alice; stopping 1 VM(s)." in response.content.decode()
    alice.refresh_from_db()
    assert alice.suspension_reason == "abuse report #12"
    response = client.get(changelist + "?suspended=yes")
    assert response.context["cl"].result_count == 1
