"""A suspended customer's VMs are stopped and kept (accounts.suspension tells us by a signal)."""

from django.dispatch import receiver

from accounts.signals import account_suspended

from . import actions
from .choices import OperationKind, VMState

# A VM in these states still uses the host and must be stopped.
STOP_BY_STATE = {
    VMState.RUNNING: OperationKind.SHUTDOWN,
    VMState.PAUSED: OperationKind.FORCE_OFF,
    VMState.CRASHED: OperationKind.FORCE_OFF,
}


@receiver(account_suspended)
def stop_vms_of_suspended(sender, user, by, **kwargs) -> int:
    return stop_vms_of(user, by=by)


def stop_vms_of(user, *, by=None) -> int:
    """Ask for every running (or paused, or crashed) VM of `user` to be stopped; the number asked."""
    asked = 0
    for vm in user.vms.live().filter(state__in=STOP_BY_STATE).select_related("node"):
        try:
            actions.request(vm, by, STOP_BY_STATE[vm.state])
        except actions.ActionRefused:
            continue  # an operation is running or the node is away: the reconcile stops it later
        asked += 1
    return asked
