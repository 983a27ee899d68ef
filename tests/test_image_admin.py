"""The backoffice's image library: adding by URL is checked before anything is fetched; images in use stay."""

import pytest
from django.urls import reverse

from images import admin as images_admin
from images.models import Image

from .factories import make_image, make_user, make_vm

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(db):
    return make_user("operator", is_staff=True, is_superuser=True)


@pytest.fixture
def fetches(monkeypatch):
    started = []
    monkeypatch.setattr(images_admin.fetch_image, "delay", lambda pk: started.append(pk))
    return started


def add_image(client, **fields):
    data = {
        "name": "Ubuntu",
        "os_family": "ubuntu",
        "min_disk_gb": 2,
        "default_user": "ubuntu",
        "active": "on",
    }
    return client.post(reverse("admin:images_image_add"), {**data, **fields})


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://10.0.0.1/ubuntu.qcow2", "private address"),
        ("http://169.254.169.254/latest/meta-data", "metadata"),
        ("http://127.0.0.1:8000/x.qcow2", "loopback"),
        ("http://[::1]/x.qcow2", "loopback"),
        ("ftp://127.0.0.1/x.qcow2", "only http:// and https://"),
    ],
)
def test_urls_the_panel_must_not_fetch_are_refused_and_nothing_is_added(
    client, operator, fetches, url, reason
):
    client.force_login(operator)
    response = add_image(client, source_url=url)
    assert response.status_code == 200 and reason in response.content.decode()
    assert not Image.objects.exists() and fetches == []


def test_a_malformed_checksum_is_refused(client, operator, fetches, settings):
    settings.KVMPANEL_IMAGE_ALLOW_PRIVATE = True
    client.force_login(operator)
    response = add_image(client, source_url="http://127.0.0.1/x.qcow2", checksum_sha256="abc")
    assert "64 hexadecimal" in response.content.decode() and not Image.objects.exists()


def test_an_image_by_url_starts_a_download(
    client, operator, fetches, settings, django_capture_on_commit_callbacks
):
    settings.KVMPANEL_IMAGE_ALLOW_PRIVATE = True  # an operator's mirror on the panel's own network
    client.force_login(operator)
    with django_capture_on_commit_callbacks(execute=True):
        response = add_image(client, source_url="http://127.0.0.1:9/ubuntu.qcow2")
    assert response.status_code == 302
    image = Image.objects.get()
    assert (image.status, fetches) == ("pending", [image.pk])
    assert image.volume_name.startswith("kvmpanel-image-")


def test_an_image_in_use_cannot_be_deleted(client, operator, alice):
    image = make_image()
    make_vm(alice, image=image)
    client.force_login(operator)
    response = client.post(
        reverse("admin:images_image_delete", args=[image.pk]), {"post": "yes"}, follow=True
    )
    assert f"its volume is still used by VM {image.vms.get()}" in response.content.decode()
    assert Image.objects.filter(pk=image.pk).exists()


def test_customers_only_see_ready_images(alice):
    from vms.forms import CreateVMForm

    ready, failed = make_image(), make_image(status=Image.Status.FAILED)
    choices = list(CreateVMForm(owner=alice).fields["image"].queryset)
    assert ready in choices and failed not in choices
