"""Settings for the test suite: the normal ones, plus what tests need."""

from .env import env
from .settings import *  # noqa: F403
from .settings import STORAGES, caches, channel_layers

# A Redis database of its own, so tests never share queues with a running panel.
REDIS_URL = env("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
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
KVMPANEL_SERVE_STATIC = True
KVMPANEL_MONITOR_RESCAN_SECONDS = 1  # tests create nodes and expect them watched at once
KVMPANEL_STATS_INTERVAL = 2  # usage readings arrive within seconds in tests
# Staff fixtures sign in with force_login (no second factor); the 2FA tests turn this back on.
KVMPANEL_STAFF_2FA_REQUIRED = False
