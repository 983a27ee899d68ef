"""A small world for the API tests: the cast, their tokens, and objects of alice's to aim at."""

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from accounts import suspension
from accounts.models import SSHKey
from accounts.sshkeys import parse_public_key
from backups.models import Backup, BackupStore
from images.models import Image
from network import allocation
from network.models import Pool
from vms.choices import OperationStatus, VMState
from vms.models import NetworkInterface, Operation, Snapshot

from .factories import make_image, make_node, make_plan, make_user, make_vm

PASSWORD = "correct-horse-battery-9"


def public_key_line(comment: str = "laptop") -> str:
    blob = (
        ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH)
    )
    return f"{blob.decode()} {comment}"


def add_key(user, name: str = "laptop") -> SSHKey:
    parsed = parse_public_key(public_key_line(name))
    return SSHKey.objects.create(
        user=user, name=name, public_key=parsed.public_key, fingerprint=parsed.fingerprint
    )


@dataclass
class World:
    node: object
    plan: object
    spare_plan: object
    image: object
    spare_image: object
    iso: object
    rescue_image: object
    vm: object
    key: object
    operation: object
    suspended: object
    address: object
    snapshot: object = None
    store: object = None
    backup: object = None


def make_world(alice, staff) -> World:
    node = make_node()
    plan = make_plan(name="small")
    image = make_image(name="debian-12", on=(node,))
    vm = make_vm(alice, node=node, plan=plan, image=image, hostname="web", state=VMState.RUNNING)
    operation = Operation.objects.create(vm=vm, user=alice, kind="start", status=OperationStatus.SUCCEEDED)
    suspended = make_user("carol")
    pool = Pool.objects.create(name="public", prefix="198.51.100.0/24", gateway="198.51.100.1")
    pool.nodes.add(node)
    address = allocation.allocate(node, NetworkInterface.objects.create(vm=vm), 4)
    world = World(
        node=node,
        plan=plan,
        spare_plan=make_plan(name="unused"),
        image=image,
        spare_image=make_image(name="unused-image"),
        iso=make_image(name="installer", format=Image.Format.ISO, on=(node,)),
        rescue_image=make_image(name="rescue", rescue=True, on=(node,)),
        vm=vm,
        key=add_key(alice),
        operation=operation,
        suspended=suspended,
        address=address,
    )
    world.snapshot = Snapshot.objects.create(vm=vm, name="snap-1", vm_state=VMState.RUNNING)
    world.store = BackupStore.objects.create(name="store", path="/var/backups/kvmpanel", is_default=True)
    world.backup = Backup.objects.create(
        vm=vm, store=world.store, status="succeeded", disk_bytes=1, restic_id="ab"
    )
    return world


def suspend(user, staff) -> None:
    suspension.suspend(user, by=staff, reason="test")
