"""Ready: "running" is libvirt's word, "ready" the guest's; actions that need the guest wait for it.
The VM's addresses go with it through reinstall and rescue, and come back when it is deleted."""

import io

import pycdlib
import pytest
import yaml
from django.urls import reverse

from accounts.models import AuditEntry
from network.choices import AddressStatus
from vms import actions, networking, provisioning, readiness

from .factories import make_image, make_node, make_user, make_vm
from .test_guest_network import make_pools, vm_with_addresses

PASSWORD = "correct-horse-battery-9"


@pytest.fixture
def booting_vm(db):
    return make_vm(make_user("alice"), ready_at=None)  # running, cloud-init image, first boot not done


def test_a_running_vm_is_booting_until_its_first_boot_has_finished(booting_vm):
    assert booting_vm.is_booting
    readiness.mark_ready(booting_vm)
    booting_vm.refresh_from_db()
    assert booting_vm.ready_at is not None and not booting_vm.is_booting


def test_images_without_cloud_init_are_never_watched(db):
    vm = make_vm(make_user("alice"), ready_at=None, image=make_image(cloud_init=False))
    assert not vm.is_booting


@pytest.mark.parametrize("ask", [
    lambda vm: actions.reset_password(vm, vm.owner, PASSWORD),
    lambda vm: actions.request(vm, vm.owner, "shutdown"),
])  # fmt: skip
def test_actions_that_need_the_guest_say_they_come_once_it_is_ready(booting_vm, ask):
    with pytest.raises(actions.ActionRefused, match="offered once it is ready"):
        ask(booting_vm)
    assert not booting_vm.operations.exists()
    assert AuditEntry.objects.filter(outcome="refused", detail__contains="once it is ready").exists()


def test_force_off_works_while_it_boots(booting_vm, enqueued):
    assert actions.request(booting_vm, booting_vm.owner, "force_off").kind == "force_off"


def test_the_pages_show_booting_and_offer_guest_actions_later(client, booting_vm):
    client.force_login(booting_vm.owner)
    page = client.get(reverse("vms:detail", args=[booting_vm.uuid])).content.decode()
    assert 'data-ready="no"' in page and "Booting" in page
    assert "offered once it is ready" in page
    listing = client.get(reverse("vms:list")).content.decode()
    assert 'data-ready="no"' in listing


def test_the_api_shows_addresses_and_whether_it_boots(db, api_client):
    vm, _nic = vm_with_addresses_on(make_node(network_mode="bridged", bridge="br0"))
    data = api_client(vm.owner).get(f"/api/v1/vms/{vm.uuid}/").json()
    assert [a["cidr"] for a in data["addresses"]] == ["198.51.100.2/32", "2001:db8:15::2/128"]
    assert data["booting"] is False and data["ready_at"]


def vm_with_addresses_on(node):
    make_pools(node)
    return vm_with_addresses(node)


class RecordingNode:
    """Stands in for the hypervisor door where only uploads matter: keeps what was uploaded."""

    def __init__(self):
        self.uploads = {}

    def upload_bytes(self, pool, name, data):
        self.uploads[name] = data

    def delete_volume(self, pool, name):
        self.uploads.pop(name, None)


def network_config_in(seed: bytes) -> dict:
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(seed))
    out = io.BytesIO()
    iso.get_file_from_iso_fp(out, rr_path="/network-config")
    return yaml.safe_load(out.getvalue())


def test_reinstall_and_rescue_seeds_carry_the_vms_addresses(db):
    vm, nic = vm_with_addresses_on(make_node(network_mode="bridged", bridge="br0"))
    node = RecordingNode()
    provisioning.make_seed(node, vm, {})  # what a reinstall writes, with a new instance id
    rescue_image = make_image(rescue=True)
    provisioning.make_rescue_seed(node, vm, rescue_image, {})
    for volume in (vm.seed_volume, vm.rescue_seed_volume):
        ethernet = network_config_in(node.uploads[volume])["ethernets"]["eth0"]
        assert ethernet["match"]["macaddress"] == nic.mac
        assert ethernet["addresses"] == ["198.51.100.2/25", "2001:db8:15::2/64"]


def test_a_deleted_vms_addresses_cool_down_and_the_release_is_audited(db):
    vm, _nic = vm_with_addresses_on(make_node(network_mode="bridged", bridge="br0"))
    held = list(vm.addresses())
    released = networking.release_all(vm)
    assert {a.pk for a in released} == {a.pk for a in held}
    for address in held:
        address.refresh_from_db()
        assert address.status == AddressStatus.COOLING and address.cooling_until
    assert AuditEntry.objects.get(action="address.release").detail == "198.51.100.2/32, 2001:db8:15::2/128"
