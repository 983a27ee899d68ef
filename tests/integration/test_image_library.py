"""Images added by URL: downloaded, checked and placed in the node's pool through libvirt (real libvirtd)."""

import functools
import hashlib
import http.server
import secrets
import subprocess
import threading
import time

import pytest

import hypervisor
from images import fetch, tasks
from images.models import Image
from nodes.registration import register_node
from vms import actions

from ..factories import make_plan
from .conftest import GUEST_IMAGE, IMAGE_VOLUME, LOCAL_URI, virsh

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

    fetch.fetch_and_place(image)

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

    fetch.fetch_and_place(image)

    image.refresh_from_db()
    assert image.status == "failed" and reason in image.error
    assert image.volume_name not in virsh("vol-list", node.pool_name).stdout
    assert list(downloads.iterdir()) == []
    assert not Image.objects.usable().filter(pk=image.pk).exists()  # customers never see it


@pytest.fixture
def second_node(node, libvirt_env):
    """The same libvirtd under a second URI with a pool of its own: a node added later, as libvirt sees it."""
    tag = secrets.token_hex(3)
    pool = f"test-kvmpanel-{tag}"
    added = register_node(
        "test-node-2",
        "qemu+unix:///system",
        pool_name=pool,
        pool_path=f"/var/lib/kvmpanel/test-pools/{tag}",
        network_name=libvirt_env["network"],
    )
    yield added
    with hypervisor.connect(LOCAL_URI) as session:
        for volume in session.volume_names(pool):
            session.delete_volume(pool, volume)
        session.delete_pool(pool)


def test_a_new_node_gets_the_librarys_images_from_another_nodes_pool(
    node, second_node, demo_image, wait_until
):
    """The guest image goes from the first node's pool to the new node's through two libvirt streams."""
    demo_image.checksum_sha256 = hashlib.sha256(GUEST_IMAGE.read_bytes()).hexdigest()
    demo_image.size_bytes = GUEST_IMAGE.stat().st_size
    demo_image.save()
    assert not demo_image.is_on(second_node)
    assert actions.pick_node(make_plan(), demo_image) == node  # VMs go only where the image is

    started = time.monotonic()
    outcome = tasks.sync_node_images(second_node.pk)
    if outcome == {}:
        # Registering the node asked for this sync: a worker of the test session (when an earlier test
        # started one) took it first, and holds the node's sync lock while it copies.
        wait_until(lambda: demo_image.is_on(second_node), 180, "the session worker's sync of the new node")
    else:
        assert outcome == {demo_image.name: f"copied from {node}"}
    took = time.monotonic() - started
    print(f"copied {demo_image.size_bytes / 2**20:.0f} MiB between pools in {took:.1f} s")
    assert demo_image.is_on(second_node)
    with hypervisor.connect(second_node.uri) as session:
        copy_path = session.volume_path(second_node.pool_name, IMAGE_VOLUME)
        assert session.volume_sha256(second_node.pool_name, IMAGE_VOLUME) == demo_image.checksum_sha256
    volume_xml = virsh("vol-dumpxml", "--pool", second_node.pool_name, IMAGE_VOLUME).stdout
    assert "<format type='qcow2'/>" in volume_xml  # libvirt probed the copy, as after an upload
    info = subprocess.run(["qemu-img", "info", copy_path], capture_output=True, text=True, check=True)
    assert "file format: qcow2" in info.stdout
    assert tasks.sync_node_images(second_node.pk) == {}  # nothing left to copy
