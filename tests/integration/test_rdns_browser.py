"""In Chromium: a customer saves a PTR on the VM page, and `dig -x` against a real PowerDNS answers it
at once. The page's reverse DNS and traffic parts are photographed (KVMPANEL_SHOTS, when set).

Self-contained: Django's live server in this process, the rDNS tasks run in it (tests/powerdns.py),
no libvirt and no guest.
"""

import datetime as dt
import os
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import transaction

from network.models import Pool
from nodes.choices import NetworkMode
from vms import networking, traffic

from ..factories import make_node, make_plan, make_user, make_vm
from .conftest import CHROMIUM_ARGS

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.django_db(transaction=True)]
GIB = 1024**3
SHOTS = os.environ.get("KVMPANEL_SHOTS", "")


@pytest.fixture
def browser_page(playwright_session):
    """A browser of its own, from the session's Playwright (a second sync Playwright in the same
    thread refuses to start once the session's runs)."""
    browser = playwright_session.chromium.launch(
        executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS
    )
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    yield context
    browser.close()


def signed_in(context, client, user, live_server):
    client.force_login(user)
    cookie = client.cookies[django_settings.SESSION_COOKIE_NAME]
    context.add_cookies([{"name": cookie.key, "value": cookie.value, "url": live_server.url}])
    return context.new_page()


def shoot(page, selector: str, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.locator(selector).screenshot(path=str(Path(SHOTS) / name))


def test_a_ptr_saved_in_the_browser_is_answered_by_dig_at_once(
    powerdns, live_server, client, browser_page, settings
):
    settings.KVMPANEL_SERVE_STATIC = True
    node = make_node(network_mode=NetworkMode.BRIDGED, bridge="br0")
    pool = Pool.objects.create(name="public", prefix="198.51.100.0/24", gateway="198.51.100.1")
    pool.nodes.add(node)
    six = Pool.objects.create(name="public6", prefix="2001:db8:16::/48")
    six.nodes.add(node)
    alice = make_user("alice", email="alice@example.net")
    plan = make_plan(name="Standard", traffic_gib=1000, inbound_mbps=1000, outbound_mbps=200)
    vm = make_vm(alice, node=node, hostname="mail", plan=plan)
    with transaction.atomic():  # as the create does; the defaults are published when it commits
        addresses = networking.allocate_for_new_vm(vm)
    four = next(a for a in addresses if a.family == 4)
    now = dt.datetime.now(dt.UTC)
    traffic.record(now, {vm.pk: (0, 0)})
    traffic.record(now, {vm.pk: (412 * GIB, 311 * GIB)})

    page = signed_in(browser_page, client, alice, live_server)
    page.goto(f"{live_server.url}{vm.get_absolute_url()}")
    row = page.locator(f'[data-rdns-address="{four.address}"]')
    assert row.locator('[data-rdns-state="published"]').is_visible()
    shoot(page, "#rdns", "rdns-published.png")
    shoot(page, "#traffic", "traffic.png")

    row.locator('input[name="ptr"]').fill("mail.example.com")
    started = time.monotonic()
    row.locator('button[type="submit"]').click()
    page.wait_for_load_state()
    answer = powerdns.dig(four.address)
    took = time.monotonic() - started
    assert answer == "mail.example.com."
    print(f"saved in the browser to answered by dig: {took:.2f} s")
    assert page.locator(".alert", has_text="set to mail.example.com").is_visible()
    shoot(page, "#rdns", "rdns-saved.png")

    powerdns.stop()  # the DNS server goes away: the next change waits, and the page says so
    row = page.locator(f'[data-rdns-address="{four.address}"]')
    row.locator('input[name="ptr"]').fill("smtp.example.com")
    row.locator('button[type="submit"]').click()
    page.wait_for_load_state()
    assert page.locator(f'[data-rdns-address="{four.address}"] [data-rdns-state="waiting"]').is_visible()
    shoot(page, "#rdns", "rdns-waiting.png")
    powerdns.start()
    from network import rdns

    assert rdns.sweep()["synced"] == 1
    assert powerdns.dig(four.address) == "smtp.example.com."

    traffic.record(now, {vm.pk: (700 * GIB, 400 * GIB)})  # over the allowance: throttled
    page.goto(f"{live_server.url}{vm.get_absolute_url()}")
    assert page.locator("#traffic-throttled").is_visible()
    shoot(page, "#traffic", "traffic-throttled.png")
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / "vm-page.png"), full_page=True)


def test_staff_see_the_top_traffic_users_in_the_backoffice(live_server, client, browser_page, settings):
    settings.KVMPANEL_SERVE_STATIC = True
    node = make_node(name="node-a", network_mode=NetworkMode.BRIDGED, bridge="br0")
    pool = Pool.objects.create(name="public", prefix="198.51.100.0/24", gateway="198.51.100.1")
    pool.nodes.add(node)
    alice, bob = make_user("alice"), make_user("bob")
    plan = make_plan(name="Standard", traffic_gib=100, ipv6_networks=0)
    vms = [
        make_vm(owner, node=node, hostname=name, plan=plan)
        for owner, name in ((alice, "big"), (bob, "small"))
    ]
    with transaction.atomic():
        networking.allocate_for_new_vm(vms[0])
    now = dt.datetime.now(dt.UTC)
    traffic.record(now, {vm.pk: (0, 0) for vm in vms})
    traffic.record(now, {vms[0].pk: (80 * GIB, 30 * GIB), vms[1].pk: (3 * GIB, GIB)})  # big: throttled
    staff = make_user("operator", is_staff=True, is_superuser=True)

    page = signed_in(browser_page, client, staff, live_server)
    page.goto(f"{live_server.url}/backoffice/")
    page.locator("#traffic-top").click()
    node_table = page.locator('[data-traffic-top="node-a"]')
    assert node_table.locator("tbody tr").nth(0).inner_text().startswith("big")
    assert node_table.locator("tbody tr").nth(1).inner_text().startswith("small")
    assert "since" in node_table.locator("tbody tr").nth(0).inner_text()
    assert page.locator('[data-traffic-top="public"] tbody tr').count() == 1
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / "traffic-top.png"), full_page=True)
