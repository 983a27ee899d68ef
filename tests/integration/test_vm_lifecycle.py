"""A customer runs a real VM through its whole life in Chromium, with a real worker and libvirtd."""

import pytest

from vms.choices import OperationStatus, VMState
from vms.models import Operation, VirtualMachine

from .conftest import OUTPUT, domain_state, serial_text, virsh

pytestmark = [pytest.mark.integration, pytest.mark.browser]

BOOT_TIMEOUT = 300  # under emulation a guest needs about a minute to its login prompt


def click_and_wait_for_state(page, button: str, state: str, timeout_s: float):
    page.get_by_role("button", name=button).click()
    wait_for_settled_state(page, state, timeout_s)


def wait_for_settled_state(page, state: str, timeout_s: float):
    """The state badge shows `state` and no operation is running."""
    page.wait_for_selector(f"#vm-state[data-state='{state}']:not([data-busy])", timeout=timeout_s * 1000)


def last_operation(vm) -> Operation:
    return vm.operations.order_by("-created_at", "-id").first()


def test_a_customer_creates_runs_and_deletes_a_vm_in_the_browser(
    page, sign_in, live_server, customer, node, demo_image, nano_plan, celery_worker, wait_until
):
    sign_in(page, customer)
    page.get_by_role("link", name="Create VM").first.click()
    page.select_option("#id_plan", label=str(nano_plan))
    page.select_option("#id_image", label=demo_image.name)
    page.fill("#id_hostname", "life-1")
    page.get_by_role("button", name="Create").click()

    wait_for_settled_state(page, "running", 120)
    vm = VirtualMachine.objects.get(hostname="life-1")
    assert vm.owner == customer and vm.domain_name.startswith("test-")
    assert domain_state(vm.domain_name) == "running"
    assert last_operation(vm).status == OperationStatus.SUCCEEDED
    page.screenshot(path=str(OUTPUT / "vm-running.png"), full_page=True)

    wait_until(lambda: "login:" in serial_text(vm.domain_name), BOOT_TIMEOUT, "the guest's login prompt")
    click_and_wait_for_state(page, "Reboot", "running", 60)
    assert last_operation(vm).kind == "reboot"
    wait_until(lambda: serial_text(vm.domain_name).count("login:") >= 2, BOOT_TIMEOUT, "login after reboot")

    click_and_wait_for_state(page, "Shut down", "stopped", 120)
    assert domain_state(vm.domain_name) == "shut off"

    click_and_wait_for_state(page, "Start", "running", 60)
    assert domain_state(vm.domain_name) == "running"

    click_and_wait_for_state(page, "Force off", "stopped", 60)
    assert domain_state(vm.domain_name) == "shut off"

    page.get_by_role("link", name="Delete").click()
    page.fill("#confirm_hostname", "life-1")
    page.get_by_role("button", name="Delete this VM").click()
    page.wait_for_url(f"{live_server.url}/vms/", timeout=60_000)
    vm.refresh_from_db()
    assert vm.state == VMState.DELETED
    assert domain_state(vm.domain_name) == "absent"
    volumes = virsh("vol-list", node.pool_name).stdout
    assert vm.disk_volume not in volumes
    assert demo_image.volume_name in volumes  # the image is never touched
    assert [op.status for op in vm.operations.all()] == ["succeeded"] * 6
