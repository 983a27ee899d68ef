"""The audit log: every change is recorded with who, what, which object, from where and how it ended."""

import pytest
from django.urls import reverse

from accounts import audit
from accounts.models import AuditEntry
from vms import actions, tasks
from vms.choices import OperationKind, OperationStatus

from .factories import make_user, make_vm
from .test_tasks import FakeTask

pytestmark = pytest.mark.django_db


def test_a_request_from_the_portal_records_who_what_and_from_where(client, alice, alice_vm, enqueued):
    client.force_login(alice)
    client.post(reverse("vms:action", args=[alice_vm.uuid, "reboot"]), REMOTE_ADDR="203.0.113.7")
    entry = AuditEntry.objects.get(action="vm.reboot")
    assert (entry.actor, entry.owner, entry.outcome, entry.address) == (
        alice,
        alice,
        "requested",
        "203.0.113.7",
    )
    assert entry.target_id == str(alice_vm.uuid) and entry.target_label == alice_vm.name


def test_a_refused_action_is_recorded_with_its_reason(client, alice, alice_vm, enqueued):
    alice_vm.state = "stopped"
    alice_vm.save()
    client.force_login(alice)
    client.post(reverse("vms:action", args=[alice_vm.uuid, "reboot"]))
    entry = AuditEntry.objects.get(action="vm.reboot")
    assert entry.outcome == "refused" and "stopped" in entry.detail


def test_the_outcome_of_the_task_is_recorded_by_the_system(alice, test_node):
    vm = make_vm(alice, node=test_node, state="stopped")
    operation = actions.request(vm, alice, OperationKind.START)
    tasks.run_operation(FakeTask(), operation.pk, tasks.WORK[OperationKind.START])  # no such domain: fails
    outcome = AuditEntry.objects.filter(action="vm.start").exclude(outcome="requested").get()
    assert (outcome.outcome, outcome.address, outcome.owner) == ("failed", None, alice)
    assert outcome.detail


def test_secrets_never_reach_the_log(client, alice, alice_vm, enqueued):
    client.force_login(alice)
    client.post(reverse("vms:reset_password", args=[alice_vm.uuid]), {"password": "a-Secret-pass-77"})
    entry = AuditEntry.objects.get(action="vm.reset_password")
    assert "a-Secret-pass-77" not in entry.detail and "$2b$" not in entry.detail


def test_sign_ins_and_wrong_passwords_are_recorded_for_the_account(client, alice):
    client.post(reverse("login"), {"username": "alice", "password": "wrong"}, REMOTE_ADDR="198.51.100.4")
    client.post(reverse("login"), {"username": "alice", "password": "alice-pass-123"})
    outcomes = list(
        AuditEntry.objects.filter(owner=alice, action="account.login").values_list("outcome", "address")
    )
    assert outcomes == [("succeeded", "127.0.0.1"), ("refused", "198.51.100.4")]


def test_owners_see_their_own_entries_only(client, alice, bob, alice_vm, enqueued):
    actions.request(alice_vm, alice, OperationKind.REBOOT)
    client.force_login(bob)
    assert alice_vm.name not in client.get(reverse("activity")).content.decode()
    client.force_login(alice)
    page = client.get(reverse("activity")).content.decode()
    assert "Reboot VM" in page and alice_vm.name in page


def test_staff_search_the_log_and_nobody_can_edit_it(client, alice, alice_vm, enqueued):
    actions.request(alice_vm, alice, OperationKind.REBOOT)
    entry = AuditEntry.objects.get()
    operator = make_user("operator", is_staff=True, is_superuser=True)
    client.force_login(operator)
    listing = client.get(reverse("admin:accounts_auditentry_changelist"), {"q": "reboot"})
    assert listing.status_code == 200 and alice_vm.name in listing.content.decode()
    assert client.get(reverse("admin:accounts_auditentry_add")).status_code == 403
    response = client.post(reverse("admin:accounts_auditentry_delete", args=[entry.pk]), {"post": "yes"})
    assert response.status_code == 403 and AuditEntry.objects.filter(pk=entry.pk).exists()


def test_backoffice_changes_are_in_the_audit_log_with_field_names_only(client, alice):
    from django.urls import reverse

    from .factories import make_plan, make_user

    operator = make_user("operator", is_staff=True, is_superuser=True)
    client.force_login(operator)
    change_url = reverse("admin:accounts_user_change", args=[alice.pk])
    form = client.get(change_url).context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None and name != "password"}
    data.update({"max_vms": 9, "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00", "groups": []})
    data.pop("date_joined", None)
    data.pop("last_login", None)
    data.pop("user_permissions", None)
    response = client.post(change_url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors

    entry = AuditEntry.objects.get(action="user.change")
    assert (entry.actor, entry.owner) == (operator, alice)  # alice sees it in her Activity
    assert "VM limit" in entry.detail

    password_url = reverse("admin:auth_user_password_change", args=[alice.pk])
    new_password = "a-new-password-4-alice"
    client.post(
        password_url, {"password1": new_password, "password2": new_password, "usable_password": "true"}
    )
    details = list(
        AuditEntry.objects.filter(owner=alice, action="user.change").values_list("detail", flat=True)
    )
    assert any("password" in detail.lower() for detail in details[:1]), details
    assert not any(new_password in detail for detail in details)

    plan = make_plan()
    client.post(reverse("admin:vms_plan_delete", args=[plan.pk]), {"post": "yes"})
    assert AuditEntry.objects.filter(action="plan.delete", actor=operator, target_label=str(plan)).exists()


# The Activity page: staff show as "Staff" with no address; words, one line per action ------------


def activity_rows(client) -> list[list[str]]:
    """The Activity table's rows as the text of their cells."""
    import re

    html = client.get(reverse("activity")).content.decode()
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)
    cell_text = lambda cell: " ".join(re.sub(r"<[^>]+>", " ", cell).split())  # noqa: E731
    return [[cell_text(cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)] for row in rows]


def test_customers_see_staff_actions_as_staff_without_name_or_address(client, alice, alice_vm, enqueued):
    from django.test import RequestFactory

    operator = make_user("ops-jane", is_staff=True)
    request = RequestFactory().post("/", REMOTE_ADDR="203.0.113.77")
    request.user = operator
    token = audit._current_request.set(request)
    try:
        actions.request(alice_vm, operator, OperationKind.REBOOT)  # staff, from the backoffice's address
    finally:
        audit._current_request.reset(token)
    client.force_login(alice)
    html = client.get(reverse("activity")).content.decode()
    assert "ops-jane" not in html and "203.0.113.77" not in html
    (row,) = [row for row in activity_rows(client) if row[1] == "Reboot VM"]
    assert row[4:] == ["Staff", "—"]


def test_an_operation_and_its_outcome_are_one_line_in_words(client, alice, alice_vm, enqueued):
    operation = actions.request(alice_vm, alice, OperationKind.REBOOT)
    operation.finish(OperationStatus.SUCCEEDED)
    operation.refresh_from_db()
    from vms.tasks import _audit_outcome

    _audit_outcome(operation)  # what the worker records when it ends
    actions.request(alice_vm, alice, OperationKind.SHUTDOWN)  # still waiting for its worker
    client.force_login(alice)
    rows = activity_rows(client)
    what = [row[1] for row in rows]
    assert what.count("Reboot VM") == 1 and "vm.reboot" not in str(rows)
    reboot = rows[what.index("Reboot VM")]
    assert reboot[3].startswith("Done") and reboot[4] == "You"
    assert rows[what.index("Shut down VM")][3] == "In progress"
