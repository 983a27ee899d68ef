from django.db import models


class NodeStatus(models.TextChoices):
    ONLINE = "online", "Online"
    UNREACHABLE = "unreachable", "Unreachable"
    DISABLED = "disabled", "Disabled"
    # Answers and keeps its VMs running (their customers see nothing change), but gets no new VM:
    # staff empty it (a drain) or work on it.
    MAINTENANCE = "maintenance", "Maintenance"


# Nodes that answer and whose VMs take changes: the monitor, the reconcile and image placement serve
# them; only ONLINE ones get new VMs.
SERVING_STATUSES = (NodeStatus.ONLINE, NodeStatus.MAINTENANCE)


class VirtType(models.TextChoices):
    KVM = "kvm", "KVM (hardware)"
    QEMU = "qemu", "QEMU (emulation)"


class NetworkMode(models.TextChoices):
    """How a node's VM NICs reach the world."""

    ISOLATED = "isolated", "Isolated (the panel's own libvirt network, no public addresses)"
    BRIDGED = "bridged", "Bridged (NICs join a host bridge)"
    ROUTED = "routed", "Routed (the host routes each VM's addresses to its tap)"
