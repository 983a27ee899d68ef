"""VM disks on the real libvirtd: a copy-on-write overlay, or a full copy, grown to the plan's size."""

import json
import subprocess

import pytest

import hypervisor
from vms import provisioning

from ..factories import make_plan, make_vm

pytestmark = pytest.mark.integration


def qemu_img_info(path: str) -> dict:
    return json.loads(
        subprocess.run(
            ["qemu-img", "info", "-U", "--output=json", path], capture_output=True, check=True
        ).stdout
    )


@pytest.mark.parametrize("full_copy", [False, True], ids=["overlay", "full copy"])
def test_a_vm_disk_is_made_from_its_image_at_the_plans_size(node, customer, demo_image, full_copy):
    plan = make_plan(disk_gb=6, full_copy=full_copy)
    vm = make_vm(customer, node=node, plan=plan, image=demo_image)
    with hypervisor.connect(node.uri) as session:
        provisioning.make_disk(session, vm)
        path = session.volume_path(node.pool_name, vm.disk_volume)
        image_path = session.volume_path(node.pool_name, demo_image.volume_name)
    info = qemu_img_info(path)
    try:
        assert info["format"] == "qcow2" and info["virtual-size"] == plan.disk_bytes
        if full_copy:
            assert "backing-filename" not in info  # independent of the image from now on
            assert info["actual-size"] > 50 * 1024**2  # the image's data is really there
        else:
            assert info["backing-filename"] == image_path  # instant: reads through to the image
            assert info["actual-size"] < 5 * 1024**2
    finally:
        with hypervisor.connect(node.uri) as session:
            session.delete_volume(node.pool_name, vm.disk_volume)


def test_a_resize_grows_the_disk_and_never_shrinks_it(node, customer, demo_image):
    vm = make_vm(customer, node=node, plan=make_plan(disk_gb=6), image=demo_image)
    with hypervisor.connect(node.uri) as session:
        provisioning.make_disk(session, vm)
        path = session.volume_path(node.pool_name, vm.disk_volume)
        try:
            session.grow_volume(node.pool_name, vm.disk_volume, 9 * 1024**3)
            assert qemu_img_info(path)["virtual-size"] == 9 * 1024**3
            session.grow_volume(node.pool_name, vm.disk_volume, 7 * 1024**3)  # smaller: left alone
            info = qemu_img_info(path)
            assert info["virtual-size"] == 9 * 1024**3
            assert info["backing-filename"]  # still the overlay on its image: the data is kept
        finally:
            session.delete_volume(node.pool_name, vm.disk_volume)
