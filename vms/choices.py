from django.db import models


class NodeStatus(models.TextChoices):
    ONLINE = "online", "Online"
    UNREACHABLE = "unreachable", "Unreachable"
    DISABLED = "disabled", "Disabled"


class VirtType(models.TextChoices):
    KVM = "kvm", "KVM (hardware)"
    QEMU = "qemu", "QEMU (emulation)"


class VMState(models.TextChoices):
    """The last known state. Only tasks and the node monitor write it."""

    PROVISIONING = "provisioning", "Provisioning"
    RUNNING = "running", "Running"
    STOPPED = "stopped", "Stopped"
    PAUSED = "paused", "Paused"
    CRASHED = "crashed", "Crashed"
    UNKNOWN = "unknown", "Unknown"
    MISSING = "missing", "Missing"  # the node has no domain for it (found by the reconcile)
    ERROR = "error", "Error"
    DELETED = "deleted", "Deleted"


class OperationKind(models.TextChoices):
    CREATE = "create", "Create"
    START = "start", "Start"
    SHUTDOWN = "shutdown", "Shut down"
    FORCE_OFF = "force_off", "Force off"
    REBOOT = "reboot", "Reboot"
    REINSTALL = "reinstall", "Reinstall"
    RESET_PASSWORD = "reset_password", "Reset password"
    CHANGE_ISO = "change_iso", "Change ISO"
    RESCUE = "rescue", "Rescue"
    LEAVE_RESCUE = "leave_rescue", "Leave rescue"
    RESIZE = "resize", "Resize"
    DELETE = "delete", "Delete"


class OperationStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


ACTIVE_OPERATION_STATUSES = (OperationStatus.QUEUED, OperationStatus.RUNNING)

# States a VM keeps whatever libvirt says: the panel, not libvirt, ends them.
PANEL_OWNED_STATES = (VMState.DELETED, VMState.PROVISIONING, VMState.ERROR)
