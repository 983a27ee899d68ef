"""Boot from an ISO on the real libvirtd: a tiny GRUB rescue ISO built here, uploaded in the backoffice,
placed in the node's pool by the worker, inserted with "boot from it" into a stopped VM, which starts
into GRUB and says so on its serial console."""

import subprocess
import time

import pytest
from django.test import Client
from django.urls import reverse
from lxml import etree

from images.models import Image
from vms import actions
from vms.choices import OperationKind

from ..factories import make_user
from .conftest import finished, serial_text, virsh

pytestmark = pytest.mark.integration

MARKER = "KVMPANEL-ISO-BOOTED"
# GRUB's own configuration on the ISO: talk on the serial port, say the marker, stay at its prompt.
GRUB_CFG = f"""serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
echo {MARKER}
"""


@pytest.fixture
def grub_iso(tmp_path):
    """A bootable ISO made offline (grub-pc-bin, xorriso and mtools: scripts/test.sh installs them)."""
    root = tmp_path / "iso-root"
    (root / "boot" / "grub").mkdir(parents=True)
    (root / "boot" / "grub" / "grub.cfg").write_text(GRUB_CFG)
    iso = tmp_path / "grub-marker.iso"
    subprocess.run(["grub-mkrescue", "-o", str(iso), str(root)], check=True, capture_output=True)
    return iso


def test_a_vm_boots_from_an_iso_uploaded_to_the_library(
    node, customer, stopped_vm, grub_iso, celery_worker, wait_until
):
    # The operator uploads the ISO in the backoffice; the worker places it in the node's pool.
    operator = make_user("iso-operator", is_staff=True, is_superuser=True)
    backoffice = Client()
    backoffice.force_login(operator)
    with open(grub_iso, "rb") as handle:
        response = backoffice.post(
            reverse("admin:images_image_add"),
            {"name": "GRUB marker CD", "os_family": "other", "min_disk_gb": 1, "default_user": "root"}
            | {"active": "on", "upload": handle},  # the panel names the volume (kvmpanel-image-…)
        )
    assert response.status_code == 302, response.content.decode()[-2000:]
    iso = Image.objects.get(name="GRUB marker CD")
    wait_until(lambda: Image.objects.get(pk=iso.pk).status in ("ready", "failed"), 60, "the ISO's placement")
    iso.refresh_from_db()
    assert (iso.status, iso.error, iso.format) == ("ready", "", "iso")
    assert iso.is_on(node) and iso.volume_name in virsh("vol-list", node.pool_name).stdout

    # The customer puts it in the stopped VM's drive, to boot from, and starts the VM.
    vm = stopped_vm
    finished(actions.change_iso(vm, customer, iso, boot=True), wait_until)
    drives = etree.fromstring(virsh("dumpxml", vm.domain_name).stdout.encode()).findall("devices/disk")
    [drive] = [
        d
        for d in drives
        if d.find("source") is not None and d.find("source").get("volume") == iso.volume_name
    ]
    assert drive.get("device") == "cdrom" and drive.find("boot").get("order") == "1"  # before the disk
    started = time.monotonic()
    finished(actions.request(vm, customer, OperationKind.START), wait_until)

    wait_until(lambda: MARKER in serial_text(vm.domain_name), 120, "GRUB's marker on the serial console")
    print(f"\nstart requested -> GRUB from the ISO on the serial console: {time.monotonic() - started:.1f} s")
    console = serial_text(vm.domain_name)
    # The ISO's GRUB ran its grub.cfg and, with no menu entry, waits at its prompt: the disk never booted.
    assert "GNU GRUB" in console and "Minimal BASH-like line editing" in console
