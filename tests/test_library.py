"""The image library's tasks: downloads that fail say why on the row and leave nothing behind."""

import os
import time

import pytest

from images import cleanup, fetch
from images.models import Image

from .factories import make_image
from .test_imagefetch import LocalServer, mbr_disk, trickle

pytestmark = pytest.mark.django_db


@pytest.fixture
def server():
    local = LocalServer()
    yield local
    local.stop()


@pytest.fixture
def downloads(settings, tmp_path):
    settings.KVMPANEL_IMAGE_ALLOW_PRIVATE = True  # the test server is on loopback
    settings.KVMPANEL_DOWNLOAD_DIR = str(tmp_path / "downloads")
    return tmp_path / "downloads"


def test_a_download_slower_than_the_time_limit_fails_on_the_row_and_leaves_no_file(
    server, downloads, settings
):
    settings.KVMPANEL_IMAGE_DOWNLOAD_TIMEOUT = 1
    server.routes["/slow.img"] = trickle(mbr_disk(), piece=4096, every=0.05)  # would take 40 s
    image = make_image(source_url=server.url("/slow.img"), volume_name="", status=Image.Status.PENDING)

    started = time.monotonic()
    fetch.fetch_and_place(image)

    image.refresh_from_db()
    assert time.monotonic() - started < 3
    assert image.status == "failed"
    assert image.error == "the download did not finish within the 1 s allowed"
    assert list(downloads.iterdir()) == []


def test_stale_download_and_upload_files_are_removed_and_nothing_else(settings, tmp_path):

    settings.KVMPANEL_DOWNLOAD_DIR = str(tmp_path)
    now = time.time()
    files = {
        "imagefetch-old.part": now - 8 * 3600,  # a download a killed worker left
        "upload-old.qcow2": now - 8 * 3600,  # accepted, never placed
        "upload-fresh.part": now - 60,  # still being written
        "operator-notes.txt": now - 30 * 24 * 3600,  # not the panel's
    }
    for name, mtime in files.items():
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, (mtime, mtime))

    removed = cleanup.remove_stale_files(older_than_seconds=7 * 3600, now=now)

    assert sorted(removed) == ["imagefetch-old.part", "upload-old.qcow2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["operator-notes.txt", "upload-fresh.part"]
