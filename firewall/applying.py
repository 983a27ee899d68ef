"""Putting a VM's firewall on its node: the work of the `firewall` operation (run by
vms.tasks.run_operation), and the firewall's part of every definition of the VM's filter."""

from django.dispatch import receiver

import hypervisor
from vms import provisioning
from vms.models import Operation, VirtualMachine
from vms.signals import firewall_wanted

from .models import Firewall


@receiver(firewall_wanted)
def firewall_of(sender, vm: VirtualMachine, **kwargs) -> hypervisor.FirewallSpec | None:
    """The VM's firewall as its filter carries it (create, reinstall, rescue and address changes
    define the filter too, and keep the rules). None for a VM that never had one: all traffic in."""
    firewall = Firewall.objects.filter(vm=vm).prefetch_related("rules").first()
    return firewall.spec() if firewall else None


def apply(node: hypervisor.NodeSession, vm: VirtualMachine, _operation: Operation) -> str:
    """Define the VM's filter again from the rows. libvirt applies a changed filter to the NICs that
    refer to it at once: a running VM changes without a restart, a stopped one starts with it.
    Defining the same filter twice ends the same way, so a retried task is harmless."""
    provisioning.apply_filter(node, vm)
    return node.power_state(vm.domain_name) if node.domain_exists(vm.domain_name) else vm.state
