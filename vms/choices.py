from django.db import models


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
    SNAPSHOT = "snapshot", "Take snapshot"
    REVERT_SNAPSHOT = "revert_snapshot", "Revert to snapshot"
    DELETE_SNAPSHOT = "delete_snapshot", "Delete snapshot"
    RESTORE = "restore", "Restore backup"
    CHANGE_ADDRESSES = "change_addresses", "Change addresses"
    FIREWALL = "firewall", "Apply firewall"
    MIGRATE = "migrate", "Migrate"
    DELETE = "delete", "Delete"


class OperationStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"  # by staff; what it had made is taken back


ACTIVE_OPERATION_STATUSES = (OperationStatus.QUEUED, OperationStatus.RUNNING)

# States a VM keeps whatever libvirt says: the panel, not libvirt, ends them.
PANEL_OWNED_STATES = (VMState.DELETED, VMState.PROVISIONING, VMState.ERROR)


def operation_task_name(kind: str) -> str:
    """The Celery task that runs operations of `kind` (vms/tasks.py registers one per kind)."""
    return f"vms.tasks.{kind}_vm"
