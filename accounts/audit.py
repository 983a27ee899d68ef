"""The audit log: who changed what, when, from where, and how it ended.

Pages and actions call `record()`; the request being served (kept by
AuditMiddleware) supplies the actor and the address, so domain functions need
no request parameter. Tasks record outcomes with the operation's user and no
address. Entries are never edited: not in the portal, not in the backoffice.
"""

import contextvars
import logging

from django.contrib.auth import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

log = logging.getLogger(__name__)

_current_request = contextvars.ContextVar("audit_request", default=None)


class AuditMiddleware:
    """Keeps the request for record() while it is served."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = _current_request.set(request)
        try:
            return self.get_response(request)
        finally:
            _current_request.reset(token)


def client_address(request) -> str | None:
    # REMOTE_ADDR only: behind deploy/nginx/kvmpanel.conf, daphne (--proxy-headers) takes it from
    # the X-Forwarded-For that nginx sets; headers a client can set itself are not trusted.
    return request.META.get("REMOTE_ADDR") or None


def record(action: str, target=None, *, outcome: str = "requested", detail: str = "", owner=None, actor=None):
    """Write one entry. `target` is any model instance (a VM, an SSH key, a user); its owner sees it."""
    from .models import AuditEntry

    request = _current_request.get()
    if actor is None and request is not None and getattr(request, "user", None) is not None:
        actor = request.user if request.user.is_authenticated else None
    if owner is None and target is not None:
        owner = getattr(target, "owner", None) or getattr(target, "user", None)
    return AuditEntry.objects.create(
        actor=actor,
        actor_name=actor.get_username() if actor else "system",
        action=action,
        **_target_fields(target),
        owner=owner,
        address=client_address(request) if request is not None else None,
        outcome=outcome,
        detail=detail[:2000],
    )


def _target_fields(target) -> dict:
    if target is None:
        return {}
    identity = getattr(target, "uuid", None) or target.pk
    return {
        "target_type": target._meta.label_lower,
        "target_id": str(identity or ""),
        "target_label": str(target)[:200],
    }


@receiver(user_logged_in)
def _logged_in(sender, request, user, **kwargs):
    record("account.login", user, outcome="succeeded", owner=user, actor=user)


@receiver(user_logged_out)
def _logged_out(sender, request, user, **kwargs):
    if user is not None:
        record("account.logout", user, outcome="succeeded", owner=user, actor=user)


@receiver(user_login_failed)
def _login_failed(sender, credentials, request=None, **kwargs):
    from .models import User

    # Only for an account that exists: its owner should see attempts on it.
    user = User.objects.filter(username=credentials.get("username", "")).first()
    if user is not None:
        record("account.login", user, outcome="refused", owner=user, actor=None, detail="wrong password")
