from django import template

from kvmpanel.units import gib, traffic

register = template.Library()

_STATE_CLASSES = {
    "running": "text-bg-success",
    "stopped": "text-bg-secondary",
    "provisioning": "text-bg-info",
    "paused": "text-bg-warning",
    "crashed": "text-bg-danger",
    "error": "text-bg-danger",
    "unknown": "text-bg-dark",
    "missing": "text-bg-danger",
    "deleted": "text-bg-light",
}
_OPERATION_CLASSES = {
    "queued": "text-bg-light border",
    "running": "text-bg-info",
    "succeeded": "text-bg-success",
    "failed": "text-bg-danger",
    "cancelled": "text-bg-warning",
}


@register.filter
def state_class(state: str) -> str:
    return _STATE_CLASSES.get(state, "text-bg-secondary")


@register.filter
def operation_class(status: str) -> str:
    return _OPERATION_CLASSES.get(status, "text-bg-secondary")


_PROGRESS = {
    "create": "Creating…",
    "start": "Starting…",
    "shutdown": "Shutting down…",
    "force_off": "Powering off…",
    "reboot": "Rebooting…",
    "reinstall": "Reinstalling…",
    "reset_password": "Setting password…",
    "change_iso": "Changing the ISO…",
    "rescue": "Starting rescue…",
    "leave_rescue": "Leaving rescue…",
    "snapshot": "Taking a snapshot…",
    "revert_snapshot": "Reverting…",
    "delete_snapshot": "Deleting a snapshot…",
    "restore": "Restoring…",
    "change_addresses": "Changing addresses…",
    "firewall": "Applying the firewall…",
    "delete": "Deleting…",
}


@register.filter
def progress_label(kind: str) -> str:
    """What the state badge says while an operation of `kind` runs."""
    return _PROGRESS.get(kind, "Working…")


register.filter("gib", gib)
register.filter("bytes", traffic)
