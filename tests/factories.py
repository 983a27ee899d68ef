"""Hand-written factories: small functions with sensible defaults."""

import datetime as dt
import itertools
import threading
from collections.abc import Callable

from django.db import connection
from django.utils import timezone

from accounts.models import User
from images.models import Image, ImagePlacement
from nodes.models import Node
from vms.choices import VMState
from vms.models import Plan, VirtualMachine

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
        "ready_at": timezone.now(),  # past its first boot, unless a test says otherwise
    }
    return VirtualMachine.objects.create(owner=owner, **{**defaults, **fields})


def make_token(user: User, scope: str = "write", **fields) -> str:
    """A new API token of `user`, in clear. Staff tokens need two-factor on and a short expiry
    (api.tokens.check_staff_token): a staff user gets both here."""
    from api import tokens

    if user.is_staff:
        if not user.two_factor_enabled:
            user.two_factor_enabled = True
            user.save(update_fields=["two_factor_enabled"])
        fields.setdefault("expires_at", timezone.now() + dt.timedelta(days=1))
    _token, clear_text = tokens.create(user, name=fields.pop("name", "test"), scope=scope, **fields)
    return clear_text


def run_together(count: int, work: Callable[[int], str]) -> list[str]:
    """`work(n)` for n in range(count), in threads that start at the same moment (a race on purpose).

    Returns what each returned, or the repr of what it raised. Each thread closes its own database
    connection. Needs a transactional test (django_db(transaction=True)).
    """
    start = threading.Barrier(count)
    outcomes: list[str] = []

    def run(n: int) -> None:
        try:
            start.wait()
            outcomes.append(work(n))
        except Exception as error:
            outcomes.append(str(error) or repr(error))
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return outcomes
