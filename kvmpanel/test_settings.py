"""Settings for the test suite: the normal ones, plus what tests need."""

import os
from urllib.parse import urlsplit, urlunsplit

from .env import env
from .settings import *  # noqa: F403
from .settings import STORAGES, caches, channel_layers


def _redis_url_of_this_worker(url: str) -> str:
    """Under pytest-xdist each worker (gw0, gw1…) takes the database below the previous one's: tests
    clear the cache's keys after each test and listen on groups named by row ids, which a test running
    at the same time in another worker (its own database, the same ids) must not see."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return url
    parts = urlsplit(url)
    database = int(parts.path.strip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{(database - int(worker[2:])) % 16}"))


# A Redis database of its own, so tests never share queues with a running panel.
REDIS_URL = _redis_url_of_this_worker(env("TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))
CELERY_BROKER_URL = REDIS_URL
CHANNEL_LAYERS = channel_layers(REDIS_URL)
CACHES = caches(REDIS_URL)

# Tests do not run collectstatic: serve files from their sources.
STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"
# Every libvirt object a test makes is recognisable, and removed afterwards.
KVMPANEL_DOMAIN_PREFIX = "test-"
KVMPANEL_SHUTDOWN_TIMEOUT = 90
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast user fixtures
# The live server serves static files itself; WhiteNoise would look for collectstatic's folder.
MIDDLEWARE = [m for m in MIDDLEWARE if "whitenoise" not in m]  # noqa: F405
# The integration tests flush the database under the panel's running processes, which they start with
# this set (test_freshness.py); the unit tests' query budgets count without it.
if env("KVMPANEL_FRESH_CONTENT_TYPES", ""):
    from . import test_freshness  # noqa: F401  (clears the content-type cache before each task)

    MIDDLEWARE = ["kvmpanel.test_freshness.fresh_content_types", *MIDDLEWARE]
KVMPANEL_SERVE_STATIC = True
KVMPANEL_MONITOR_RESCAN_SECONDS = 1  # tests create nodes and expect them watched at once
KVMPANEL_STATS_INTERVAL = 2  # usage readings arrive within seconds in tests
# Staff fixtures sign in with force_login (no second factor); the 2FA tests turn this back on.
KVMPANEL_STAFF_2FA_REQUIRED = False
# Reverse DNS is off unless a test starts its own PowerDNS and turns it on (tests/powerdns.py).
KVMPANEL_RDNS_ENABLED = False
