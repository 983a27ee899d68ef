"""First-run setup: the local node, demo plans, the demo image and the first admin.

Safe to run again: what exists is kept, and the admin's password is shown
only when the admin is created. The production install (scripts/install.sh)
seeds no demo plans, and registers this machine only when asked.
"""

import argparse
import secrets
import socket
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

import hypervisor
from images.placement import install_image
from network.models import Pool
from nodes.choices import NetworkMode
from nodes.models import Node
from nodes.registration import NetworkCheckFailed, bridge_name, register_node
from vms.models import Plan

DEMO_PLANS = [
    ("Nano", 1, 512, 4),
    ("Small", 1, 1024, 10),
    ("Medium", 2, 2048, 20),
]
DEMO_IMAGE = {"name": "Debian 12 (bookworm)", "volume_name": "image-debian-12-cloud.qcow2"}
# A second build of the same recipe (its root file system has a UUID of its own), offered for rescue.
RESCUE_IMAGE = {
    "name": "Rescue system (Debian 12)",
    "volume_name": "image-debian-12-rescue.qcow2",
    "rescue": True,
}
# The demo's public addresses: documentation prefixes on the panel's own isolated bridge, so nothing
# outside this machine can reach them (or be reached). For real use, see the README's "Networking".
DEMO_POOLS = [
    {
        "name": "demo-ipv4",
        "prefix": "198.51.100.0/24",
        "gateway": "198.51.100.1",
        "first_address": "198.51.100.10",
        "last_address": "198.51.100.250",
    },
    {
        "name": "demo-ipv6",
        "prefix": "2001:db8:100::/64",
        "gateway": "2001:db8:100::1",
        "assign_prefix_length": 128,
    },
]


class Command(BaseCommand):
    help = "Register this machine as a node, seed demo plans and image, create the first admin."

    def add_arguments(self, parser):
        parser.add_argument("--image", type=Path, help="Guest image (qcow2) to install as the demo OS.")
        parser.add_argument(
            "--rescue-image", type=Path, help="A second build of the guest image, offered as rescue system."
        )
        parser.add_argument("--admin", default="admin", help="Username of the first admin.")
        parser.add_argument(
            "--local-node",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="Register this machine's libvirtd (LIBVIRT_URI) as a node.",
        )
        parser.add_argument(
            "--demo-plans",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="Seed three small plans when there are none.",
        )

    def handle(
        self,
        *args,
        image: Path | None,
        rescue_image: Path | None,
        admin: str,
        local_node: bool,
        demo_plans: bool,
        **options,
    ):
        if (image or rescue_image) and not local_node:
            raise CommandError(
                "--image and --rescue-image go into the local node's pool: they need --local-node"
            )
        node = self._register_local_node() if local_node else None
        if node is not None:
            self._seed_pools(node)
        if demo_plans:
            self._seed_plans()
        if image:
            self._install_image(node, image, DEMO_IMAGE)
        if rescue_image:
            self._install_image(node, rescue_image, RESCUE_IMAGE)
        self._create_admin(admin)

    def _register_local_node(self):
        uri = settings.KVMPANEL_LOCAL_LIBVIRT_URI
        # A first run bridges the demo's VMs onto the panel's isolated network (its bridge has no uplink);
        # later runs keep whatever mode the operator has set since.
        first_run = not Node.objects.filter(uri=uri).exists()
        network = {"network_mode": NetworkMode.BRIDGED, "bridge": bridge_name(settings.KVMPANEL_NETWORK_NAME)}
        try:
            node = register_node(socket.gethostname(), uri, **(network if first_run else {}))
        except NetworkCheckFailed as problem:
            raise CommandError(f"node at {uri} cannot carry its network mode: {problem}") from problem
        except hypervisor.HypervisorError as error:
            raise CommandError(f"libvirt at {uri} did not answer: {error}") from error
        self.stdout.write(
            f"node {node.name}: {uri}, {node.cpus} CPUs, {node.memory_mib} MiB, {node.virt_type}"
        )
        return node

    def _seed_pools(self, node):
        if Pool.objects.exists():
            return
        for fields in DEMO_POOLS:
            pool = Pool(**fields)
            pool.full_clean()
            pool.save()
            pool.nodes.add(node)
        self.stdout.write(
            f"address pools: {', '.join(p['prefix'] for p in DEMO_POOLS)} (demo, isolated bridge)"
        )

    def _seed_plans(self):
        if Plan.objects.exists():
            return
        for name, vcpus, memory, disk in DEMO_PLANS:
            Plan.objects.create(name=name, vcpus=vcpus, memory_mib=memory, disk_gb=disk)
        self.stdout.write(f"plans: {', '.join(p[0] for p in DEMO_PLANS)}")

    def _install_image(self, node, path: Path, fields: dict):
        if not path.exists():
            raise CommandError(f"image file {path} does not exist")
        checksum_file = path.with_name(path.name + ".sha256")
        checksum = checksum_file.read_text().split()[0] if checksum_file.exists() else ""
        image = install_image(node, path, checksum=checksum, min_disk_gb=2, default_user="debian", **fields)
        self.stdout.write(f"image: {image.name} in pool {node.pool_name}")

    def _create_admin(self, username: str):
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            self.stdout.write(
                "admin: exists (its password was shown when it was made; "
                "'manage.py changepassword' sets a new one)"
            )
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email="", password=password)
        self.stdout.write(
            self.style.SUCCESS(
                f"\n  Admin created. Sign in as '{username}' with password:\n\n      {password}\n\n"
                "  It is shown only this once. At the first sign-in the panel asks you to set up\n"
                "  two-factor sign-in (an authenticator app), as it does for every staff account.\n"
            )
        )
