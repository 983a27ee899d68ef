"""The backoffice's move and maintenance pages in Chromium: a node page with its maintenance and drain
buttons, the panel's SSH key and the TLS files; a VM page whose migrate form names the nodes it can
go to (and says why not for the others). No guest boots: the nodes are rows, nothing asks libvirt."""

import os
from pathlib import Path

import pytest

from nodes.choices import NodeStatus
from vms.choices import OperationKind
from vms.models import Operation

from ..factories import make_image, make_node, make_user, make_vm
from .conftest import sign_in_as_staff

pytestmark = [pytest.mark.integration, pytest.mark.browser]
SHOTS = Path(os.environ.get("KVMPANEL_SHOTS", "/tmp/shots-many19"))


def test_staff_put_a_node_in_maintenance_and_move_a_vm_from_the_backoffice(
    page, panel_server, transactional_db
):
    SHOTS.mkdir(parents=True, exist_ok=True)
    first = make_node(name="node-1", memory_mib=65536, cpus=16)
    second = make_node(name="node-2", memory_mib=65536, cpus=16)
    third = make_node(
        name="node-3", memory_mib=65536, cpus=16, network_problem="The host has no interface br0."
    )
    image = make_image(name="Debian 12", on=[first, second, third])
    customer = make_user("carol")
    vm = make_vm(customer, node=first, image=image, hostname="web-1")
    make_vm(customer, node=first, image=image, hostname="db-1", state="stopped")

    sign_in_as_staff(page, panel_server, "stella", f"/backoffice/nodes/node/{first.pk}/change/")
    assert "ssh-ed25519" in page.input_value("#panel-public-key")
    assert page.locator("#remote-access").get_by_text("/etc/pki/libvirt/clientcert.pem").count() == 1
    page.get_by_role("button", name="Put in maintenance").click()
    page.wait_for_selector("#maintenance[data-status='maintenance']")
    page.screenshot(path=str(SHOTS / "node-maintenance.png"), full_page=True)
    first.refresh_from_db()
    assert first.status == NodeStatus.MAINTENANCE

    page.goto(f"{panel_server}/backoffice/vms/virtualmachine/{vm.pk}/change/")
    options = page.locator("#id_target option").all_inner_texts()
    assert any(text.startswith("node-2 (online)") and "—" not in text for text in options), options
    assert any(text.startswith("node-3") and "br0" in text for text in options), options
    page.locator("#vm-migrate").scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "vm-migrate-form.png"), full_page=True)
    page.select_option("#id_target", str(second.pk))
    page.click("#migrate-button")
    page.wait_for_selector(".messagelist .success")
    move = Operation.objects.get(vm=vm, kind=OperationKind.MIGRATE)
    assert move.params == {"target_node_id": second.pk, "from_node_id": first.pk}
    page.screenshot(path=str(SHOTS / "vm-moving.png"), full_page=True)

    page.goto(f"{panel_server}/backoffice/nodes/node/{first.pk}/change/")
    page.get_by_role("button", name="Drain: move every VM to other nodes").click()
    page.wait_for_selector("#maintenance[data-draining='yes']")
    page.locator("#maintenance").scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "node-draining.png"), full_page=True)
