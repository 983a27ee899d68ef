"""First-run setup: the local node, demo plans, the demo image and the first admin.

Safe to run again: what exists is kept, and the admin's password is shown
only when the admin is created.
"""

import secrets
import socket
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from vms import hypervisor
from vms.images import install_image
from vms.models import Plan
from vms.nodes import register_node

DEMO_PLANS = [
    ("Nano", 1, 512, 4),
    ("Small", 1, 1024, 10),
    ("Medium", 2, 2048, 20),
]
DEMO_IMAGE = {"name": "Debian 12 (bookworm)", "volume_name": "image-debian-12-cloud.qcow2"}


class Command(BaseCommand):
    help = "Register this machine as a node, seed demo plans and image, create the first admin."

    def add_arguments(self, parser):
        parser.add_argument("--image", type=Path, help="Guest image (qcow2) to install as the demo OS.")
        parser.add_argument("--admin", default="admin", help="Username of the first admin.")

    def handle(self, *args, image: Path | None, admin: str, **options):
        node = self._register_local_node()
        self._seed_plans()
        if image:
            self._install_image(node, image)
        self._create_admin(admin)

    def _register_local_node(self):
        uri = settings.KVMPANEL_LOCAL_LIBVIRT_URI
        try:
            node = register_node(socket.gethostname(), uri)
        except hypervisor.HypervisorError as error:
            raise CommandError(f"libvirt at {uri} did not answer: {error}") from error
        self.stdout.write(
            f"node {node.name}: {uri}, {node.cpus} CPUs, {node.memory_mib} MiB, {node.virt_type}"
        )
        return node

    def _seed_plans(self):
        if Plan.objects.exists():
            return
        for name, vcpus, memory, disk in DEMO_PLANS:
            Plan.objects.create(name=name, vcpus=vcpus, memory_mib=memory, disk_gb=disk)
        self.stdout.write(f"plans: {', '.join(p[0] for p in DEMO_PLANS)}")

    def _install_image(self, node, path: Path):
        if not path.exists():
            raise CommandError(f"image file {path} does not exist")
        checksum_file = path.with_name(path.name + ".sha256")
        checksum = checksum_file.read_text().split()[0] if checksum_file.exists() else ""
        image = install_image(
            node, path, checksum=checksum, min_disk_gb=2, default_user="debian", **DEMO_IMAGE
        )
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
