"""Choosing the virtualization type for a node."""

from pathlib import Path

from .specs import NodeInfo

# Markers of a nested hypervisor on which Linux guests hang under KVM
# (kernels stop while decompressing). On such hosts guests must be emulated.
NESTED_KVM_MARKERS = ("/sys/module/kvm_pvm",)


def detect_virt_type(info: NodeInfo, override: str = "auto", local: bool = True) -> str:
    """'kvm' where hardware acceleration works, else 'qemu' (software emulation).

    `override` ("kvm"/"qemu") wins; "auto" asks libvirt's capabilities and, for
    the local machine, whether KVM is itself a nested hypervisor known to hang guests.
    """
    if override in ("kvm", "qemu"):
        return override
    if "kvm" not in info.domain_types:
        return "qemu"
    if local and any(Path(marker).exists() for marker in NESTED_KVM_MARKERS):
        return "qemu"
    return "kvm"
