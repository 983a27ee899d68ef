"""A database made before nodes and images got their own apps migrates in place: every row stays,
and the pages serve it.

The database is taken back to the migrations of that release (vms 0011), filled with a row in every
table of the panel's apps through the models as they were then, and migrated forward again.
"""

import datetime as dt
import uuid

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from images.models import Image, ImagePlacement
from nodes.models import Node, NodeUsage
from vms.models import Operation, VirtualMachine, VMUsage

# Back to the release before the move: vms at 0011, and nodes/ and images/ not there yet (what
# depends on them is taken back too; everything else stays as it is).
BEFORE = [("vms", "0011_image_placements"), ("nodes", None), ("images", None)]
PANEL_APPS = ("accounts", "api", "vms")


def _migrate(targets):
    """Migrate to `targets`; the models as they are at that point."""
    MigrationExecutor(connection).migrate(targets)
    ContentType.objects.clear_cache()
    executor = MigrationExecutor(connection)  # a fresh loader sees what is applied now
    return executor.loader.project_state(list(executor.recorder.applied_migrations())).apps


def _latest():
    executor = MigrationExecutor(connection)
    return executor.loader.graph.leaf_nodes()


def _fill_every_table(old):
    """One or more rows in every table of the panel's apps, written through the old models."""
    get = old.get_model
    now = timezone.now()
    owner = get("accounts", "User").objects.create(username="owner", email="owner@example.com", password="x")
    operator = get("accounts", "User").objects.create(
        username="operator", is_staff=True, is_superuser=True, password="x"
    )
    group = get("auth", "Group").objects.create(name="operators")
    owner.groups.add(group)
    owner.user_permissions.add(get("auth", "Permission").objects.first())
    get("accounts", "SSHKey").objects.create(
        user=owner, name="laptop", public_key="ssh-ed25519 AAAA test", fingerprint="SHA256:test"
    )
    get("accounts", "AuditEntry").objects.create(
        actor=operator, actor_name="operator", action="node.add", outcome="succeeded", owner=owner
    )
    get("api", "APIToken").objects.create(user=owner, name="ci", prefix="kvp_old", secret_hash="0" * 64)
    node = get("vms", "Node").objects.create(name="old-node", uri="qemu:///old", cpus=4, memory_mib=8192)
    plan = get("vms", "Plan").objects.create(name="Old plan", vcpus=1, memory_mib=512, disk_gb=4)
    image = get("vms", "Image").objects.create(name="Old image", volume_name="old-image.qcow2")
    iso = get("vms", "Image").objects.create(name="Old ISO", volume_name="old.iso", format="iso")
    get("vms", "ImagePlacement").objects.create(image=image, node=node, ready=True, placed_at=now)
    vm = get("vms", "VirtualMachine").objects.create(
        uuid=uuid.uuid4(),
        owner=owner,
        node=node,
        plan=plan,
        image=image,
        iso=iso,
        hostname="old-vm",
        state="running",
    )
    get("vms", "Operation").objects.create(
        vm=vm, user=owner, kind="create", status="succeeded", finished_at=now
    )
    get("vms", "VMUsage").objects.create(vm=vm, at=now, cpu_percent=12.5)
    get("vms", "NodeUsage").objects.create(node=node, at=now - dt.timedelta(seconds=10), running_vms=1)
    # The backoffice's history of the node points at its content type, which must follow the model.
    node_type = get("contenttypes", "ContentType").objects.get(app_label="vms", model="node")
    get("admin", "LogEntry").objects.create(
        user=operator,
        content_type=node_type,
        object_id=str(node.pk),
        object_repr="old-node",
        action_flag=1,
        change_message='[{"added": {}}]',
    )
    return vm.uuid


def _row_counts(apps_state) -> dict[str, int]:
    counts = {}
    with connection.cursor() as cursor:
        for label in PANEL_APPS:
            for model in apps_state.get_app_config(label).get_models(include_auto_created=True):
                table = model._meta.db_table
                cursor.execute(f"SELECT COUNT(*) FROM {connection.ops.quote_name(table)}")  # noqa: S608 (our table names)
                counts[table] = cursor.fetchone()[0]
    return counts


@pytest.mark.django_db(transaction=True)
def test_a_database_of_the_previous_release_migrates_in_place_with_every_row(client):
    latest = _latest()
    old = _migrate(BEFORE)
    try:
        vm_uuid = _fill_every_table(old)
        before = _row_counts(old)
        empty = [table for table, count in before.items() if count == 0]
        assert not empty, f"tables left empty, so the test would not see them move: {empty}"
    finally:
        _migrate(latest)

    # Every table still holds every row (the moved tables kept their names).
    with connection.cursor() as cursor:
        for table, count in before.items():
            cursor.execute(f"SELECT COUNT(*) FROM {connection.ops.quote_name(table)}")  # noqa: S608
            assert cursor.fetchone()[0] == count, table

    # ...and the models in their new apps read them, relations included.
    vm = VirtualMachine.objects.select_related("node", "image", "iso", "plan", "owner").get(uuid=vm_uuid)
    assert isinstance(vm.node, Node) and vm.node.name == "old-node"
    assert isinstance(vm.image, Image) and vm.image.name == "Old image"
    assert vm.iso.name == "Old ISO"
    assert ImagePlacement.objects.get(image=vm.image).node == vm.node
    assert list(vm.node.images.all()) == [vm.image]
    assert NodeUsage.objects.get(node=vm.node).running_vms == 1
    assert VMUsage.objects.get(vm=vm).cpu_percent == 12.5
    assert Operation.objects.get(vm=vm).kind == "create"
    assert ContentType.objects.get_for_model(Node).app_label == "nodes"
    assert not ContentType.objects.filter(app_label="vms", model__in=["node", "image"]).exists()

    # The pages serve the old rows: the customer's list and VM page, the backoffice's node and image.
    client.force_login(vm.owner)
    assert "old-vm" in client.get(reverse("vms:list")).content.decode()
    assert client.get(vm.get_absolute_url()).status_code == 200
    client.force_login(User.objects.get(username="operator"))
    node_page = client.get(reverse("admin:nodes_node_change", args=[vm.node.pk])).content.decode()
    assert "old-node" in node_page
    assert "Old image" in client.get(reverse("admin:images_image_changelist")).content.decode()
    history = client.get(reverse("admin:nodes_node_history", args=[vm.node.pk])).content.decode()
    assert "Added" in history  # the LogEntry written against vms.node now belongs to nodes.node
