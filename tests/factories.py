"""Hand-written factories: small functions with sensible defaults."""

import itertools

from accounts.models import User
from vms.choices import VMState
from vms.models import Image, ImagePlacement, Node, Plan, VirtualMachine

_numbers = itertools.count(1)


def make_user(username: str, **fields) -> User:
    return User.objects.create_user(username=username, password=f"{username}-pass-123", **fields)


def make_node(**fields) -> Node:
    n = next(_numbers)
    defaults = {
        "name": f"node-{n}",
        "uri": f"test:///node-{n}.xml",
        "virt_type": "qemu",
        "pool_name": "test-pool",
        "network_name": "test-net",
        "memory_mib": 8192,
        "cpus": 4,
    }
    return Node.objects.create(**{**defaults, **fields})


def make_plan(**fields) -> Plan:
    n = next(_numbers)
    defaults = {"name": f"plan-{n}", "vcpus": 1, "memory_mib": 512, "disk_gb": 4}
    return Plan.objects.create(**{**defaults, **fields})


def make_image(*, on=(), **fields) -> Image:
    """An image, recorded as ready in the pools of the nodes `on`."""
    n = next(_numbers)
    defaults = {"name": f"image-{n}", "volume_name": f"image-{n}.qcow2", "min_disk_gb": 2}
    image = Image.objects.create(**{**defaults, **fields})
    for node in on:
        # update_or_create: a real worker's image sync may have recorded it a moment ago (integration tests).
        ImagePlacement.objects.update_or_create(image=image, node=node, defaults={"ready": True})
    return image


def make_vm(owner: User, node: Node | None = None, **fields) -> VirtualMachine:
    defaults = {
        "node": node or make_node(),
        "plan": fields.pop("plan", None) or make_plan(),
        "image": fields.pop("image", None) or make_image(),
        "hostname": f"vm-{next(_numbers)}",
        "state": VMState.RUNNING,
    }
    return VirtualMachine.objects.create(owner=owner, **{**defaults, **fields})
