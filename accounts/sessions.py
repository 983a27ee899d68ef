"""Sessions outside the page requests: who a websocket's or the VNC bridge's session is, and ending
open sockets when their session ends.

Pages get the user from Django's middleware (with TwoFactorMiddleware's rule). The serial console and
live websockets (vms/consumers.py) and the VNC bridge (vms/consoles/bridge.py) read the session
themselves, and ask here, by the very same rules: the session must exist, its hash must match the
user's (a password change or a two-factor change ends the others), the user must be active (not
suspended), and must not owe the second factor (accounts.twofactor.owes_second_factor).

An open socket outlives the request that opened it, so it must hear when its session may have ended:
every socket of a user joins the Channels group `user_group(id)`, and this module tells that group
on sign-out, and whenever what a session depends on changes (password, two-factor, active). A socket
told so checks its own session again (another browser's sign-out does not end it) and closes if the
session no longer holds; it also checks again on a timer, for whatever no message reached.
"""

from importlib import import_module
from types import SimpleNamespace

from django.conf import settings
from django.contrib.auth import get_user, user_logged_out
from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from kvmpanel import pushes

from . import twofactor

MESSAGE_TYPE = "session.check"  # the consumers' handler: session_check()


def user_group(user_id: int) -> str:
    return f"accounts.user.{user_id}"


def user_of_session(session_key: str | None):
    """The user a session is signed in as, if they may act now; otherwise None."""
    if not session_key:
        return None
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    # Django's own check, as for a page: the session's backend, user and hash (a stale one is flushed).
    user = get_user(SimpleNamespace(session=store))
    if not user.is_authenticated or not user.is_active:
        return None
    if twofactor.owes_second_factor(user, verified=twofactor.session_is_verified(user, store)):
        return None
    return user


def ended_message(ended_session: str = "", reason: str = "") -> dict:
    return {"type": MESSAGE_TYPE, "ended": ended_session, "reason": reason}


def tell_sockets(user_id: int, *, ended_session: str = "", reason: str = "") -> None:
    """Once committed: the user's open sockets check their sessions again (and `ended_session` closes)."""
    message = ended_message(ended_session, reason)
    transaction.on_commit(lambda: pushes.group_send([user_group(user_id)], message))


@receiver(user_logged_out)
def _signed_out(sender, request, user, **kwargs):
    # Sent before the session is flushed: name it, so its sockets close without looking.
    if user is not None:
        tell_sockets(user.pk, ended_session=request.session.session_key or "", reason="You signed out.")


@receiver(post_save, sender=settings.AUTH_USER_MODEL)
def _session_fields_saved(sender, instance, created, **kwargs):
    before = getattr(instance, "_session_state", None)
    now = instance.session_state()
    instance._session_state = now
    if created or before is None or before == now:
        return
    tell_sockets(instance.pk, reason=_why(instance, before))


def _why(user, before: tuple) -> str:
    """What the user's open pages say when this change ended their session."""
    was = dict(zip(user.SESSION_FIELDS, before, strict=True))
    if was["is_active"] and not user.is_active:
        if user.is_suspended:
            return (
                f"Your account was suspended: {user.suspension_reason}"
                if user.suspension_reason
                else ("Your account was suspended.")
            )
        return "Your account was deactivated."
    if was["password"] != user.password:
        return "Your password was changed: please sign in again."
    return "Your two-factor sign-in was changed: please sign in again."
