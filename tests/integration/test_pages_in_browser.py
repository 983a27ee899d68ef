"""Every page in Chromium under the Content-Security-Policy, and the portal's behaviour that only a
browser shows: confirmations, live refreshes that never swap away a button being clicked, the page
that says why it was signed out, the backoffice dashboard. No guest boots here: pages read the
database, and the VMs' nodes are never asked."""

import datetime as dt
import re

import pytest
from django.contrib.sessions.models import Session
from django.urls import reverse

from accounts import suspension
from accounts.models import AuditEntry, SSHKey
from images.models import Image
from nodes.choices import NodeStatus
from vms import live
from vms.choices import OperationKind, OperationStatus, VMState
from vms.models import Operation

from ..factories import make_image, make_node, make_plan, make_user, make_vm
from ..test_ssh_keys import ed25519_key
from .conftest import OUTPUT, settled, wait_for_js

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CSP_WATCH = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`);
});
"""


@pytest.fixture
def world(transactional_db, monkeypatch):
    """A customer with VMs in several states, their history, and staff; nothing is ever enqueued."""
    from vms import actions

    monkeypatch.setattr(actions, "enqueue", lambda operation: None)
    alice = make_user("alice", email="alice@example.com")
    staff = make_user("staff", is_staff=True, is_superuser=True)
    node = make_node(name="hv-east-1", cpus=16, memory_mib=65536, storage_capacity_bytes=2 * 1024**4)
    make_node(name="hv-west-2", status=NodeStatus.UNREACHABLE)
    image = make_image(name="Debian 12 (bookworm)", on=[node])
    make_image(name="Rescue (Debian 12)", rescue=True, on=[node])
    make_image(name="Tools CD", format=Image.Format.ISO, on=[node])
    plan = make_plan(name="Small", vcpus=1, memory_mib=1024, disk_gb=10)
    running = make_vm(alice, node=node, plan=plan, image=image, hostname="web-1", display_name="Shop")
    stopped = make_vm(alice, node=node, plan=plan, image=image, hostname="db-1", state=VMState.STOPPED)
    for kind in (OperationKind.CREATE, OperationKind.REBOOT, OperationKind.SHUTDOWN, OperationKind.START) * 2:
        Operation.objects.create(vm=running, kind=kind, status=OperationStatus.SUCCEEDED)
    Operation.objects.create(
        vm=running,
        kind=OperationKind.RESET_PASSWORD,
        status=OperationStatus.FAILED,
        error="the VM's guest agent did not answer, so the password could not be set: the guest must run "
        "qemu-guest-agent (the panel's images do once booted); wait until it has booted and try again",
    )
    SSHKey.objects.create(user=alice, name="laptop", public_key=ed25519_key(), fingerprint="SHA256:x")
    # Long values, as real ones are, for the lists' widths.
    longest = make_user(
        "customer-with-a-rather-long-name", email="billing.department@some-long-company-name.example"
    )
    make_vm(
        longest,
        node=node,
        plan=plan,
        image=image,
        hostname="app-server-" + "x" * 40 + ".eu-central.example.com",
        state=VMState.STOPPED,
    )
    long_url = "https://cloud-images.example.com/noble/current/noble-server-cloudimg-amd64-extras.img"
    make_image(name="Ubuntu 24.04 LTS (noble) minimal cloud image, with extras", source_url=long_url)
    AuditEntry.objects.create(actor=staff, actor_name="staff", action="vm.reboot", owner=alice,
                              target_type="vms.virtualmachine", target_id=str(running.uuid),
                              target_label="Shop", address="203.0.113.10", outcome="requested")  # fmt: skip
    node.stray_domains = [
        {"name": f"test-stray-{n:03d}", "state": "stopped", "panel_metadata": n % 2 == 0} for n in range(60)
    ]
    node.save()
    return {"alice": alice, "staff": staff, "running": running, "stopped": stopped, "node": node}


def visit(page, url: str, name: str | None = None) -> list[str]:
    """Open `url`, let it settle, and return the CSP violations it caused (a screenshot if `name`)."""
    page.goto(url)
    page.wait_for_load_state("load")
    page.wait_for_timeout(400)  # late scripts (websockets, graphs) run their first steps
    if name:
        page.screenshot(path=str(OUTPUT / f"after-{name}.png"), full_page=True)
    return page.evaluate("window.__csp")


def customer_pages(world) -> dict[str, str]:
    running, stopped = world["running"].uuid, world["stopped"].uuid
    return {
        "vm-list": "/vms/",
        "vm-list-search": "/vms/?q=web&state=running",
        "vm-create": "/vms/new/",
        "vm-detail": f"/vms/{running}/",
        "vm-detail-stopped": f"/vms/{stopped}/",
        "vm-console": f"/vms/{running}/console/",
        "vm-serial": f"/vms/{running}/serial/",
        "vm-reinstall": f"/vms/{running}/reinstall/",
        "vm-rescue": f"/vms/{running}/rescue/",
        "vm-password": f"/vms/{running}/password/",
        "vm-resize": f"/vms/{stopped}/resize/",
        "vm-delete": f"/vms/{running}/delete/",
        "profile": "/accounts/profile/",
        "ssh-keys": "/accounts/keys/",
        "activity": "/accounts/activity/",
        "api-tokens": "/accounts/tokens/",
        "password-change": "/accounts/password/",
        "two-factor-setup": "/accounts/2fa/setup/",
        "api-docs": "/api/v1/docs/",
    }


def backoffice_pages(world) -> dict[str, str]:
    from django.contrib import admin

    pages = {"backoffice": "/backoffice/", "node": f"/backoffice/nodes/node/{world['node'].pk}/change/"}
    for model in admin.site._registry:
        info = model._meta.app_label, model._meta.model_name
        pages[f"bo-{info[1]}-list"] = reverse(f"admin:{info[0]}_{info[1]}_changelist")
        first = model._default_manager.first()
        if first is not None:
            pages[f"bo-{info[1]}-change"] = reverse(f"admin:{info[0]}_{info[1]}_change", args=[first.pk])
    pages["bo-image-add"] = reverse("admin:images_image_add")
    pages["bo-node-add"] = reverse("admin:nodes_node_add")
    return pages


def test_every_page_loads_under_the_csp_with_no_violation(page, sign_in, panel_server, world):
    page.add_init_script(CSP_WATCH)
    console = []
    page.on("console", lambda message: console.append(message.text))
    violations = {}
    for name, path in {"login": "/accounts/login/", "signup": "/accounts/signup/",
                       "password-reset": "/accounts/password/reset/"}.items():  # fmt: skip
        violations[name] = visit(page, panel_server + path, name)
    sign_in(page, world["alice"])
    for name, path in customer_pages(world).items():
        violations[name] = visit(page, panel_server + path, name)
    page.goto(f"{panel_server}/api/v1/docs/")
    page.wait_for_selector(".swagger-ui .info", timeout=15_000)  # Swagger UI really started
    page.context.clear_cookies()
    sign_in(page, world["staff"])
    for name, path in backoffice_pages(world).items():
        violations[name] = visit(page, panel_server + path, name if not name.startswith("bo-") else None)
    assert len(violations) > 45
    assert {name: found for name, found in violations.items() if found} == {}
    assert not [text for text in console if "Content Security Policy" in text]


def test_the_console_page_may_reach_the_bridge_and_nothing_else(page, sign_in, panel_server, world):
    sign_in(page, world["alice"])
    response = page.goto(f"{panel_server}/vms/{world['running'].uuid}/console/")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "unsafe-inline" not in policy.split("style-src")[0]
    assert re.search(r"connect-src 'self' ws://127\.0\.0\.1:\d+/", policy)
    # The page's module (static/js/console.js, importing noVNC) runs and reaches for the bridge (which
    # this test does not start): the attempt fails on the network, not on the policy.
    page.add_init_script(CSP_WATCH)
    page.reload()
    page.wait_for_selector("#console-status[data-status='disconnected']", timeout=10_000)
    assert page.evaluate("window.__csp") == []
    assert (
        "connect-src 'self';" in page.request.get(f"{panel_server}/vms/").headers["content-security-policy"]
    )


def test_a_live_refresh_that_changes_nothing_swaps_nothing(page, sign_in, panel_server, world):
    vm = world["running"]
    sign_in(page, world["alice"])
    page.goto(f"{panel_server}/vms/{vm.uuid}/")
    settled(page)
    serial = page.get_by_role("link", name="Serial")
    serial.evaluate("link => { link.dataset.marker = 'still me' }")
    for _ in range(3):  # pushes for this VM that change nothing it shows
        live.publish_vm_changed(vm)
    page.wait_for_timeout(800)
    settled(page)
    assert serial.evaluate("link => link.dataset.marker") == "still me"  # the very same element
    vm.set_state(VMState.STOPPED)
    live.publish_vm_changed(vm)
    page.wait_for_selector("#vm-state[data-state='stopped']", timeout=5_000)
    assert page.get_by_role("button", name="Start").is_enabled()
    assert page.locator("a.disabled", has_text="Serial").count() == 1  # in its place, not a link now


def test_force_off_and_reboot_ask_first(page, sign_in, panel_server, world):
    vm = world["running"]
    sign_in(page, world["alice"])
    page.goto(f"{panel_server}/vms/{vm.uuid}/")
    settled(page)
    page.get_by_role("button", name="Force off").click()
    dialog = page.locator("#confirm-modal")
    dialog.wait_for(state="visible")
    assert f"Force off {vm.name}? This cuts the power at once" in dialog.inner_text()
    page.wait_for_selector("#confirm-modal.show")
    page.wait_for_timeout(400)  # the dialog's fade-in
    page.screenshot(path=str(OUTPUT / "after-vm-force-off-confirm.png"))
    dialog.get_by_role("button", name="Cancel").click()
    dialog.wait_for(state="hidden")
    assert not vm.operations.filter(kind=OperationKind.FORCE_OFF).exists()
    page.get_by_role("button", name="Reboot").click()
    dialog.wait_for(state="visible")
    dialog.get_by_role("button", name="Reboot").click()
    page.wait_for_selector("#vm-state[data-busy='reboot']", timeout=10_000)
    assert vm.operations.filter(kind=OperationKind.REBOOT, status=OperationStatus.QUEUED).exists()
    # On the serial console page too.
    vm.operations.filter(status=OperationStatus.QUEUED).update(status=OperationStatus.SUCCEEDED)
    page.goto(f"{panel_server}/vms/{vm.uuid}/serial/")
    page.get_by_role("button", name="Force off").click()
    dialog.wait_for(state="visible")
    dialog.get_by_role("button", name="Cancel").click()
    assert not vm.operations.filter(kind=OperationKind.FORCE_OFF).exists()


def test_a_suspended_customers_open_page_says_why_it_signed_them_out(page, sign_in, panel_server, world):
    sign_in(page, world["alice"])
    page.goto(f"{panel_server}/vms/{world['running'].uuid}/")
    settled(page)
    suspension.suspend(world["alice"], by=world["staff"], reason="payment overdue")
    page.wait_for_selector("#signed-out", timeout=10_000)
    assert "Your account was suspended: payment overdue" in page.inner_text("#signed-out")
    page.screenshot(path=str(OUTPUT / "after-signed-out-suspended.png"))
    page.get_by_role("link", name="Sign in").click()
    page.wait_for_url("**/accounts/login/**")


def test_signing_out_elsewhere_leaves_this_page_but_ends_it_when_it_is_this_session(
    page, sign_in, panel_server, world
):
    sign_in(page, world["alice"])
    page.goto(f"{panel_server}/vms/")
    settled(page)
    Session.objects.all().delete()  # this browser's session ended without a word (cleared by an operator)
    from accounts import sessions

    sessions.tell_sockets(world["alice"].pk, reason="Your session has ended: please sign in again.")
    page.wait_for_selector("#signed-out", timeout=10_000)


def test_the_backoffice_dashboard_follows_vms_live(page, sign_in, panel_server, world):
    sign_in(page, world["staff"])
    page.goto(f"{panel_server}/backoffice/")
    settled(page)
    assert "1 running · 2 stopped" in page.inner_text("#dashboard")
    page.set_viewport_size({"width": 1366, "height": 900})
    page.screenshot(path=str(OUTPUT / "after-backoffice-dashboard.png"), full_page=True)
    vm = world["stopped"]
    vm.set_state(VMState.RUNNING)
    live.publish_vm_changed(vm)
    wait_for_js(page, "document.querySelector('#dashboard').innerText.includes('2 running')", timeout=5_000)


# The page's width, and the list's table against the room its box gives it (the box scrolls sideways).
WIDTHS = """() => {
  const box = document.querySelector('#changelist .results');
  return { page: document.documentElement.scrollWidth,
           table: box ? box.scrollWidth : 0, room: box ? box.clientWidth : 0 };
}"""


def test_backoffice_lists_fit_a_1366_pixel_screen(page, sign_in, panel_server, world):
    page.set_viewport_size({"width": 1366, "height": 800})
    sign_in(page, world["staff"])
    too_wide = {}
    for name, path in backoffice_pages(world).items():
        if name.endswith("-list"):
            page.goto(panel_server + path)
            widths = page.evaluate(WIDTHS)
            if widths["page"] > 1366 or widths["table"] > widths["room"]:
                too_wide[name] = widths
            if name in ("bo-virtualmachine-list", "bo-auditentry-list", "bo-user-list", "bo-image-list"):
                page.screenshot(path=str(OUTPUT / f"after-{name}-1366.png"))
    assert too_wide == {}


def test_usage_graphs_say_when_day_and_month_begin_and_show_no_stale_values(
    page, sign_in, panel_server, world
):
    from django.utils import timezone

    from ..test_usage import raw_samples

    now = timezone.now()
    running, stopped = world["running"], world["stopped"]
    raw_samples(running, now - dt.timedelta(minutes=2), 120, step=2, cpu_percent=12.5, memory_bytes=2**29)
    raw_samples(stopped, now - dt.timedelta(minutes=20), 60, step=2, cpu_percent=80.0, memory_bytes=2**29)
    sign_in(page, world["alice"])
    legend = "document.querySelector('[data-chart=cpu] .u-series:nth-child(2) .u-value').textContent"

    page.goto(f"{panel_server}/vms/{running.uuid}/")
    page.wait_for_selector("[data-chart='cpu'] canvas")
    wait_for_js(page, f"{legend}.endsWith('%')")  # the newest reading: current
    page.get_by_role("button", name="Day").click()
    page.wait_for_selector("[data-usage-collecting]:not([hidden])")
    assert re.fullmatch(
        r"Collecting: the first point of this range in (about a minute|\d+ minutes)\.",
        page.inner_text("[data-usage-collecting]"),
    )
    page.locator("#usage").screenshot(path=str(OUTPUT / "after-usage-day-collecting.png"))

    page.goto(f"{panel_server}/vms/{stopped.uuid}/")
    page.wait_for_selector("[data-chart='cpu'] canvas")
    page.wait_for_timeout(500)
    assert page.evaluate(legend) == "\u2013"  # a dash: its last reading is not shown as if it were now
    page.locator("#usage").screenshot(path=str(OUTPUT / "after-usage-stopped-legend.png"))
