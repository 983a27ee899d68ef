"""Suspending an account: it can no longer sign in or use the API, and its VMs are stopped and kept.

Staff suspend from the backoffice or the API; both call these functions. The
account's `is_active` goes off too, so Django's authentication refuses its
password, its open sessions and its API tokens everywhere at once. VMs get a
clean shutdown now (vms/suspension.py, told by the account_suspended signal); any
still running later (an operation was in progress, or the guest ignored the power
button) is forced off by the periodic reconcile.
"""

from django.db import transaction
from django.utils import timezone

from . import audit
from .signals import account_suspended


class SuspensionRefused(Exception):
    """The request makes no sense (e.g. suspending yourself); the message is for the operator."""


def suspend(user, *, by, reason: str = "") -> int:
    """Suspend `user` and ask for each of their running VMs to be stopped; the number asked."""
    if user.pk == by.pk:
        raise SuspensionRefused("You cannot suspend your own account.")
    if user.is_superuser and not by.is_superuser:
        raise SuspensionRefused("Only a superuser can suspend a superuser.")
    with transaction.atomic():
        user.suspended_at = timezone.now()
        user.suspension_reason = reason[:200]
        user.is_active = False
        user.save(update_fields=["suspended_at", "suspension_reason", "is_active"])
        audit.record("account.suspend", user, outcome="succeeded", owner=user, actor=by, detail=reason)
    # The VMs app listens and asks for each running VM to be stopped; each listener answers how many.
    answers = account_suspended.send(sender=type(user), user=user, by=by)
    return sum(stopping for _receiver, stopping in answers)


def unsuspend(user, *, by) -> None:
    """Let `user` sign in again. Their VMs stay stopped until they start them."""
    user.suspended_at = None
    user.suspension_reason = ""
    user.is_active = True
    user.save(update_fields=["suspended_at", "suspension_reason", "is_active"])
    audit.record("account.unsuspend", user, outcome="succeeded", owner=user, actor=by)
