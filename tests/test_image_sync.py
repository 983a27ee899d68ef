"""A node gets the library's images: copied from a node that has them, checked, recorded; VMs only go
to nodes whose pool holds their image. Nodes are fakes at the hypervisor door (the real copy over
libvirt streams is in tests/integration/test_image_library.py)."""

import pytest
import redis
from django.conf import settings

from accounts.models import AuditEntry
from images import placement, sync, tasks
from images.models import Image, ImagePlacement
from nodes import registration
from nodes.choices import NodeStatus
from vms import actions
from vms.choices import OperationKind

from .factories import make_image, make_node, make_plan, make_vm
from .fake_nodes import CHECKSUM, DATA, node_with

pytestmark = pytest.mark.django_db


@pytest.fixture
def image(db):
    return make_image(volume_name="kvmpanel-image-1", checksum_sha256=CHECKSUM, size_bytes=len(DATA))


def placed(image, node) -> bool:
    return image.is_on(node)


# --- the sync -----------------------------------------------------------------------------------


def test_a_new_node_gets_a_ready_image_copied_from_a_node_that_has_it(fleet, image):
    old = node_with(fleet, {"kvmpanel-image-1": DATA})
    ImagePlacement.objects.create(image=image, node=old, ready=True)
    new = node_with(fleet)

    assert sync.sync_node(new) == {image.name: f"copied from {old}"}

    assert fleet[new.uri].pools["test-pool"] == {"kvmpanel-image-1": DATA}
    assert placed(image, new)
    assert sync.sync_node(new) == {}  # nothing left to do


def test_images_not_ready_are_not_copied(fleet):
    old = node_with(fleet, {"kvmpanel-image-1": DATA})
    failed = make_image(volume_name="kvmpanel-image-1", status=Image.Status.PLACING, on=[old])
    new = node_with(fleet)
    assert sync.sync_node(new) == {}
    assert not placed(failed, new)


def test_a_copy_that_does_not_match_the_checksum_is_removed(fleet, image):
    old = node_with(fleet, {"kvmpanel-image-1": b"QFI\xfb rotten bytes"})
    ImagePlacement.objects.create(image=image, node=old, ready=True)
    new = node_with(fleet)

    outcome = sync.sync_node(new)

    assert "does not match the image's SHA-256" in outcome[image.name]
    assert fleet[new.uri].pools["test-pool"] == {} and not placed(image, new)


def test_an_unreachable_source_is_skipped_for_another(fleet, image):
    away = node_with(fleet, {"kvmpanel-image-1": DATA}, name="a-away")
    fleet[away.uri].reachable = False
    there = node_with(fleet, {"kvmpanel-image-1": DATA}, name="b-there")
    for source in (away, there):
        ImagePlacement.objects.create(image=image, node=source, ready=True)
    new = node_with(fleet, name="c-new")
    assert sync.sync_node(new) == {image.name: "copied from b-there"}


def test_sources_are_online_nodes_only(fleet, image):
    offline = node_with(fleet, {"kvmpanel-image-1": DATA}, status=NodeStatus.UNREACHABLE)
    ImagePlacement.objects.create(image=image, node=offline, ready=True)
    new = node_with(fleet)
    assert sync.sync_node(new) == {image.name: "no online node holds it to copy from"}
    assert not placed(image, new)


def test_an_unfinished_copy_of_the_panels_own_is_replaced(fleet, image):
    old = node_with(fleet, {"kvmpanel-image-1": DATA})
    ImagePlacement.objects.create(image=image, node=old, ready=True)
    new = node_with(fleet, {"kvmpanel-image-1": b"QFI\xfb half"})
    ImagePlacement.objects.create(image=image, node=new, ready=False)  # a worker died while copying

    assert sync.sync_node(new) == {image.name: f"copied from {old}"}
    assert fleet[new.uri].pools["test-pool"]["kvmpanel-image-1"] == DATA and placed(image, new)


def test_a_volume_the_panel_did_not_write_is_taken_when_its_bytes_match(fleet, image):
    new = node_with(fleet, {"kvmpanel-image-1": DATA})
    assert sync.sync_node(new) == {image.name: "found in the pool"}
    assert placed(image, new)


def test_a_volume_named_by_the_operator_without_a_checksum_is_taken_as_it_is(fleet):
    named = make_image(volume_name="debian.qcow2")
    new = node_with(fleet, {"debian.qcow2": b"whatever the operator put there"})
    assert sync.sync_node(new) == {named.name: "found in the pool"}
    assert fleet[new.uri].hashed == []


def test_a_foreign_volume_that_differs_is_never_deleted_and_is_reported(fleet, image):
    old = node_with(fleet, {"kvmpanel-image-1": DATA})
    ImagePlacement.objects.create(image=image, node=old, ready=True)
    new = node_with(fleet, {"kvmpanel-image-1": b"QFI\xfb someone else's file, same name"})

    outcome = sync.sync_node(new)

    assert "whose bytes differ from the image's" in outcome[image.name]
    assert fleet[new.uri].pools["test-pool"]["kvmpanel-image-1"].startswith(b"QFI\xfb someone")
    assert not ImagePlacement.objects.filter(node=new).exists()
    assert fleet[new.uri].hashed == []  # a different size says enough: nothing read


# --- placing a new image on every node uses the same records ------------------------------------


def test_placing_refuses_to_overwrite_a_volume_it_did_not_write(fleet, image, tmp_path):
    node = node_with(fleet, {"kvmpanel-image-1": b"in use by someone"})
    image.mark(Image.Status.PLACING)
    placement.place_on_nodes(image, str(tmp_path / "unused"))
    image.refresh_from_db()
    assert image.status == "failed" and "already holds a volume named kvmpanel-image-1" in image.error
    assert fleet[node.uri].pools["test-pool"]["kvmpanel-image-1"] == b"in use by someone"


# --- when a sync is asked for -------------------------------------------------------------------


@pytest.fixture
def syncs(monkeypatch):
    asked = []
    monkeypatch.setattr(
        tasks.sync_node_images, "apply_async", lambda args, queue: asked.append((args[0], queue))
    )
    return asked


def test_registering_a_node_asks_for_a_sync_on_its_queue(
    test_driver_uri, test_session, syncs, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        node = registration.register_node(
            "new-node", test_driver_uri, pool_name="test-pool", pool_path="/test-pool"
        )
    assert syncs == [(node.pk, "node.new-node")]


def test_the_periodic_refresh_asks_only_for_nodes_that_lack_a_ready_image(
    test_node, syncs, django_capture_on_commit_callbacks
):
    image = make_image()
    with django_capture_on_commit_callbacks(execute=True):
        registration.refresh_node(test_node)
    assert syncs == [(test_node.pk, test_node.queue)]

    ImagePlacement.objects.create(image=image, node=test_node, ready=True)
    syncs.clear()
    with django_capture_on_commit_callbacks(execute=True):
        registration.refresh_node(test_node)
    assert syncs == []


def test_one_sync_per_node_at_a_time(fleet, image):
    node = node_with(fleet)
    lock = redis.Redis.from_url(settings.REDIS_URL).lock(f"kvmpanel:image-sync:{node.pk}", timeout=10)
    assert lock.acquire(blocking=False)
    try:
        assert tasks.sync_node_images(node.pk) == {}
    finally:
        lock.release()
    assert tasks.sync_node_images(node.pk) == {image.name: "no online node holds it to copy from"}


# --- VMs go only where their image is -----------------------------------------------------------


def test_a_vm_is_only_placed_on_a_node_that_holds_its_image(alice, enqueued):
    roomy = make_node(memory_mib=65536)  # the most free memory, but no copy of the image
    holder = make_node(memory_mib=4096)
    unfinished = make_node(memory_mib=32768)
    image = make_image(on=[holder])
    ImagePlacement.objects.create(image=image, node=unfinished, ready=False)
    vm = actions.create_vm(owner=alice, plan=make_plan(), image=image, hostname="web")
    assert vm.node == holder != roomy


def test_create_is_refused_while_no_node_holds_the_image(alice, enqueued):
    make_node()
    image = make_image()
    with pytest.raises(actions.ActionRefused, match="is not on any available hypervisor node yet"):
        actions.create_vm(owner=alice, plan=make_plan(), image=image, hostname="web")


def test_a_reinstall_from_an_image_the_vms_node_lacks_is_refused_and_recorded(alice, enqueued):
    vm = make_vm(alice)
    elsewhere = make_image(on=[make_node()])
    with pytest.raises(actions.ActionRefused, match="is not on this VM's node yet"):
        actions.reinstall(vm, alice, image=elsewhere)
    assert not vm.operations.exists()
    entry = AuditEntry.objects.get(action=f"vm.{OperationKind.REINSTALL}")
    assert entry.outcome == "refused"
