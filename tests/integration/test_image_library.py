"""Images added by URL: downloaded, checked and placed in the node's pool through libvirt (real libvirtd)."""

import functools
import hashlib
import http.server
import secrets
import subprocess
import threading

import pytest

from vms import library
from vms.models import Image

from .conftest import virsh

pytestmark = pytest.mark.integration


@pytest.fixture
def image_server(tmp_path):
    """A web server on 127.0.0.1 with a small qcow2 image and a page that is not an image."""
    files = tmp_path / "served"
    files.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(files / "tiny.qcow2"), "64M"], check=True)
    (files / "index.html").write_text("<html><body>Download page</body></html>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(files))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", files
    server.shutdown()


@pytest.fixture
def downloads(settings, tmp_path):
    settings.KVMPANEL_IMAGE_ALLOW_PRIVATE = True  # the test server is on loopback
    settings.KVMPANEL_DOWNLOAD_DIR = str(tmp_path / "downloads")
    return tmp_path / "downloads"


def new_image(url: str, checksum: str = "") -> Image:
    return Image.objects.create(
        name=f"fetched {url.rsplit('/', 1)[1]}",
        source_url=url,
        checksum_sha256=checksum,
        volume_name=f"test-image-{secrets.token_hex(4)}",  # test objects carry the test prefix
        status=Image.Status.PENDING,
    )


def test_an_image_by_url_is_checked_and_placed_in_the_nodes_pool(node, image_server, downloads):
    base, files = image_server
    expected = hashlib.sha256((files / "tiny.qcow2").read_bytes()).hexdigest()
    image = new_image(f"{base}/tiny.qcow2", checksum=expected.upper())

    library.fetch_and_place(image)

    image.refresh_from_db()
    assert (image.status, image.error, image.format) == ("ready", "", "qcow2")
    assert image.checksum_sha256 == expected and image.downloaded_bytes == image.size_bytes > 0
    assert image.volume_name in virsh("vol-list", node.pool_name).stdout
    assert list(downloads.iterdir()) == []  # the download is gone once placed
    assert Image.objects.usable().filter(pk=image.pk).exists()


@pytest.mark.parametrize(
    ("file", "checksum", "reason"),
    [("tiny.qcow2", "0" * 64, "checksum mismatch"), ("index.html", "", "not a disk image")],
)
def test_a_bad_download_fails_visibly_and_leaves_nothing(
    node, image_server, downloads, file, checksum, reason
):
    base, _files = image_server
    image = new_image(f"{base}/{file}", checksum=checksum)

    library.fetch_and_place(image)

    image.refresh_from_db()
    assert image.status == "failed" and reason in image.error
    assert image.volume_name not in virsh("vol-list", node.pool_name).stdout
    assert list(downloads.iterdir()) == []
    assert not Image.objects.usable().filter(pk=image.pk).exists()  # customers never see it
