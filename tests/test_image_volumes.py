"""Only the panel's own image volumes become images, and no image removal takes a volume that a VM
or another image still uses: through the API (/api/v1/admin/images/) and the backoffice alike."""

from unittest.mock import Mock

import pytest
from django.urls import reverse

from accounts.models import AuditEntry
from images import tasks, volumes
from images.models import Image

from .factories import make_image, make_user, make_vm
from .fake_nodes import CHECKSUM, DATA, node_with

pytestmark = pytest.mark.django_db


@pytest.fixture
def removals(monkeypatch):
    removed = []
    monkeypatch.setattr(tasks.remove_image_volumes, "delay", removed.append)
    monkeypatch.setattr(tasks, "adopt_volume", Mock(), raising=False)
    return removed


@pytest.fixture
def operator(db):
    return make_user("operator", is_staff=True, is_superuser=True)


# Which volumes may become images --------------------------------------------------------------


@pytest.mark.parametrize(
    "volume", ["VM_DISK", "debian.qcow2", "made-up-name", "kvmpanel-image-", "kvmpanel-image-../x", " "]
)
def test_the_api_refuses_a_volume_that_is_not_the_panels_own(alice, as_staff, volume):
    vm = make_vm(alice)
    volume = vm.disk_volume if volume == "VM_DISK" else volume
    response = as_staff.post("/api/v1/admin/images/", {"name": "alias", "volume_name": volume}, format="json")
    assert response.status_code == 400, response.content
    assert not Image.objects.filter(name="alias").exists()


def test_the_backoffice_refuses_a_customers_disk_as_an_image(client, operator, alice, removals):
    vm = make_vm(alice)
    client.force_login(operator)
    data = {"name": "alias", "os_family": "debian", "min_disk_gb": 2, "default_user": "debian"}
    response = client.post(reverse("admin:images_image_add"), {**data, "volume_name": vm.disk_volume})
    assert (
        response.status_code == 200
        and "only the panel&#x27;s own image volumes" in response.content.decode().lower()
    )
    assert not Image.objects.filter(name="alias").exists()


def test_a_named_volume_is_not_ready_until_a_worker_finds_it(
    as_staff, django_capture_on_commit_callbacks, monkeypatch
):
    looked_for = []
    monkeypatch.setattr(tasks.adopt_volume, "delay", looked_for.append)
    body = {"name": "hand-placed", "volume_name": "kvmpanel-image-handmade"}
    with django_capture_on_commit_callbacks(execute=True):
        response = as_staff.post("/api/v1/admin/images/", body, format="json")
    assert response.status_code == 201, response.content
    image = Image.objects.get(name="hand-placed")
    assert response.json()["status"] == "placing" and image.status == Image.Status.PLACING
    assert looked_for == [image.pk]
    assert not Image.objects.usable().filter(pk=image.pk).exists()  # customers cannot pick it yet


def test_a_made_up_name_fails_when_no_pool_holds_it(fleet):
    node_with(fleet)
    image = make_image(volume_name="kvmpanel-image-nowhere", status=Image.Status.PLACING)
    tasks.adopt_volume(image.pk)
    image.refresh_from_db()
    assert image.status == Image.Status.FAILED and "No online node's pool" in image.error
    assert not image.placements.exists()


def test_a_volume_found_in_a_pool_becomes_ready_with_its_checksum(fleet):
    holder, other = node_with(fleet, {"kvmpanel-image-handmade": DATA}), node_with(fleet)
    image = make_image(volume_name="kvmpanel-image-handmade", status=Image.Status.PLACING)
    tasks.adopt_volume(image.pk)
    image.refresh_from_db()
    assert image.status == Image.Status.READY and image.is_on(holder) and not image.is_on(other)
    assert (image.checksum_sha256, image.size_bytes) == (CHECKSUM, len(DATA))  # the sync checks copies by it


def test_a_volume_whose_bytes_differ_from_the_checksum_given_is_not_taken(fleet):
    node_with(fleet, {"kvmpanel-image-handmade": b"other bytes"})
    image = make_image(
        volume_name="kvmpanel-image-handmade", status=Image.Status.PLACING, checksum_sha256=CHECKSUM
    )
    tasks.adopt_volume(image.pk)
    image.refresh_from_db()
    assert image.status == Image.Status.FAILED and "with this SHA-256" in image.error


# Removing a volume that something uses ------------------------------------------------------


def alias_of(volume_name: str) -> Image:
    """An image row naming another object's volume, as the API allowed before (a legacy row)."""
    return Image.objects.create(name=f"alias of {volume_name}", volume_name=volume_name)


def test_the_api_refuses_to_delete_an_alias_of_a_customers_disk(alice, as_staff, removals):
    vm = make_vm(alice)
    alias = alias_of(vm.disk_volume)
    response = as_staff.delete(f"/api/v1/admin/images/{alias.pk}/")
    assert response.status_code == 409
    assert (
        response.json()["error"]["code"] == "in_use"
        and "the disk of VM" in response.json()["error"]["message"]
    )
    assert Image.objects.filter(pk=alias.pk).exists() and removals == []
    assert AuditEntry.objects.filter(action="image.delete", outcome="refused").exists()


@pytest.mark.parametrize("use", ["iso", "rescue_image"])
def test_an_image_a_vm_holds_as_iso_or_rescue_system_stays(alice, as_staff, removals, use):
    held = make_image(format="iso" if use == "iso" else "qcow2")
    make_vm(alice, **{use: held})
    assert as_staff.delete(f"/api/v1/admin/images/{held.pk}/").status_code == 409
    assert Image.objects.filter(pk=held.pk).exists() and removals == []


def test_the_backoffice_refuses_to_delete_an_alias_of_a_customers_disk(client, operator, alice, removals):
    vm = make_vm(alice)
    alias = alias_of(vm.disk_volume)
    client.force_login(operator)
    page = client.get(reverse("admin:images_image_delete", args=[alias.pk]), follow=True)
    assert "cannot be deleted: its volume is still used by the disk of VM" in page.content.decode()
    client.post(reverse("admin:images_image_delete", args=[alias.pk]), {"post": "yes"})
    bulk = {"action": "delete_selected", "_selected_action": [alias.pk], "post": "yes"}
    client.post(reverse("admin:images_image_changelist"), bulk)
    assert Image.objects.filter(pk=alias.pk).exists() and removals == []


def test_an_unused_image_is_deleted_with_its_volumes(as_staff, removals, django_capture_on_commit_callbacks):
    unused = make_image(volume_name="kvmpanel-image-unused")
    with django_capture_on_commit_callbacks(execute=True):
        assert as_staff.delete(f"/api/v1/admin/images/{unused.pk}/").status_code == 204
    assert removals == ["kvmpanel-image-unused"]


def test_the_worker_removes_no_volume_that_is_in_use(alice, fleet):
    base = make_image(volume_name="kvmpanel-image-base")
    node = node_with(fleet)
    vm = make_vm(alice, node=node, image=base)
    pool = fleet[node.uri].pools["test-pool"]
    pool.update({vm.disk_volume: DATA, base.volume_name: DATA, "kvmpanel-image-gone": DATA})
    for name in (vm.disk_volume, base.volume_name):
        tasks.remove_image_volumes(name)  # as a removal queued before the row came back would
        assert name in pool
    tasks.remove_image_volumes("kvmpanel-image-gone")  # nothing uses it: it goes
    assert "kvmpanel-image-gone" not in pool
    assert volumes.users_of_volume(base.volume_name) == [f"image {base}", f"VM {vm}"]
