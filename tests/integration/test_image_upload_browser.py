"""An operator uploads a 200 MiB disk image in Chromium, through daphne, and the worker places it in
the real pool; a file that is not an image is refused on the page."""

import hashlib
import os
import time
from pathlib import Path

import pytest
from django.conf import settings

from images.models import Image

from ..factories import make_user
from .conftest import OUTPUT, RUNNING, virsh

pytestmark = [pytest.mark.integration, pytest.mark.browser]

MiB = 1024 * 1024
SIZE = 200 * MiB


def peak_memory_mib(pid: int) -> float:
    """The process's resident memory high-water mark (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.fixture
def big_disk(tmp_path) -> tuple[Path, str]:
    """A raw disk (a partition table, then incompressible bytes) and its SHA-256."""
    path = tmp_path / "big-disk.img"
    digest = hashlib.sha256()
    with open(path, "wb") as handle:
        first = bytearray(os.urandom(MiB))
        first[510:512] = b"\x55\xaa"
        for block in [bytes(first)] + [os.urandom(MiB) for _ in range(SIZE // MiB - 1)]:
            digest.update(block)
            handle.write(block)
    return path, digest.hexdigest()


@pytest.fixture
def operator_page(page, panel_server, transactional_db):
    operator = make_user("upload-operator", is_staff=True, is_superuser=True)
    page.goto(f"{panel_server}/accounts/login/?next=/backoffice/images/image/add/")  # the panel's sign-in
    page.fill("#id_username", operator.username)
    page.fill("#id_password", "upload-operator-pass-123")
    page.click("main button[type=submit]")
    page.wait_for_url("**/backoffice/images/image/add/")
    return page


def test_an_operator_uploads_a_200_mib_image_through_daphne(
    operator_page, big_disk, node, celery_worker, wait_until
):
    page, (path, checksum) = operator_page, big_disk
    page.screenshot(path=str(OUTPUT / "image-add-page.png"), full_page=True)
    page.fill("#id_name", "Uploaded 200 MiB disk")
    page.select_option("#id_os_family", "linux")
    page.fill("#id_default_user", "root")
    page.fill("#id_checksum_sha256", checksum)
    page.set_input_files("#id_upload", str(path))
    daphne = RUNNING["daphne"].pid
    peak_before = peak_memory_mib(daphne)

    started = time.monotonic()
    page.click("input[name=_save]")
    page.wait_for_url("**/backoffice/images/image/", timeout=300_000)
    took = time.monotonic() - started

    image = Image.objects.get(name="Uploaded 200 MiB disk")
    assert (image.format, image.size_bytes, image.checksum_sha256) == ("raw", SIZE, checksum)
    wait_until(lambda: Image.objects.get(pk=image.pk).status in ("ready", "failed"), 120, "the placement")
    placed = time.monotonic() - started
    image.refresh_from_db()
    assert (image.status, image.error) == ("ready", "")
    assert image.is_on(node) and image.volume_name in virsh("vol-list", node.pool_name).stdout
    leftovers = [name for name in os.listdir(settings.KVMPANEL_DOWNLOAD_DIR) if name.startswith("upload-")]
    assert leftovers == []  # the worker removed the uploaded file once placed
    page.reload()
    page.screenshot(path=str(OUTPUT / "image-list-after-upload.png"), full_page=True)
    peak_after = peak_memory_mib(daphne)
    print(
        f"\n200 MiB upload: {took:.1f} s to the saved page ({SIZE / MiB / took:.0f} MiB/s), "
        f"{placed:.1f} s to ready in the pool; daphne's peak memory {peak_before:.0f} -> {peak_after:.0f} MiB"
    )
    # Daphne queues the body in memory once (django/daphne#483); Twisted no longer parses it as well
    # (kvmpanel/daphne_bodies.py: that took daphne to 2.7 GiB for this file).
    assert peak_after - peak_before < 2 * SIZE / MiB


def test_a_file_that_is_not_an_image_is_refused_on_the_page(operator_page, tmp_path):
    page = operator_page
    page_file = tmp_path / "download.html"
    page_file.write_text("<!DOCTYPE html><html><body>Click here to download</body></html>")
    page.fill("#id_name", "Not an image")
    page.set_input_files("#id_upload", str(page_file))
    page.click("input[name=_save]")
    page.wait_for_selector(".errorlist")
    assert "Not a disk image: it is an HTML page" in page.inner_text(".errorlist")
    page.screenshot(path=str(OUTPUT / "image-add-refused.png"), full_page=True)
    assert not Image.objects.filter(name="Not an image").exists()
