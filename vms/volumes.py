"""Which VM uses a volume of the pools: answered for the image library before it removes one
(images.signals.volume_users), so no image removal ever takes a VM's disk, seed, ISO or rescue system."""

import re
import uuid

from django.conf import settings
from django.db.models import Q
from django.dispatch import receiver

from images.signals import volume_users

from .models import VirtualMachine

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@receiver(volume_users)
def vms_using_volume(sender, volume_name: str, **kwargs) -> list[str]:
    return [*_vms_whose_volume_it_is(volume_name), *_vms_booting_from(volume_name)]


def _vms_whose_volume_it_is(volume_name: str) -> list[str]:
    """A VM's own volumes are named after its domain (models.VirtualMachine.disk_volume and the rest)."""
    rest = volume_name.removeprefix(settings.KVMPANEL_DOMAIN_PREFIX)
    found = _UUID.match(rest)
    if found is None:
        return []
    vm = VirtualMachine.objects.live().filter(uuid=uuid.UUID(found[0])).first()
    if vm is None:
        return []
    own = {
        vm.disk_volume: "the disk",
        vm.seed_volume: "the first-boot seed",
        vm.rescue_volume: "the rescue disk",
        vm.rescue_seed_volume: "the rescue seed",
    }
    return [f"{own[volume_name]} of VM {vm}"] if volume_name in own else []


def _vms_booting_from(volume_name: str) -> list[str]:
    """VMs whose disk is made from it (an overlay's backing file), or that hold it as ISO or rescue system."""
    uses = (
        Q(image__volume_name=volume_name)
        | Q(iso__volume_name=volume_name)
        | Q(rescue_image__volume_name=volume_name)
    )
    return [f"VM {vm}" for vm in VirtualMachine.objects.live().filter(uses).only("hostname", "display_name")]
