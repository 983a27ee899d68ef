"""Maintenance, moves and drains as the panel decides them (the moves themselves, between two real
libvirtds, are in tests/integration/test_migration.py)."""

import shutil
import struct
import subprocess

import pytest
from django.db import transaction
from django.urls import reverse

from hypervisor.errors import OperationFailed
from hypervisor.migration import rebase_qcow2_header, retarget_domain_xml
from network import allocation
from network.models import Pool
from nodes.choices import NodeStatus
from vms import actions, draining
from vms.choices import OperationKind, OperationStatus, VMState
from vms.models import NetworkInterface, Operation, Snapshot
from vms.moving import as_on, hypervisor_xml

from .factories import make_image, make_node, make_plan, make_user, make_vm

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_nodes(db):
    return make_node(name="node-a", memory_mib=8192), make_node(name="node-b", memory_mib=8192)


@pytest.fixture
def image(two_nodes):
    return make_image(on=two_nodes)


@pytest.fixture
def vm(alice, two_nodes, image):
    return make_vm(alice, node=two_nodes[0], image=image, state=VMState.RUNNING)


def test_a_node_in_maintenance_gets_no_new_vms(alice, two_nodes, image, enqueued):
    first, second = two_nodes
    second.status = NodeStatus.MAINTENANCE
    second.save()
    made = [actions.create_vm(owner=alice, plan=make_plan(), image=image, hostname=f"m{n}") for n in range(3)]
    assert {vm.node for vm in made} == {first}
    first.status = NodeStatus.MAINTENANCE
    first.save()
    with pytest.raises(actions.ActionRefused, match="No hypervisor node is available"):
        actions.create_vm(owner=alice, plan=make_plan(), image=image, hostname="none")


def test_a_vm_on_a_node_in_maintenance_takes_its_customers_changes(alice, vm, enqueued):
    vm.node.status = NodeStatus.MAINTENANCE
    vm.node.save()
    operation = actions.request(vm, alice, OperationKind.REBOOT)
    assert operation.kind == "reboot"


def test_staff_move_a_vm_by_an_operation_naming_both_nodes(staff, vm, two_nodes, enqueued):
    operation = actions.migrate(vm, staff, two_nodes[1])
    assert operation.kind == OperationKind.MIGRATE and operation.user == staff
    assert operation.params == {"target_node_id": two_nodes[1].pk, "from_node_id": two_nodes[0].pk}
    assert enqueued == [] or enqueued == [operation]


def _set(node, **fields) -> None:
    type(node).objects.filter(pk=node.pk).update(**fields)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda vm, target: None, None),
        (lambda vm, target: setattr(vm, "node_id", target.pk), "already on"),
        (lambda vm, target: _set(target, status="maintenance"), "takes no"),
        (lambda vm, target: _set(target, network_problem="no br0"), "no br0"),
        (lambda vm, target: vm.image.placements.filter(node=target).delete(), "not on node"),
        (lambda vm, target: Snapshot.objects.create(vm=vm, name="s1", vm_state="stopped"), "snapshots"),
        (lambda vm, target: setattr(vm, "state", VMState.ERROR), "Only a running or stopped"),
        (lambda vm, to: _set(to, virt_type="kvm") or _set(vm.node, virt_type="qemu"), "stop it first"),
    ],
)  # fmt: skip
def test_a_move_is_refused_with_the_reason(staff, vm, two_nodes, enqueued, change, message):
    target = two_nodes[1]
    change(vm, target)
    target.refresh_from_db()
    vm.node.refresh_from_db()
    if message is None:
        actions.migrate(vm, staff, target)
        return
    with pytest.raises(actions.ActionRefused, match=message):
        actions.migrate(vm, staff, target)
    assert not Operation.objects.filter(kind=OperationKind.MIGRATE).exists()


def test_a_move_is_refused_when_no_pool_of_the_vms_addresses_reaches_the_target(
    staff, alice, image, enqueued
):
    source = make_node(name="bridged-a", network_mode="bridged", bridge="br0")
    target = make_node(name="bridged-b", network_mode="bridged", bridge="br0")
    image.placements.create(node=source, ready=True)
    image.placements.create(node=target, ready=True)
    pool = Pool(name="only-a", prefix="198.51.100.0/29", gateway="198.51.100.1")
    pool.full_clean()
    pool.save()
    pool.nodes.add(source)
    vm = make_vm(alice, node=source, image=image)
    with transaction.atomic():
        allocation.allocate(source, NetworkInterface.objects.create(vm=vm), 4)
    with pytest.raises(
        actions.ActionRefused, match=r"No address pool of .* reaches node bridged-b: 198\.51\.100\.2"
    ):
        actions.migrate(vm, staff, target)
    pool.nodes.add(target)  # the pool spans both nodes: the address follows the VM
    assert actions.migrate(vm, staff, target).kind == OperationKind.MIGRATE


def test_a_drain_moves_every_vm_a_few_at_a_time_each_by_its_own_operation(
    staff, alice, two_nodes, image, settings, enqueued, monkeypatch
):
    settings.KVMPANEL_DRAIN_PARALLEL = 2
    rung = []
    monkeypatch.setattr(draining, "ring", rung.append)
    source, target = two_nodes
    vms = [make_vm(alice, node=source, image=image, state=VMState.RUNNING) for _ in range(3)]
    draining.start(source, staff)
    source.refresh_from_db()
    assert source.status == NodeStatus.MAINTENANCE and source.draining
    first = draining.top_up(source)
    assert len(first) == 2 and all(op.params["target_node_id"] == target.pk for op in first)
    assert draining.top_up(source) == []  # two under way: no third yet
    # One move ends (as the worker records it): the next one is asked for.
    Operation.objects.filter(pk=first[0].pk).update(status=OperationStatus.SUCCEEDED)
    first[0].vm.__class__.objects.filter(pk=first[0].vm_id).update(node=target)
    second = draining.top_up(source)
    assert [op.vm_id for op in second] == [vms[2].pk]
    for op in (first[1], second[0]):
        Operation.objects.filter(pk=op.pk).update(status=OperationStatus.SUCCEEDED)
        op.vm.__class__.objects.filter(pk=op.vm_id).update(node=target)
    assert draining.top_up(source) == []
    source.refresh_from_db()
    assert not source.draining and source.status == NodeStatus.MAINTENANCE  # empty, still in maintenance


def test_a_drain_says_what_it_cannot_move_and_why(staff, alice, two_nodes, image, enqueued, monkeypatch):
    monkeypatch.setattr(draining, "ring", lambda node_id: None)
    source = two_nodes[0]
    make_vm(alice, node=source, image=image, state=VMState.ERROR, hostname="broken")
    big = make_vm(alice, node=source, image=image, plan=make_plan(memory_mib=65536), hostname="huge")
    draining.start(source, staff)
    assert draining.top_up(source) == []
    source.refresh_from_db()
    assert "broken: error, not movable" in source.drain_note
    assert f"{big.name}: no other node can take it" in source.drain_note
    assert source.draining  # tried again later (an operator may add a node meanwhile)


def test_a_node_out_of_maintenance_takes_new_vms_again_and_its_drain_stops(staff, two_nodes):
    source = two_nodes[0]
    draining.start(source, staff)
    draining.set_maintenance(source, staff, False)
    source.refresh_from_db()
    assert source.status == NodeStatus.ONLINE and not source.draining and source.takes_new_vms


def test_an_unreachable_node_cannot_go_in_maintenance(staff, two_nodes):
    source = two_nodes[0]
    source.status = NodeStatus.UNREACHABLE
    source.save()
    with pytest.raises(draining.DrainRefused, match="unreachable"):
        draining.start(source, staff)


def test_the_target_gets_the_sources_hardware_with_its_own_pool_nics_and_vnc_address(alice, image):
    source = make_node(
        name="src", pool_name="pool-a", network_mode="bridged", bridge="br-a", console_host="10.0.0.1"
    )
    target = make_node(
        name="dst", pool_name="pool-b", network_mode="bridged", bridge="br-b", console_host="10.0.0.2"
    )
    vm = make_vm(alice, node=source, image=image)
    NetworkInterface.objects.create(vm=vm)
    running = hypervisor_xml(vm).replace(
        "<devices>", "<devices><controller type='pci' index='0' model='pci-root'/>"
    )
    moved = retarget_domain_xml(running, hypervisor_xml(as_on(vm, target)))
    assert "pool-b" in moved and "pool-a" not in moved
    assert 'bridge="br-b"' in moved and "br-a" not in moved
    assert "10.0.0.2" in moved and "10.0.0.1" not in moved
    assert "pci-root" in moved  # the guest's hardware stays as it runs
    assert vm.vnc_password in moved
    assert vm.node == source  # as_on changes a copy only


@pytest.mark.skipif(not shutil.which("qemu-img"), reason="needs qemu-img")
def test_a_copied_overlay_names_the_targets_backing_image(tmp_path):
    base = tmp_path / "base.qcow2"
    overlay = tmp_path / "overlay.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(overlay)],
                   check=True)  # fmt: skip
    data = overlay.read_bytes()
    moved = tmp_path / "elsewhere" / "a-much-longer-directory-name" / "base.qcow2"
    moved.parent.mkdir(parents=True)
    shutil.copy(base, moved)
    overlay.write_bytes(rebase_qcow2_header(data[: 64 * 1024], str(moved)) + data[64 * 1024 :])
    info = subprocess.run(["qemu-img", "info", "--output=json", str(overlay)], capture_output=True, text=True)
    assert f'"backing-filename": "{moved}"' in info.stdout
    subprocess.run(["qemu-img", "check", "-q", str(overlay)], check=True)


def test_a_file_that_is_not_an_overlay_is_never_rewritten():
    with pytest.raises(OperationFailed, match="not a qcow2"):
        rebase_qcow2_header(b"\0" * 4096, "/x")
    header = b"QFI\xfb" + struct.pack(">IQIIQ", 3, 0, 0, 16, 0)
    with pytest.raises(OperationFailed, match="no backing"):
        rebase_qcow2_header(header.ljust(4096, b"\0"), "/x")


def test_the_monitor_leaves_a_moving_vms_state_to_its_operation(vm, staff, two_nodes, enqueued):
    from vms.models import VirtualMachine

    operation = actions.migrate(vm, staff, two_nodes[1])
    # The source says "paused" at the end of a live move: the operation, not the monitor, decides.
    assert not VirtualMachine.objects.set_state_if(vm.pk, expected=VMState.RUNNING, state=VMState.PAUSED)
    Operation.objects.filter(pk=operation.pk).update(status=OperationStatus.SUCCEEDED)
    assert VirtualMachine.objects.set_state_if(vm.pk, expected=VMState.RUNNING, state=VMState.PAUSED)


# --- the backoffice and the API ------------------------------------------------------------------


@pytest.fixture
def operator(db):
    return make_user("operator", is_staff=True, is_superuser=True)


@pytest.fixture
def as_operator(client, operator):
    client.force_login(operator)
    return client


def test_staff_move_a_vm_from_its_page_and_each_node_says_why_it_cannot_take_it(
    as_operator, vm, two_nodes, enqueued
):
    page = as_operator.get(reverse("admin:vms_virtualmachine_change", args=[vm.pk]))
    assert page.status_code == 200
    assert b'id="vm-migrate"' in page.content and b"node-b (online)" in page.content
    response = as_operator.post(reverse("admin:vms_vm_migrate", args=[vm.pk]), {"target": two_nodes[1].pk})
    assert response.status_code == 302
    operation = Operation.objects.get(kind=OperationKind.MIGRATE)
    assert operation.params["target_node_id"] == two_nodes[1].pk
    again = as_operator.post(
        reverse("admin:vms_vm_migrate", args=[vm.pk]), {"target": two_nodes[1].pk}, follow=True
    )
    assert b"still in progress" in again.content


def test_the_move_page_is_for_staff_only(client, alice, vm, two_nodes, enqueued):
    client.force_login(alice)
    response = client.post(reverse("admin:vms_vm_migrate", args=[vm.pk]), {"target": two_nodes[1].pk})
    assert response.status_code == 302 and "/login/" in response["Location"]
    assert not Operation.objects.exists()


def test_staff_drain_a_node_from_its_page_and_see_its_moves(
    as_operator, vm, two_nodes, enqueued, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(draining, "ring", lambda node_id: draining.top_up(two_nodes[0]))
    source = two_nodes[0]
    url = reverse("admin:nodes_node_change", args=[source.pk])
    assert b"Put in maintenance" in as_operator.get(url).content
    with django_capture_on_commit_callbacks(execute=True):
        response = as_operator.post(reverse("admin:nodes_node_maintenance", args=[source.pk, "drain"]))
    assert response.status_code == 302
    source.refresh_from_db()
    assert source.status == NodeStatus.MAINTENANCE and source.draining
    page = as_operator.get(url).content.decode()
    assert 'data-draining="yes"' in page and "node-a → node-b" in page and "Stop draining" in page
    as_operator.post(reverse("admin:nodes_node_maintenance", args=[source.pk, "off"]))
    source.refresh_from_db()
    assert source.status == NodeStatus.ONLINE and not source.draining


def test_a_get_changes_no_node(as_operator, two_nodes):
    as_operator.get(reverse("admin:nodes_node_maintenance", args=[two_nodes[0].pk, "on"]))
    two_nodes[0].refresh_from_db()
    assert two_nodes[0].status == NodeStatus.ONLINE


def test_staff_move_a_vm_and_drain_a_node_through_the_api(as_staff, vm, two_nodes, monkeypatch):
    monkeypatch.setattr(draining, "ring", lambda node_id: None)
    target = two_nodes[1]
    response = as_staff.post(
        f"/api/v1/admin/vms/{vm.uuid}/migrate/", {"target_node": target.pk}, format="json"
    )
    assert response.status_code == 202, response.content
    assert response.json()["kind"] == "migrate"
    refused = as_staff.post(
        f"/api/v1/admin/vms/{vm.uuid}/migrate/", {"target_node": vm.node_id}, format="json"
    )
    assert refused.status_code == 409 and "already" in refused.json()["error"]["message"]
    drained = as_staff.post(f"/api/v1/admin/nodes/{target.pk}/drain/")
    assert (
        drained.status_code == 202
        and drained.json()["status"] == "maintenance"
        and drained.json()["draining"]
    )
    back = as_staff.post(f"/api/v1/admin/nodes/{target.pk}/maintenance/", {"on": False}, format="json")
    assert back.json()["status"] == "online"


def test_customers_get_403_from_the_staff_move_and_drain(api_client, alice, vm, two_nodes):
    client = api_client(alice)
    assert (
        client.post(f"/api/v1/admin/vms/{vm.uuid}/migrate/", {"target_node": two_nodes[1].pk}).status_code
        == 403
    )
    assert client.post(f"/api/v1/admin/nodes/{two_nodes[0].pk}/drain/").status_code == 403
    assert not Operation.objects.exists()


def test_a_drain_does_not_try_again_a_move_that_failed_during_it(staff, vm, two_nodes, enqueued, monkeypatch):
    monkeypatch.setattr(draining, "ring", lambda node_id: None)
    source = two_nodes[0]
    draining.start(source, staff)
    [move] = draining.top_up(source)
    Operation.objects.filter(pk=move.pk).update(status=OperationStatus.FAILED, error="Read-only file system")
    assert draining.top_up(source) == []
    source.refresh_from_db()
    assert f"{vm.name}: its move failed: Read-only file system" in source.drain_note
    draining.start(source, staff)  # staff drain again once it is fixed: it is tried again
    assert len(draining.top_up(source)) == 1


def test_the_targets_running_definition_names_its_disks_by_path():
    from hypervisor.migration import volumes_as_files

    definition = (
        "<domain><devices><disk type='volume' device='disk'><source pool='p' volume='v.qcow2'/></disk>"
        "<disk type='volume' device='cdrom'><source pool='p' volume='seed.iso'/><readonly/></disk>"
        "</devices></domain>"
    )
    changed = volumes_as_files(definition, lambda pool, volume: f"/pools/{pool}/{volume}")
    assert changed.count('type="file"') == 2 and "pool=" not in changed
    assert 'file="/pools/p/v.qcow2"' in changed and 'file="/pools/p/seed.iso"' in changed


def test_a_vm_that_came_by_a_move_moves_on_with_the_next_nodes_files():
    """After a live move the VM runs with its disks named by path on that node; moving it again
    must name the next node's volumes, never the files of the node it leaves."""
    from hypervisor.migration import volumes_as_files

    running_here = (
        "<domain><devices>"
        "<disk type='file' device='disk'><source file='/pools/b/vm.qcow2' index='2'/>"
        "<backingStore type='file'><source file='/pools/b/image.qcow2'/></backingStore>"
        "<target dev='vda' bus='virtio'/></disk>"
        "<disk type='file' device='cdrom'><source file='/pools/b/vm-seed.iso'/><target dev='sda'/><readonly/>"
        "</disk></devices></domain>"
    )
    wanted_there = (
        "<domain><devices>"
        "<disk type='volume' device='disk'><source pool='a' volume='vm.qcow2'/><target dev='vda'/></disk>"
        "<disk type='volume' device='cdrom'><source pool='a' volume='vm-seed.iso'/><target dev='sda'/></disk>"
        "</devices></domain>"
    )
    moved = retarget_domain_xml(running_here, wanted_there)
    given = volumes_as_files(moved, lambda pool, volume: f"/pools/{pool}/{volume}")
    assert "/pools/b/" not in given and "backingStore" not in given
    assert 'file="/pools/a/vm.qcow2"' in given and 'file="/pools/a/vm-seed.iso"' in given
    assert 'index="2"' in given and "<readonly/>" in given  # the rest of the disk as it runs


def test_a_vm_moves_only_while_no_backup_reads_its_disk_and_a_queued_backup_waits_for_the_move(
    alice, staff, vm, two_nodes, enqueued, tmp_path, monkeypatch
):
    from backups import actions as backup_actions
    from backups import tasks as backup_tasks
    from backups.choices import BackupStatus
    from backups.models import Backup, BackupStore

    sent = []
    monkeypatch.setattr(
        backup_tasks.run_backup, "apply_async", lambda args, queue: sent.append((args[0], queue))
    )
    monkeypatch.setattr(backup_actions, "ring", lambda: None)
    store = BackupStore.objects.create(name="local", path=str(tmp_path / "repo"), is_default=True)
    source, target = two_nodes

    reading = backup_actions.start_backup(vm, alice)
    assert backup_tasks.start_queued() == 1 and sent == [(reading.pk, source.queue)]
    with pytest.raises(actions.ActionRefused, match=f"A backup of {vm.name} is running"):
        actions.migrate(vm, staff, target)
    assert not Operation.objects.filter(kind=OperationKind.MIGRATE).exists() and enqueued == []

    Backup.objects.filter(pk=reading.pk).update(status=BackupStatus.SUCCEEDED)
    waiting = Backup.objects.create(vm=vm, store=store, user=alice)  # queued by its schedule
    move = actions.migrate(vm, staff, target)
    assert backup_tasks.start_queued() == 0 and len(sent) == 1  # it waits while the VM moves

    Operation.objects.filter(pk=move.pk).update(status=OperationStatus.SUCCEEDED)
    vm.node = target
    vm.save(update_fields=["node"])
    assert backup_tasks.start_queued() == 1 and sent[-1] == (waiting.pk, target.queue)  # on its new node
