"""Personal API tokens: making them, checking them, and noting their use.

A token reads `kvp_<prefix>_<secret>`. The prefix finds the row; the secret is
compared as a SHA-256 digest in constant time. The clear token exists only in
the response that shows it once.
"""

import datetime as dt
import hashlib
import hmac
import secrets

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


def create(user, *, name: str, scope: str, expires_at: dt.datetime | None = None) -> tuple[APIToken, str]:
    """A new token for `user` and its clear text, which is shown once and never stored."""
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
    return f"{token.name}: {token.get_scope_display().lower()}, {expiry}"
