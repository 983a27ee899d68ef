"""The Firewall part of the VM page in Chromium, under the Content-Security-Policy. No guest boots:
the page reads the database, and no worker runs, so a change stays "Applying…" (the real guest's
test, test_firewall.py, sees it applied)."""

import os
from pathlib import Path

import pytest

from firewall.models import Firewall, FirewallRule
from vms.choices import OperationKind
from vms.models import NetworkInterface

from ..factories import make_image, make_node, make_plan, make_user, make_vm
from .test_pages_in_browser import CSP_WATCH

pytestmark = [pytest.mark.integration, pytest.mark.browser]
SHOTS = Path(os.environ.get("KVMPANEL_SHOTS", "/tmp/shots-fw16"))


@pytest.fixture
def vm(transactional_db):
    alice = make_user("alice")
    node = make_node(name="hv-east-1")
    plan = make_plan(name="Small", vcpus=1, memory_mib=1024, disk_gb=10, max_firewall_rules=5)
    vm = make_vm(alice, node=node, plan=plan, image=make_image(name="Debian 12", on=[node]), hostname="web-1")
    NetworkInterface.objects.create(vm=vm)
    firewall = Firewall.objects.create(vm=vm, default_policy="deny")
    rules = [
        ("tcp", 22, 22, "", "ssh"),
        ("tcp", 80, 80, "", "web"),
        ("udp", 60000, 61000, "203.0.113.0/24", "mosh from the office"),
        ("icmp", None, None, "2001:db8::/32", ""),
    ]
    for position, (protocol, start, end, source, comment) in enumerate(rules):
        FirewallRule.objects.create(firewall=firewall, position=position, protocol=protocol, port_start=start,
                                    port_end=end, source=source, comment=comment)  # fmt: skip
    return vm


def test_the_firewall_part_shows_the_rules_and_takes_a_new_one_with_no_csp_violation(
    page, sign_in, panel_server, vm
):
    SHOTS.mkdir(exist_ok=True)
    page.add_init_script(CSP_WATCH)
    sign_in(page, vm.owner)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{panel_server}/vms/{vm.uuid}/")
    part = page.locator("#firewall")
    part.wait_for()
    assert part.locator("#firewall-rules tbody tr").count() == 4
    assert part.get_attribute("data-policy") == "deny"
    assert "4 of 5 rules" in part.inner_text().lower()
    part.scroll_into_view_if_needed()
    part.screenshot(path=str(SHOTS / "firewall-part.png"))

    form = part.locator("#firewall-add")
    form.locator("select[name=protocol]").select_option("tcp")
    form.locator("input[name=ports]").fill("8000-8100")
    form.locator("input[name=source]").fill("198.51.100.7/24")
    form.locator("input[name=comment]").fill("app")
    form.get_by_role("button", name="Allow").click()
    page.wait_for_selector("#firewall[data-applying='yes']")
    assert "Applying" in page.inner_text("#firewall-status")
    assert "198.51.100.0/24" in page.inner_text("#firewall-rules")  # normalized
    assert "5 of 5 rules" in page.inner_text("#firewall").lower()
    assert vm.operations.filter(kind=OperationKind.FIREWALL).count() == 1
    page.locator("#firewall").screenshot(path=str(SHOTS / "firewall-part-applying.png"))
    page.screenshot(path=str(SHOTS / "vm-page-firewall-applying.png"), full_page=True)

    # An invalid rule is refused with the reason, shown on the page.
    vm.operations.update(status="succeeded")
    page.reload()
    page.locator("#firewall").wait_for()
    assert "allows 5 rules" in page.inner_text("#firewall")  # the plan's limit: no form
    assert page.evaluate("window.__csp") == []
