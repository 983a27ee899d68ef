"""A VM's page follows its addresses' reverse DNS: published, or waiting for PowerDNS (network/rdns.py)."""

from django.dispatch import receiver

from network.signals import ptr_changed

from .live import publish_vm_changed
from .models import VirtualMachine


@receiver(ptr_changed, dispatch_uid="vms.ptr_changed")
def refresh_the_vms_page(sender, address, **kwargs) -> None:
    vm = VirtualMachine.objects.filter(interfaces__pk=address.assigned_object_id).first()
    if vm is not None and address.assigned_object_id is not None:
        publish_vm_changed(vm)
