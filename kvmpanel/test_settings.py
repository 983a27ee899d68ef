"""Settings for the test suite: the normal ones, plus what tests need."""

from .settings import *  # noqa: F403
from .settings import STORAGES

# Tests do not run collectstatic: serve files from their sources.
STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"
# Every libvirt object a test makes is recognisable, and removed afterwards.
KVMPANEL_DOMAIN_PREFIX = "test-"
KVMPANEL_SHUTDOWN_TIMEOUT = 90
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast user fixtures
# The live server serves static files itself; WhiteNoise would look for collectstatic's folder.
MIDDLEWARE = [m for m in MIDDLEWARE if "whitenoise" not in m]  # noqa: F405
