"""Rate limits, counted in the shared Redis cache (so every web process counts together).

Rates come from settings.KVMPANEL_API_RATES (env KVMPANEL_API_RATE_*), read at
each request so tests and operators can change them without a restart of the class.
"""

import logging

from django.conf import settings
from redis.exceptions import RedisError
from rest_framework import exceptions, throttling
from rest_framework.permissions import SAFE_METHODS

log = logging.getLogger(__name__)


class _SettingsRate:
    def get_rate(self):
        return settings.KVMPANEL_API_RATES.get(self.scope)

    def allow_request(self, request, view):
        # Redis away for a moment (restarting): let the request through rather than answer 500
        # to everyone; the counts resume when it is back. Logged, so an outage is seen.
        try:
            return super().allow_request(request, view)
        except (RedisError, OSError) as error:
            log.warning("rate limit %s not counted (the cache is away): %r", self.scope, error)
            return True


class AnonymousRate(_SettingsRate, throttling.AnonRateThrottle):
    """Per client address, for requests without credentials (and failed ones)."""

    scope = "anonymous"


class UserRate(_SettingsRate, throttling.UserRateThrottle):
    """Per user, every request."""

    scope = "user"


class ChangeRate(_SettingsRate, throttling.UserRateThrottle):
    """Per user, stricter, for requests that change something (creates, actions, deletes)."""

    scope = "changes"

    def allow_request(self, request, view):
        if request.method in SAFE_METHODS:
            return True
        return super().allow_request(request, view)


class FailedTokenRate(_SettingsRate, throttling.SimpleRateThrottle):
    """Wrong tokens count against their address with the anonymous rate (authentication fails
    before any throttle runs, so it counts them itself)."""

    scope = "anonymous"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": "failed-token", "ident": self.get_ident(request)}

    def count(self, request) -> None:
        if not self.allow_request(request, None):
            raise exceptions.Throttled(self.wait())
