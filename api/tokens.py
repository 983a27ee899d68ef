"""Personal API tokens: making them, checking them, and noting their use.

A token reads `kvp_<prefix>_<secret>`. The prefix finds the row; the secret is
compared as a SHA-256 digest in constant time. The clear token exists only in
the response that shows it once.
"""

import datetime as dt
import hashlib
import hmac
import secrets

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts import audit

from .models import APIToken

TOKEN_PREFIX = "kvp_"  # noqa: S105  (a marker that makes leaked tokens easy to scan for)
MAX_TOKENS_PER_USER = 50
# Writing last_used_at on every request would turn each read into a write; once a minute is enough to show.
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenRefused(Exception):
    """This user may not make this token (staff rules); the message says why."""


def staff_max_life() -> dt.timedelta:
    return dt.timedelta(days=settings.KVMPANEL_STAFF_TOKEN_MAX_DAYS)


def check_staff_token(user, expires_at: dt.datetime | None) -> None:
    """A staff token reaches every customer's VMs without the second factor a sign-in asks for: only
    staff with two-factor on may make one, and it lives at most KVMPANEL_STAFF_TOKEN_MAX_DAYS."""
    if not user.is_staff:
        return
    if not user.two_factor_enabled:
        raise TokenRefused("Staff can make API tokens only with two-factor sign-in turned on.")
    days = settings.KVMPANEL_STAFF_TOKEN_MAX_DAYS
    if expires_at is None or expires_at > timezone.now() + staff_max_life() + dt.timedelta(minutes=1):
        raise TokenRefused(f"Staff tokens expire within {days} days (KVMPANEL_STAFF_TOKEN_MAX_DAYS).")


def create(
    user, *, name: str, scope: str, expires_at: dt.datetime | None = None, allowed_networks: str = ""
) -> tuple[APIToken, str]:
    """A new token for `user` and its clear text, which is shown once and never stored. Staff's tokens
    follow check_staff_token (TokenRefused)."""
    check_staff_token(user, expires_at)
    for _attempt in range(3):  # a prefix collision (48 random bits) is unlikely; retry anyway
        prefix, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        try:
            with transaction.atomic():
                token = APIToken.objects.create(
                    user=user,
                    name=name,
                    prefix=prefix,
                    secret_hash=digest(secret),
                    scope=scope,
                    expires_at=expires_at,
                    allowed_networks=allowed_networks,
                )
        except IntegrityError:
            continue
        audit.record("apitoken.create", token, outcome="succeeded", detail=_describe(token))
        return token, f"{TOKEN_PREFIX}{prefix}_{secret}"
    raise RuntimeError("could not pick a unique token prefix")


def revoke(token: APIToken) -> None:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit.record("apitoken.revoke", token, outcome="succeeded", detail=_describe(token))


def find(presented: str) -> APIToken | None:
    """The usable token the text stands for, or None (malformed, unknown, wrong secret, revoked, expired)."""
    prefix, secret = _split(presented)
    if not prefix:
        return None
    token = APIToken.objects.select_related("user").filter(prefix=prefix).first()
    if token is None or not hmac.compare_digest(token.secret_hash, digest(secret)):
        return None
    return token if token.is_usable else None


def refusal(token: APIToken, address: str | None) -> str | None:
    """Why a found token may not be used now from `address` (None: it may). Checked at every use, so a
    rule holds for tokens made before it: staff's need two-factor on and are at most
    KVMPANEL_STAFF_TOKEN_MAX_DAYS old; a token bound to address ranges works only from them."""
    user = token.user
    if not user.is_active:  # suspended (or deactivated): its tokens stop with its sign-in
        return "This account is suspended."
    if user.is_staff and not user.two_factor_enabled:
        return "Staff tokens work only while two-factor sign-in is on."
    if user.is_staff and timezone.now() - token.created_at > staff_max_life():
        days = settings.KVMPANEL_STAFF_TOKEN_MAX_DAYS
        return f"Staff tokens stop working after {days} days; make a new one."
    if not token.allows_address(address):
        return "This token does not work from your address."
    return None


def note_use(token: APIToken) -> None:
    """Record when the token was last used, to the minute (one write a minute at most)."""
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        APIToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now


def tokens_of(user):
    return APIToken.objects.filter(user=user)


def _split(presented: str) -> tuple[str, str]:
    if not presented.startswith(TOKEN_PREFIX) or len(presented) > 128:
        return "", ""
    prefix, _, secret = presented.removeprefix(TOKEN_PREFIX).partition("_")
    if len(prefix) != 12 or not secret:
        return "", ""
    return prefix, secret


def _describe(token: APIToken) -> str:
    expiry = f"expires {token.expires_at:%Y-%m-%d %H:%M}" if token.expires_at else "no expiry"
    where = f", from {token.allowed_networks}" if token.allowed_networks else ""
    return f"{token.name}: {token.get_scope_display().lower()}, {expiry}{where}"
