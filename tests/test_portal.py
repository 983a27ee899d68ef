"""The customer portal's pages as a customer reads them: the VM page's action bar (always in the same
places, Reboot and Force off asking first, Rescue reachable), no node names for customers, the VM
list's search and state filter, the live block's version (refreshes that change nothing swap
nothing), folded operations, and the forms' small kindnesses."""

import re

import pytest
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.models import SSHKey
from vms import views
from vms.choices import OperationKind, OperationStatus, VMState
from vms.models import Operation

from .factories import make_image, make_node, make_vm
from .test_ssh_keys import ed25519_key

pytestmark = pytest.mark.django_db

ACTIONS = ["Console", "Serial", "Start", "Shut down", "Reboot", "Force off", "Password", "Rescue", "Resize",
           "Reinstall", "Delete"]  # fmt: skip


def action_bar(html: str) -> list[tuple[str, bool]]:
    """(label, usable) of each control in the VM page's action bar, in order."""
    bar = html.split('id="vm-actions"', 1)[1].split('id="vm-waiting"', 1)[0]
    controls = re.findall(r"<(a|button)\b([^>]*)>(.*?)</\1>", bar, re.S)
    found = []
    for tag, attributes, inner in controls:
        label = " ".join(re.sub(r"<[^>]+>", " ", inner).split())
        usable = ("disabled" not in attributes) and (tag == "button" or "href=" in attributes)
        found.append((label, usable))
    return found


def page_of(client, vm) -> str:
    return client.get(reverse("vms:detail", args=[vm.uuid])).content.decode()


@pytest.mark.parametrize(
    ("state", "usable"),
    [
        (VMState.RUNNING, {"Console", "Serial", "Shut down", "Reboot", "Force off", "Password", "Rescue",
                           "Reinstall", "Delete"}),
        (VMState.STOPPED, {"Start", "Rescue", "Resize", "Reinstall", "Delete"}),
    ],
)  # fmt: skip
def test_the_action_bar_shows_every_action_in_the_same_place_whatever_the_state(client, alice, state, usable):
    vm = make_vm(alice, state=state)
    client.force_login(alice)
    bar = action_bar(page_of(client, vm))
    assert [label for label, _ in bar] == ACTIONS
    assert {label for label, ok in bar if ok} == usable


def test_while_an_operation_runs_no_action_can_be_clicked(client, alice, alice_vm):
    Operation.objects.create(vm=alice_vm, kind=OperationKind.REBOOT, status=OperationStatus.RUNNING)
    client.force_login(alice)
    html = page_of(client, alice_vm)
    assert [label for label, ok in action_bar(html) if ok] == []
    assert "Waiting for reboot to finish" in html


def test_reboot_and_force_off_ask_first_and_name_the_vm(client, alice, alice_vm):
    client.force_login(alice)
    for page in (
        page_of(client, alice_vm),
        client.get(reverse("vms:serial", args=[alice_vm.uuid])).content.decode(),
    ):
        forms = re.findall(r'<form method="post" action="([^"]+)"([^>]*)>', page)
        asking = {action.rsplit("/", 2)[-2] for action, attributes in forms if "data-confirm=" in attributes}
        assert asking == {"reboot", "force_off"}
        assert f"Force off {alice_vm.name}? This cuts the power" in page
        assert 'id="confirm-modal"' in page and "js/confirm.js" in page


def test_rescue_is_reachable_and_says_plainly_when_none_is_offered(client, alice, alice_vm, enqueued):
    client.force_login(alice)
    assert ("Rescue", True) in action_bar(page_of(client, alice_vm))
    rescue_url = reverse("vms:rescue", args=[alice_vm.uuid])
    page = client.get(rescue_url).content.decode()
    assert "No rescue system is offered here" in page and "This field is required" not in page
    assert '<form method="post" novalidate>' not in page
    client.post(rescue_url, {"password": "x" * 12})
    assert enqueued == []
    make_image(rescue=True, on=[alice_vm.node])
    assert 'name="image"' in client.get(rescue_url).content.decode()


def test_customers_never_see_node_names_and_staff_do(client, alice, staff):
    vm = make_vm(alice, node=make_node(name="hv-secret-7"))
    client.force_login(alice)
    assert "hv-secret-7" not in page_of(client, vm)
    assert "hv-secret-7" not in client.get(reverse("vms:list")).content.decode()
    client.force_login(staff)
    assert "hv-secret-7" in page_of(client, vm)
    assert "hv-secret-7" in client.get(reverse("vms:list")).content.decode()


def test_staff_see_that_a_suspended_customers_vm_is_being_stopped(client, alice, staff, alice_vm, enqueued):
    from accounts import suspension

    suspension.suspend(alice, by=staff, reason="unpaid")
    client.force_login(staff)
    page = page_of(client, alice_vm)
    assert "Owner suspended" in page and "This VM is being stopped" in page
    assert "Shutting down" in page  # the shutdown the suspension asked for
    assert "suspended" in client.get(reverse("vms:list")).content.decode()


# The VM list: search and state filter -------------------------------------------------------------


def listed(client, **query) -> list[str]:
    html = client.get(reverse("vms:list"), query).content.decode()
    return re.findall(r'<tr data-vm="[^"]+">\s*<td><a [^>]*>([^<]+)</a>', html)


def test_the_list_searches_hostnames_and_names_and_filters_by_state(client, alice, bob):
    make_vm(alice, hostname="web-1", state=VMState.RUNNING)
    make_vm(alice, hostname="web-2", state=VMState.STOPPED)
    make_vm(alice, hostname="db-1", display_name="Database", state=VMState.RUNNING)
    make_vm(bob, hostname="web-bob")
    client.force_login(alice)
    assert sorted(listed(client, q="WEB")) == ["web-1", "web-2"]  # never bob's
    assert listed(client, q="datab") == ["Database"]
    assert sorted(listed(client, state="running")) == ["Database", "web-1"]
    assert listed(client, q="web", state="stopped") == ["web-2"]
    assert "No VM matches this search" in client.get(reverse("vms:list"), {"q": "nothing"}).content.decode()
    assert len(listed(client, state="not-a-state")) == 3  # nonsense filters nothing out, and fails nothing


def test_the_lists_pages_keep_the_search(client, alice):
    for n in range(views.PAGE_SIZE + 1):
        make_vm(alice, hostname=f"web-{n}")
    client.force_login(alice)
    html = client.get(reverse("vms:list"), {"q": "web", "state": "running"}).content.decode()
    assert 'href="?q=web&amp;state=running&amp;page=2"' in html


def test_searching_costs_the_same_queries_for_ten_vms_as_for_one(client, alice):
    client.force_login(alice)
    make_vm(alice, hostname="web-0")

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            client.get(reverse("vms:list"), {"q": "web", "state": "running"})
        return len(captured)

    queries()  # the session's first activity is written once
    one = queries()
    node = make_node()
    for n in range(1, 10):
        make_vm(alice, node=node, hostname=f"web-{n}")
    assert queries() == one


# The live block: a refresh that changes nothing swaps nothing -------------------------------------


def live_version(client, vm) -> str:
    html = client.get(reverse("vms:live", args=[vm.uuid]), HTTP_HX_REQUEST="true").content.decode()
    return re.search(r'data-live-version="([0-9a-f]+)"', html).group(1)


def test_the_live_block_has_a_version_that_changes_only_with_what_it_shows(client, alice, alice_vm):
    client.force_login(alice)
    first = live_version(client, alice_vm)
    assert live_version(client, alice_vm) == first  # csrf tokens differ per render; the version does not
    assert f'data-live-version="{first}"' in page_of(client, alice_vm)  # the page's first render too
    operation = Operation.objects.create(vm=alice_vm, kind=OperationKind.REBOOT)
    queued = live_version(client, alice_vm)
    assert queued != first
    operation.finish(OperationStatus.SUCCEEDED)
    assert live_version(client, alice_vm) not in (first, queued)


def test_the_list_has_a_version_too(client, alice, alice_vm):
    client.force_login(alice)

    def version():
        html = client.get(reverse("vms:list"), HTTP_HX_REQUEST="true").content.decode()
        return re.search(r'data-live-version="([0-9a-f]+)"', html).group(1)

    first = version()
    assert version() == first
    alice_vm.set_state(VMState.STOPPED)
    assert version() != first


# Operations fold ------------------------------------------------------------------------------


def test_the_vm_page_shows_the_latest_operations_and_folds_the_rest_and_long_errors(client, alice, alice_vm):
    for _ in range(7):
        Operation.objects.create(vm=alice_vm, kind=OperationKind.START, status=OperationStatus.SUCCEEDED)
    Operation.objects.create(
        vm=alice_vm,
        kind=OperationKind.REBOOT,
        status=OperationStatus.FAILED,
        error="libvirt says: " + "x" * 300,
    )
    client.force_login(alice)
    html = page_of(client, alice_vm)
    shown, older = html.split('id="older-operations"', 1)
    assert shown.count("<tr data-kind=") == views.SHOWN_OPERATIONS and older.count("<tr data-kind=") == 3
    assert "Show all (8)" in html
    assert '<details class="small text-danger operation-error"><summary>libvirt says: xxx' in html
    # However long the history, the usage graphs come right after the first row (details, operations,
    # snapshots), before the backups part.
    assert html.index('id="older-operations"') < html.index('id="usage"') < html.index('id="vm-backups"')


# Forms ----------------------------------------------------------------------------------------


def test_with_one_ssh_key_it_is_ticked_on_create_and_with_two_none_is(client, alice):
    first = SSHKey.objects.create(user=alice, name="laptop", public_key=ed25519_key(), fingerprint="SHA256:a")
    client.force_login(alice)
    html = client.get(reverse("vms:create")).content.decode()
    assert re.search(rf'<input type="checkbox" name="ssh_keys" value="{first.pk}"[^>]* checked', html)
    SSHKey.objects.create(user=alice, name="desktop", public_key=ed25519_key(), fingerprint="SHA256:b")
    assert " checked" not in client.get(reverse("vms:create")).content.decode().split('name="ssh_keys"', 1)[1]


def test_the_reinstall_confirmation_names_the_hostname_as_delete_does(client, alice, alice_vm):
    client.force_login(alice)
    html = client.get(reverse("vms:reinstall", args=[alice_vm.uuid])).content.decode()
    assert f"Type {alice_vm.hostname} to confirm" in html


def test_a_weak_sign_up_password_is_reported_under_the_password_field(client):
    weak = "password"
    response = client.post(
        reverse("signup"),
        {"username": "carol", "email": "carol@example.com", "password1": weak, "password2": weak},
    )
    form = response.context["form"]
    assert "This password is too common." in form.errors["password1"]
    assert "password2" not in form.errors


def test_the_confirmation_link_says_to_sign_in_and_fills_in_the_name(client):
    client.post(
        reverse("signup"),
        {
            "username": "carol",
            "email": "carol@example.com",
            "password1": "n3w-Passw0rd!x",
            "password2": "n3w-Passw0rd!x",
        },
    )
    link = re.search(r"http://testserver(/\S+)", mail.outbox[0].body).group(1)
    response = client.get(link, follow=True)
    html = response.content.decode()
    assert response.redirect_chain[-1][0] == f"{reverse('login')}?username=carol"
    assert "is confirmed. Sign in below to start." in html and 'value="carol"' in html


def test_recovery_codes_have_copy_and_download_buttons(client, alice, sign_in_confirmed):
    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from accounts import twofactor

    alice.two_factor_enabled = True
    alice.save()
    sign_in_confirmed(alice)
    device = TOTPDevice.objects.create(user=alice, name=twofactor.AUTHENTICATOR, confirmed=True)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    html = client.post(reverse("recovery_codes_new")).content.decode()
    assert 'data-copy="#recovery-codes"' in html and 'data-download="#recovery-codes"' in html


def test_dates_read_as_iso_everywhere(client, alice, alice_vm, sign_in_confirmed):
    from api import tokens

    Operation.objects.create(vm=alice_vm, kind=OperationKind.START, status=OperationStatus.SUCCEEDED)
    tokens.create(alice, name="ci", scope="read")
    sign_in_confirmed(alice)
    iso = re.compile(r"\b20\d\d-\d\d-\d\d \d\d:\d\d\b")
    for url in (reverse("vms:detail", args=[alice_vm.uuid]), reverse("vms:list"), reverse("activity")):
        html = client.get(url).content.decode()
        assert iso.search(html), url
        assert not re.search(r"\b(a\.m\.|p\.m\.|ago<|\w{3}\. \d+, 20\d\d)", html), url
    assert re.search(r"Created 20\d\d-\d\d-\d\d", client.get(reverse("api_tokens")).content.decode())
