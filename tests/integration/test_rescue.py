"""Rescue mode on the real libvirtd: a rescue system boots with the VM's own disk as its second disk."""

import os
import threading
import time
from pathlib import Path

import pytest

import hypervisor
from images.models import Image
from vms import actions
from vms.choices import OperationKind

from .conftest import finished, virsh

pytestmark = pytest.mark.integration

RESCUE_IMAGE = Path(
    os.environ.get("KVMPANEL_RESCUE_IMAGE", "/var/cache/kvmpanel/images/debian-12-rescue.qcow2")
)
PASSWORD = "rescue-Me-pw-31"
BOOT_TIMEOUT = 300


class SerialSession:
    """The guest's serial console through the hypervisor door, read by a thread into one text."""

    def __init__(self, uri: str, domain: str):
        self.console = hypervisor.SerialConsole(uri, domain)
        self.text = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        while data := self.console.recv():
            self.text += data.decode(errors="replace")

    def type(self, line: str):
        self.console.send(line.encode() + b"\r")

    def expect(self, *markers: str, timeout: float = 60) -> str:
        """Wait until one of `markers` shows after what was seen so far; returns the text since then."""
        start = len(self.text)
        deadline = time.monotonic() + timeout
        while not any(marker in self.text[start:] for marker in markers):
            if time.monotonic() > deadline:
                raise AssertionError(f"{markers} did not show; the console said: {self.text[-800:]!r}")
            time.sleep(0.2)
        return self.text[start:]

    def log_in(self, user: str, password: str, attempts: int = 6) -> None:
        """cloud-init may set the password a moment after the first prompt: early tries can fail."""
        for _ in range(attempts):
            self.type(user)
            self.expect("Password:", timeout=30)
            self.type(password)
            if ":~$" in self.expect(":~$", "Login incorrect", timeout=60):  # the shell's prompt
                return
            time.sleep(5)
        raise AssertionError(f"could not log in as {user}")

    def close(self):
        self.console.close()


@pytest.fixture
def rescue_system(node):
    if not RESCUE_IMAGE.exists():
        pytest.fail(f"{RESCUE_IMAGE} is missing: scripts/test.sh builds it (ensure_rescue_image)")
    volume = f"test-rescue-{os.getpid()}.qcow2"
    with hypervisor.connect(node.uri) as session:
        session.upload_volume(node.pool_name, volume, str(RESCUE_IMAGE))
    image = Image.objects.create(name="Rescue (Debian 12)", volume_name=volume, rescue=True)
    image.placements.update_or_create(node=node, defaults={"ready": True})
    return image


def test_a_rescue_system_boots_with_the_vms_disk_second_and_leaves_it_alone(
    node, customer, stopped_vm, rescue_system, celery_worker, wait_until
):
    vm = stopped_vm
    finished(actions.rescue(vm, customer, image=rescue_system, password=PASSWORD), wait_until)
    vm.refresh_from_db()
    assert vm.rescue_image == rescue_system and vm.allowed_actions() >= {OperationKind.LEAVE_RESCUE}
    assert OperationKind.REINSTALL not in vm.allowed_actions()  # nothing that changes the disks
    disks = virsh("domblklist", vm.domain_name).stdout
    assert vm.rescue_volume in disks and vm.disk_volume in disks

    # Once cloud-init has finished (asked through the guest agent: it no longer prints on the serial
    # console, where it cut into the login prompt), the password is set.
    def first_boot_done() -> bool:
        with hypervisor.connect(node.uri) as session:
            return session.first_boot_finished(vm.domain_name)

    wait_until(first_boot_done, BOOT_TIMEOUT, "the rescue system's boot")
    console = SerialSession(node.uri, vm.domain_name)
    try:
        console.type("")
        console.expect("login:", timeout=30)
        console.log_in(rescue_system.default_user, PASSWORD)
        # The rescue system runs from its own disk; the VM's disk is the second one, readable.
        # One line: sudo swallows whatever is typed while it runs.
        console.type(
            "findmnt -no SOURCE /; hostname; "
            "sudo mount -o ro /dev/vdb1 /mnt && ls /mnt/etc/cloud && echo ok-$((6*7))"
        )
        output = console.expect("ok-42", timeout=60)
        assert "/dev/vda1" in output and f"rescue-{vm.hostname}" in output and "cloud.cfg" in output
    finally:
        console.close()

    finished(actions.request(vm, customer, OperationKind.LEAVE_RESCUE), wait_until)
    vm.refresh_from_db()
    assert vm.rescue_image is None
    disks = virsh("domblklist", vm.domain_name).stdout
    assert vm.disk_volume in disks and vm.rescue_volume not in disks
    volumes = virsh("vol-list", node.pool_name).stdout
    assert vm.rescue_volume not in volumes and vm.rescue_seed_volume not in volumes
    assert rescue_system.volume_name in volumes  # the rescue image itself stays
