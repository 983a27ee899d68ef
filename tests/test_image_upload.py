"""Adding an image by uploading a file in the backoffice: streamed to disk, checked like a download,
placed by a task; a refused file leaves nothing, and the uploaded file never outlives its use."""

import hashlib
import io
import os
import subprocess

import pytest
from django.core.files.uploadhandler import MemoryFileUploadHandler, TemporaryFileUploadHandler
from django.test import Client
from django.urls import reverse

import hypervisor
from accounts.models import AuditEntry
from images import tasks
from images import upload as image_upload
from images.models import Image

from .factories import make_image, make_user
from .test_imagefetch import HTML_PAGE, iso_bytes, mbr_disk

MiB = 1024 * 1024


@pytest.fixture
def operator(db):
    return make_user("operator", is_staff=True, is_superuser=True)


@pytest.fixture
def downloads(settings, tmp_path):
    settings.KVMPANEL_DOWNLOAD_DIR = str(tmp_path / "downloads")
    return tmp_path / "downloads"


@pytest.fixture
def placements(monkeypatch):
    """The placement tasks the add page starts, with each file's bytes as they were handed over."""
    started = []

    def delay(image_id, path):
        with open(path, "rb") as handle:
            started.append((image_id, path, handle.read()))

    monkeypatch.setattr(tasks.place_uploaded_image, "delay", delay)
    return started


@pytest.fixture(autouse=True)
def no_django_upload_handlers(monkeypatch):
    """Django's own handlers (memory, or a temporary file that dies with the request) are never used."""

    def refuse(*args, **kwargs):
        raise AssertionError("an image upload went through one of Django's default handlers")

    monkeypatch.setattr(MemoryFileUploadHandler, "new_file", refuse)
    monkeypatch.setattr(TemporaryFileUploadHandler, "new_file", refuse)


def listing(directory) -> list[str]:
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def upload(client, data: bytes, file_name: str = "disk.img", **fields):
    form = {
        "name": "Uploaded",
        "os_family": "linux",
        "min_disk_gb": 2,
        "default_user": "root",
        "active": "on",
        "upload": _named(data, file_name),
    }
    form.update(fields)
    return client.post(reverse("admin:images_image_add"), form)


def _named(data: bytes, name: str) -> io.BytesIO:
    handle = io.BytesIO(data)
    handle.name = name
    return handle


def errors_of(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


# --- what an upload becomes ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # the hand-over to the task happens on commit, in the request
def test_an_uploaded_disk_is_checked_recorded_and_handed_to_a_task(client, operator, downloads, placements):
    data = mbr_disk(8 * MiB) + os.urandom(MiB)  # a real multi-MB file through the test client
    client.force_login(operator)

    response = upload(client, data, "my disk.img", checksum_sha256=hashlib.sha256(data).hexdigest().upper())

    assert response.status_code == 302
    image = Image.objects.get()
    assert (image.status, image.format, image.size_bytes, image.source_url) == (
        "placing",
        "raw",
        len(data),
        "",
    )
    assert image.checksum_sha256 == hashlib.sha256(data).hexdigest()
    assert image.volume_name.startswith("kvmpanel-image-")
    [(image_id, path, handed_over)] = placements
    assert image_id == image.pk and handed_over == data
    assert os.path.dirname(path) == str(downloads) and os.path.basename(path).startswith("upload-")
    assert path.endswith(".raw") and listing(downloads) == [os.path.basename(path)]  # kept for the task
    entry = AuditEntry.objects.get(action="image.add")
    assert (entry.actor, entry.outcome) == (operator, "succeeded")
    assert "uploaded my disk.img (9.0 MiB" in entry.detail


@pytest.mark.django_db(transaction=True)
def test_an_uploaded_iso_is_recognised(client, operator, downloads, placements):
    client.force_login(operator)
    assert upload(client, iso_bytes(), "tools.iso").status_code == 302
    assert Image.objects.get().format == "iso"


# --- refusals: a clear error, nothing created, nothing left -------------------------------------


@pytest.mark.parametrize(
    ("data", "fields", "message"),
    [
        (HTML_PAGE, {}, "Not a disk image: it is an HTML page"),
        (b"\x1f\x8b" + bytes(4096), {}, "Not a disk image: it is a gzip archive"),
        (b"", {}, "The submitted file is empty."),
        (mbr_disk(), {"checksum_sha256": "ab" * 32}, "Checksum mismatch: expected SHA-256 abababababab…"),
        (mbr_disk(), {"checksum_sha256": "abc"}, "A SHA-256 checksum is 64 hexadecimal characters."),
        (mbr_disk(), {"source_url": "http://127.0.0.1:9/x.qcow2"}, "not both"),
        (mbr_disk(), {"name": "Taken"}, "Image with this Name already exists."),
    ],
    ids=["html", "gzip", "empty", "checksum", "malformed-checksum", "url-too", "duplicate-name"],
)
def test_a_refused_upload_says_why_and_leaves_nothing(
    client, operator, downloads, placements, settings, data, fields, message
):
    settings.KVMPANEL_IMAGE_ALLOW_PRIVATE = True  # so the URL itself would be fine
    make_image(name="Taken")
    client.force_login(operator)

    page = errors_of(upload(client, data, **fields))

    assert message in page
    assert list(Image.objects.values_list("name", flat=True)) == ["Taken"]
    assert placements == [] and listing(downloads) == []


def test_a_file_over_the_size_limit_is_dropped_as_it_arrives(
    client, operator, downloads, placements, settings
):
    settings.KVMPANEL_IMAGE_MAX_BYTES = 2 * MiB
    client.force_login(operator)
    page = errors_of(upload(client, mbr_disk(3 * MiB)))
    assert "The file is larger than the 2.0 MiB (2097152 bytes) allowed." in page
    assert not Image.objects.exists() and listing(downloads) == []


def test_a_file_of_exactly_the_size_limit_is_taken(client, operator, downloads, placements, settings):
    settings.KVMPANEL_IMAGE_MAX_BYTES = 2 * MiB
    client.force_login(operator)
    assert upload(client, mbr_disk(2 * MiB)).status_code == 302


def test_neither_a_url_nor_a_file_is_refused(client, operator, downloads):
    client.force_login(operator)
    response = client.post(
        reverse("admin:images_image_add"),
        {"name": "Nothing", "os_family": "linux", "min_disk_gb": 2, "default_user": "root"},
    )
    assert "Give a download URL or a file to upload" in errors_of(response)
    assert not Image.objects.exists()


def test_the_add_page_still_checks_the_csrf_token(operator, downloads, placements):
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    response = upload(client, mbr_disk())
    assert response.status_code == 403
    assert not Image.objects.exists() and listing(downloads) == []


def test_a_customer_cannot_upload(client, alice, downloads, placements):
    client.force_login(alice)
    response = upload(client, mbr_disk())
    assert response.status_code == 302 and "/login/" in response.url
    assert not Image.objects.exists() and listing(downloads) == []


def test_the_add_page_offers_the_upload_and_the_change_page_does_not(client, operator):
    client.force_login(operator)
    add_page = client.get(reverse("admin:images_image_add")).content.decode()
    assert 'enctype="multipart/form-data"' in add_page and 'name="upload"' in add_page
    image = make_image()
    change_page = client.get(reverse("admin:images_image_change", args=[image.pk])).content.decode()
    assert 'name="upload"' not in change_page


# --- the placement task -------------------------------------------------------------------------


def uploaded_file(downloads, data: bytes, name: str = "upload-abc.qcow2") -> str:
    downloads.mkdir(exist_ok=True)
    path = downloads / name
    path.write_bytes(data)
    return str(path)


@pytest.fixture
def qcow2(tmp_path) -> bytes:
    path = tmp_path / "tiny.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "16M"], check=True)
    return path.read_bytes()


@pytest.fixture
def uploads_to_pool(test_session, monkeypatch):
    """The test driver has no upload streams: record what would have been streamed (the real
    libvirtd does it in tests/integration/test_image_library.py)."""
    streamed = {}

    def upload_volume(pool, name, source_file):
        with open(source_file, "rb") as handle:
            streamed[(pool, name)] = handle.read()

    monkeypatch.setattr(test_session, "upload_volume", upload_volume)
    return streamed


@pytest.mark.django_db
def test_the_task_places_the_upload_in_the_pool_and_removes_the_file(
    test_node, uploads_to_pool, downloads, qcow2
):
    image = make_image(volume_name="", status=Image.Status.PLACING)
    path = uploaded_file(downloads, qcow2)

    tasks.place_uploaded_image(image.pk, path)

    image.refresh_from_db()
    assert (image.status, image.error) == ("ready", "")
    assert uploads_to_pool == {("test-pool", image.volume_name): qcow2}
    assert listing(downloads) == []


@pytest.mark.django_db
def test_a_failed_placement_fails_the_row_and_still_removes_the_file(
    test_node, test_session, downloads, qcow2, monkeypatch
):
    def broken(*args):
        raise hypervisor.OperationFailed("pool is full")

    monkeypatch.setattr(test_session, "upload_volume", broken)
    image = make_image(volume_name="", status=Image.Status.PLACING)
    path = uploaded_file(downloads, qcow2)

    tasks.place_uploaded_image(image.pk, path)

    image.refresh_from_db()
    assert image.status == "failed" and "pool is full" in image.error
    assert listing(downloads) == []


@pytest.mark.django_db
def test_an_upload_the_worker_cannot_see_fails_with_a_reason(test_node, downloads):
    downloads.mkdir()
    image = make_image(volume_name="", status=Image.Status.PLACING)
    tasks.place_uploaded_image(image.pk, str(downloads / "upload-gone.qcow2"))
    image.refresh_from_db()
    assert image.status == "failed" and "KVMPANEL_DOWNLOAD_DIR must be shared" in image.error


@pytest.mark.django_db
def test_the_task_touches_no_file_outside_the_download_folder(test_node, downloads, tmp_path):
    elsewhere = tmp_path / "upload-precious.qcow2"
    elsewhere.write_bytes(b"keep me")
    image = make_image(volume_name="", status=Image.Status.PLACING)
    tasks.place_uploaded_image(image.pk, str(elsewhere))
    image.refresh_from_db()
    assert image.status == "failed" and elsewhere.read_bytes() == b"keep me"


@pytest.mark.django_db
def test_an_upload_for_an_image_deleted_meanwhile_is_removed(downloads):
    path = uploaded_file(downloads, b"data")
    tasks.place_uploaded_image(12345, path)
    assert listing(downloads) == []


def test_discard_upload_ignores_paths_outside_the_download_folder(downloads, tmp_path):
    elsewhere = tmp_path / "upload-x"
    elsewhere.write_bytes(b"keep me")
    image_upload.discard_upload(str(elsewhere))
    assert elsewhere.exists()
