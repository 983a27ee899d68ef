"""One-time console tokens.

A token is random, valid for TOKEN_TTL seconds, bound to a user and a VM,
and stored only as its SHA-256 in Redis. Redeeming it deletes it (GETDEL),
so a replay finds nothing.
"""

import hashlib
import json
import secrets
from dataclasses import dataclass
from urllib.parse import urlencode

import redis
from django.conf import settings
from django.http.request import split_domain_port

from kvmpanel.redis_options import redis_reconnects

KEY_PREFIX = "kvmpanel:console-token:"


@dataclass(frozen=True)
class Grant:
    user_id: int
    vm_id: int


def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, **redis_reconnects(asynchronous=False))


def _key(token: str) -> str:
    return KEY_PREFIX + hashlib.sha256(token.encode()).hexdigest()


def issue(user, vm) -> str:
    """A new token for `user` to open `vm`'s console. The caller has checked access."""
    token = secrets.token_urlsafe(32)
    grant = json.dumps({"user": user.pk, "vm": vm.pk})
    _redis().set(_key(token), grant, ex=settings.KVMPANEL_CONSOLE_TOKEN_TTL, nx=True)
    return token


def redeem(token: str) -> Grant | None:
    """The grant behind `token`, once; None for unknown, expired or already used tokens."""
    if not token or len(token) > 128:
        return None
    raw = _redis().getdel(_key(token))
    if raw is None:
        return None
    data = json.loads(raw)
    return Grant(user_id=int(data["user"]), vm_id=int(data["vm"]))


def bridge_base(request) -> str:
    """Where the browser reaches the bridge: KVMPANEL_CONSOLE_URL, or the bridge's port on the host the
    page came from."""
    if settings.KVMPANEL_CONSOLE_URL:
        return settings.KVMPANEL_CONSOLE_URL
    scheme = "wss" if request.is_secure() else "ws"
    host, _port = split_domain_port(request.get_host())
    return f"{scheme}://{host}:{settings.KVMPANEL_CONSOLE_PORT}/"


def bridge_url(request, token: str) -> str:
    """Where the browser opens the console with `token`."""
    return f"{bridge_base(request)}?{urlencode({'token': token})}"
