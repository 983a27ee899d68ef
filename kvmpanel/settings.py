"""Settings for kvmpanel.

Everything comes from the environment, with defaults that run the whole panel
on one machine: SQLite, the local Redis and the local libvirt.
Production sets DATABASE_URL (PostgreSQL) and REDIS_URL; nothing else changes.
"""

import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from .env import env, envbool, envint, envlist
from .redis_options import redis_reconnects

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env("KVMPANEL_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    """The key from the environment, or one generated once and kept in var/.

    A secret never lives in the repository.
    """
    if env("SECRET_KEY"):
        return env("SECRET_KEY")
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = envbool("DEBUG", False)
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "127.0.0.1,localhost")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "accounts",
    "nodes",
    "images",
    "network",
    "vms",
    "firewall",
    "backups",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "kvmpanel.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "accounts.audit.AuditMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "accounts.middleware.IdleTimeoutMiddleware",
    "accounts.middleware.TwoFactorMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a lockout raised by authentication into its response.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "kvmpanel.urls"
WSGI_APPLICATION = "kvmpanel.wsgi.application"
ASGI_APPLICATION = "kvmpanel.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=envint("DATABASE_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server, the worker and beat share one file: WAL lets readers and
    # the writer work at once, IMMEDIATE avoids lock-upgrade deadlocks, and a
    # writer waits on a lock instead of failing at once.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
    # Tests run a real Celery worker in another process: it must see the
    # test database, so it lives in a file, not in memory.
    # Named after the database, so a second checkout's tests can use one of their own.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{Path(DATABASES['default']['NAME']).name}")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "vms:list"
LOGOUT_REDIRECT_URL = "login"
# django-axes first: it refuses a locked-out account or address before any password is checked.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]

# Accounts. Sign-up can be turned off (operators then add customers in the backoffice).
KVMPANEL_SIGNUP_OPEN = envbool("KVMPANEL_SIGNUP_OPEN", True)
KVMPANEL_SIGNUPS_PER_HOUR = envint("KVMPANEL_SIGNUPS_PER_HOUR", 5)  # new accounts per client address
# Links in emails (verification, password reset) live this long.
KVMPANEL_EMAIL_LINK_HOURS = envint("KVMPANEL_EMAIL_LINK_HOURS", 72)
PASSWORD_RESET_TIMEOUT = envint("PASSWORD_RESET_TIMEOUT", 60 * 60 * 2)
# Signed-in browsers are signed out after this long without a request of their own
# (background refreshes of an open page do not count).
KVMPANEL_IDLE_MINUTES = envint("KVMPANEL_IDLE_MINUTES", 30)
# Deleting a VM, turning off two-factor or making an API token ask for the password
# again when the last sign-in or confirmation is older than this.
KVMPANEL_REAUTH_MINUTES = envint("KVMPANEL_REAUTH_MINUTES", 10)
# bcrypt's cost for the guest's first-boot password (2**cost rounds). 9 is about 35 ms here and
# is hashed entirely while the node makes the disk and the domain; each step up doubles both the
# time and an attacker's work (10 adds 30-60 ms to a create on a 2-core node). See the README.
KVMPANEL_GUEST_PASSWORD_COST = envint("KVMPANEL_GUEST_PASSWORD_COST", 9)
if not 9 <= KVMPANEL_GUEST_PASSWORD_COST <= 16:
    raise ImproperlyConfigured("KVMPANEL_GUEST_PASSWORD_COST must be between 9 and 16.")
# Email: Django's backends; the console backend (mail printed to the log) until SMTP is set.
EMAIL_BACKEND = env("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env("EMAIL_HOST", "localhost")
EMAIL_PORT = envint("EMAIL_PORT", 25)
EMAIL_HOST_USER = env("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "kvmpanel <noreply@localhost>")

# Login throttling (django-axes): after this many failures in a row an account, and
# separately an address, is locked out for the cool-off time; a success resets the count.
AXES_FAILURE_LIMIT = envint("KVMPANEL_LOGIN_FAILURES", 5)
AXES_COOLOFF_TIME = envint("KVMPANEL_LOGIN_COOLOFF_MINUTES", 15) / 60  # hours
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False  # lockouts are still logged; no banner and no line per sign-in
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_USERNAME_FORM_FIELD = "username"
# The client's address as the audit log takes it (REMOTE_ADDR: daphne gets it from the proxy).
AXES_CLIENT_IP_CALLABLE = "accounts.audit.client_address"
# Two-factor: the issuer shown in authenticator apps; staff cannot use the panel without it.
OTP_TOTP_ISSUER = env("KVMPANEL_OTP_ISSUER", "kvmpanel")
KVMPANEL_STAFF_2FA_REQUIRED = True
# Staff API tokens (only with two-factor on) live at most this many days.
KVMPANEL_STAFF_TOKEN_MAX_DAYS = envint("KVMPANEL_STAFF_TOKEN_MAX_DAYS", 30)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True
FORMAT_MODULE_PATH = "kvmpanel.formats"  # dates as ISO 8601 everywhere (kvmpanel/formats/en/formats.py)

STATIC_URL = "static/"
# collectstatic writes here; production serves it from nginx (scripts/install.sh: outside the code).
STATIC_ROOT = Path(env("KVMPANEL_STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STATICFILES_DIRS = [
    BASE_DIR / "static",
    # Front-end packages installed from npm (package.json), served as they are.
    ("vendor/bootstrap", BASE_DIR / "node_modules/bootstrap/dist"),
    ("vendor/bootstrap-icons", BASE_DIR / "node_modules/bootstrap-icons/font"),
    ("vendor/htmx", BASE_DIR / "node_modules/htmx.org/dist"),
    ("vendor/novnc", BASE_DIR / "node_modules/@novnc/novnc"),
    ("vendor/xterm", BASE_DIR / "node_modules/@xterm/xterm"),
    ("vendor/xterm-addon-fit", BASE_DIR / "node_modules/@xterm/addon-fit"),
    ("vendor/uplot", BASE_DIR / "node_modules/uplot/dist"),
]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# Sessions and cookies: secure by default, relaxed only for plain-HTTP dev.
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = envint("SESSION_COOKIE_AGE", 60 * 60 * 8)
SECURE_COOKIES = envbool("SECURE_COOKIES", not DEBUG and envbool("HTTPS", False))
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
if envbool("HTTPS", False):
    # Served over HTTPS (behind deploy/nginx/kvmpanel.conf, which sets X-Forwarded-Proto):
    # redirect plain HTTP and tell browsers to use HTTPS only from now on.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SECURE_HSTS_SECONDS = envint("HSTS_SECONDS", 60 * 60 * 24 * 365)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = envbool("HSTS_PRELOAD", True)

# Redis carries Celery tasks and the Channels layer.
REDIS_URL = env("REDIS_URL", "redis://127.0.0.1:6379/0")


def channel_layers(redis_url: str) -> dict:
    # redis-py 8 times out socket reads after 5 s by default, but channels_redis
    # blocks 5 s on BZPOPMIN while waiting for messages: without this every idle
    # websocket (serial console, live updates) would crash after 5 s.
    host = {"address": redis_url, "socket_timeout": None, **redis_reconnects(asynchronous=True)}
    return {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [host]}}}


CHANNEL_LAYERS = channel_layers(REDIS_URL)


def caches(redis_url: str) -> dict:
    # Shared by every process (web, worker): login throttling and API rate limits count across all.
    backend = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": redis_url,
        "OPTIONS": redis_reconnects(asynchronous=False),
    }
    return {"default": {**backend, "KEY_PREFIX": "kvmpanel"}}


CACHES = caches(REDIS_URL)

CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True  # outcomes live on Operation rows
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A task that a worker took but never acknowledged comes back after this. Operations do not wait
# for it (their lease runs out after KVMPANEL_OPERATION_LEASE_SECONDS and the sweeper sends them
# again); the image library's long tasks hold a renewed lock, so a copy handed out while the first
# still runs is dropped. It must stay above the longest retry delay (ETA tasks wait unacknowledged).
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": envint("KVMPANEL_VISIBILITY_TIMEOUT", 600)}
# A request that sends a task while Redis is away gives up quickly: the operation is already
# recorded, and the sweeper sends it once Redis is back.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# The operation engine (vms/engine.py): how long a worker's lease on an operation lasts without
# renewal (it renews every quarter of it), how often the sweeper looks for lost operations, how long
# it waits before sending one again (doubling each time), how many attempts an operation gets,
# the first retry delay of a transient failure (doubling), and how long a worker keeps trying to
# record an outcome while the database is away.
KVMPANEL_OPERATION_LEASE_SECONDS = envint("KVMPANEL_OPERATION_LEASE_SECONDS", 60)
KVMPANEL_SWEEP_SECONDS = envint("KVMPANEL_SWEEP_SECONDS", 5)
KVMPANEL_OPERATION_RESEND_SECONDS = envint("KVMPANEL_OPERATION_RESEND_SECONDS", 15)
KVMPANEL_OPERATION_MAX_ATTEMPTS = envint("KVMPANEL_OPERATION_MAX_ATTEMPTS", 5)
KVMPANEL_OPERATION_RETRY_SECONDS = envint("KVMPANEL_OPERATION_RETRY_SECONDS", 5)
KVMPANEL_DATABASE_OUTAGE_SECONDS = envint("KVMPANEL_DATABASE_OUTAGE_SECONDS", 120)
# The backoffice lists an operation as stuck when it is still queued after this long.
KVMPANEL_OPERATION_STUCK_SECONDS = envint("KVMPANEL_OPERATION_STUCK_SECONDS", 120)
# A drain moves at most this many VMs off a node at once (each a live migration: memory and disk
# over the network, so more at once mostly makes each slower).
KVMPANEL_DRAIN_PARALLEL = envint("KVMPANEL_DRAIN_PARALLEL", 2)
CELERY_BEAT_SCHEDULE = {
    "sweep-operations": {"task": "vms.tasks.sweep_operations", "schedule": float(KVMPANEL_SWEEP_SECONDS)},
    # Drains ask for their next moves (also when a move ends; this catches a lost message).
    "drain-nodes": {"task": "vms.tasks.drain_nodes", "schedule": float(KVMPANEL_SWEEP_SECONDS)},
    "refresh-nodes": {"task": "nodes.tasks.refresh_nodes", "schedule": 60.0},
    "reconcile-nodes": {
        "task": "vms.tasks.reconcile_nodes",
        "schedule": envint("KVMPANEL_RECONCILE_SECONDS", 60),
    },
    "maintain-usage": {"task": "vms.tasks.maintain_usage", "schedule": 60.0},
    # PTR records PowerDNS does not have yet (it was away, a message was lost) are sent again.
    "sync-rdns": {"task": "network.tasks.sync_rdns", "schedule": envint("KVMPANEL_RDNS_SWEEP_SECONDS", 15)},
    # A new month lifts last month's traffic throttles (within minutes of midnight UTC).
    "turn-traffic-month": {"task": "vms.tasks.turn_traffic_month", "schedule": 300.0},
    "remove-stale-files": {"task": "images.tasks.remove_stale_files", "schedule": 3600.0},
    # Due scheduled backups become rows; queued ones start within each node's limit; dead ones end.
    "dispatch-backups": {"task": "backups.tasks.dispatch", "schedule": 60.0},
    "check-backup-stores": {
        "task": "backups.tasks.check_stores",
        "schedule": envint("KVMPANEL_BACKUP_CHECK_HOURS", 24) * 3600.0,
    },
}

# The hypervisor side.
# Remote nodes over SSH: the panel's private key (made at install; its .pub goes in each node's
# authorized_keys) and the directory of pinned host keys (one known_hosts file per node).
KVMPANEL_SSH_KEY = Path(env("KVMPANEL_SSH_KEY", str(VAR_DIR / "ssh" / "id_ed25519")))
KVMPANEL_KNOWN_HOSTS_DIR = Path(env("KVMPANEL_KNOWN_HOSTS_DIR", str(VAR_DIR / "ssh" / "known_hosts.d")))
# Remote nodes over TLS: a directory holding the panel's cacert.pem, clientcert.pem and clientkey.pem
# (libvirt's pkipath); empty: libvirt's standard paths under /etc/pki.
KVMPANEL_TLS_DIR = env("KVMPANEL_TLS_DIR", "")
KVMPANEL_LOCAL_LIBVIRT_URI = env("LIBVIRT_URI", "qemu:///system")
# "kvm", "qemu" or "auto" (see hypervisor.host.detect_virt_type).
KVMPANEL_VIRT_TYPE = env("KVMPANEL_VIRT_TYPE", "auto")
KVMPANEL_POOL_NAME = env("KVMPANEL_POOL_NAME", "kvmpanel")
KVMPANEL_POOL_PATH = env("KVMPANEL_POOL_PATH", "/var/lib/kvmpanel/pool")
KVMPANEL_NETWORK_NAME = env("KVMPANEL_NETWORK_NAME", "kvmpanel")
# A released address waits this long before it is given to anyone else (stale ARP caches, abuse reports).
KVMPANEL_ADDRESS_COOLDOWN_HOURS = envint("KVMPANEL_ADDRESS_COOLDOWN_HOURS", 24)
# How often a worker asks a booting guest's agent whether its first boot (cloud-init) has finished,
# and for how long at most.
KVMPANEL_READY_POLL_SECONDS = envint("KVMPANEL_READY_POLL_SECONDS", 1)
KVMPANEL_READY_TIMEOUT_SECONDS = envint("KVMPANEL_READY_TIMEOUT_SECONDS", 1800)
# Empty in production: a domain's name is the VM's UUID. Tests set "test-".
KVMPANEL_DOMAIN_PREFIX = env("KVMPANEL_DOMAIN_PREFIX", "")
KVMPANEL_SHUTDOWN_TIMEOUT = envint("KVMPANEL_SHUTDOWN_TIMEOUT", 120)
# Backups (backups/): how many run at once on one node; how far scheduled ones are spread after
# their hour (each VM gets its own fixed offset); how long a running backup may go without a sign
# of life before it counts as dead; what share of the stored data each store check reads back.
KVMPANEL_BACKUPS_PER_NODE = envint("KVMPANEL_BACKUPS_PER_NODE", 2)
KVMPANEL_BACKUP_SPREAD_MINUTES = envint("KVMPANEL_BACKUP_SPREAD_MINUTES", 60)
KVMPANEL_BACKUP_STALE_SECONDS = envint("KVMPANEL_BACKUP_STALE_SECONDS", 300)
KVMPANEL_BACKUP_CHECK_READ_PERCENT = envint("KVMPANEL_BACKUP_CHECK_READ_PERCENT", 5)
KVMPANEL_RESTIC = env("KVMPANEL_RESTIC", "restic")
KVMPANEL_RESTIC_CACHE_DIR = env("KVMPANEL_RESTIC_CACHE_DIR", str(VAR_DIR / "restic-cache"))

# How often the node monitor looks for nodes added or removed.
KVMPANEL_MONITOR_RESCAN_SECONDS = envint("KVMPANEL_MONITOR_RESCAN_SECONDS", 30)
# Images added by URL: where downloads go, their size limit, and whether private,
# loopback and link-local addresses may be fetched from (off: SSRF protection).
KVMPANEL_DOWNLOAD_DIR = env("KVMPANEL_DOWNLOAD_DIR", str(VAR_DIR / "downloads"))
KVMPANEL_IMAGE_MAX_BYTES = envint("KVMPANEL_IMAGE_MAX_GB", 20) * 1024**3
# Seconds a whole download may take (each connect and read also times out after 30 s of silence).
KVMPANEL_IMAGE_DOWNLOAD_TIMEOUT = envint("KVMPANEL_IMAGE_DOWNLOAD_TIMEOUT", 3600)
KVMPANEL_IMAGE_ALLOW_PRIVATE = envbool("KVMPANEL_IMAGE_ALLOW_PRIVATE", False)
# What a customer may hold unless their account says otherwise (staff have no limits).
KVMPANEL_QUOTA_DEFAULTS = {
    "vms": envint("KVMPANEL_QUOTA_VMS", 5),
    "vcpus": envint("KVMPANEL_QUOTA_VCPUS", 8),
    "memory_mib": envint("KVMPANEL_QUOTA_MEMORY_MIB", 16384),
    "disk_gb": envint("KVMPANEL_QUOTA_DISK_GB", 200),
}
# How often the node monitor reads every VM's usage counters (one bulk call per node).
KVMPANEL_STATS_INTERVAL = envint("KVMPANEL_STATS_INTERVAL", 10)
# Reverse DNS through PowerDNS Authoritative's API (network/rdns.py). Off for operators whose DNS runs
# elsewhere. The API key comes from the environment, or the file the local server was set up with
# (scripts/lib.sh, `manage.py rdns_server`). New addresses get the default name: {hostname} is the
# VM's hostname, {ip_dashed} the address with dashes (a name that is no FQDN gives no PTR).
KVMPANEL_RDNS_ENABLED = envbool("KVMPANEL_RDNS_ENABLED", True)
KVMPANEL_PDNS_URL = env("KVMPANEL_PDNS_URL", "http://127.0.0.1:8081")
KVMPANEL_PDNS_DNS_PORT = envint("KVMPANEL_PDNS_DNS_PORT", 5353)
KVMPANEL_PDNS_DIR = env("KVMPANEL_PDNS_DIR", str(VAR_DIR / "pdns"))


def _pdns_api_key() -> str:
    """KVMPANEL_PDNS_API_KEY, or the local server's key, made once and kept beside the secret key."""
    if env("KVMPANEL_PDNS_API_KEY"):
        return env("KVMPANEL_PDNS_API_KEY")
    key_file = VAR_DIR / "pdns_api_key"
    try:
        if not key_file.exists():
            VAR_DIR.mkdir(parents=True, exist_ok=True)
            key_file.write_text(secrets.token_urlsafe(32))
            key_file.chmod(0o600)
        return key_file.read_text().strip()
    except OSError:  # a process that may not write var/: PowerDNS refuses it, and the log says so
        return ""


KVMPANEL_PDNS_API_KEY = _pdns_api_key()
KVMPANEL_RDNS_DEFAULT = env("KVMPANEL_RDNS_DEFAULT", "{ip_dashed}.customers.example.net")
KVMPANEL_RDNS_NAMESERVERS = env("KVMPANEL_RDNS_NAMESERVERS", "ns1.example.net.").split()
# A VM that used up its plan's monthly traffic is slowed down to this speed (both ways) until the month
# ends, in libvirt's unit: kilobytes (1000 bytes) per second (125 is 1 Mbit/s).
KVMPANEL_THROTTLE_KBPS = envint("KVMPANEL_THROTTLE_KBPS", 125)
# The metrics endpoint (/metrics) answers staff sessions, and this bearer token when set.
KVMPANEL_METRICS_TOKEN = env("KVMPANEL_METRICS_TOKEN", "")

# Consoles. The VNC bridge (manage.py console_bridge) listens here; browsers
# reach it at KVMPANEL_CONSOLE_URL, or at ws(s)://<panel host>:<port>/ when unset.
KVMPANEL_CONSOLE_BIND = env("KVMPANEL_CONSOLE_BIND", "127.0.0.1")
KVMPANEL_CONSOLE_PORT = envint("KVMPANEL_CONSOLE_PORT", 6080)
KVMPANEL_CONSOLE_URL = env("KVMPANEL_CONSOLE_URL", "")
KVMPANEL_CONSOLE_TOKEN_TTL = envint("KVMPANEL_CONSOLE_TOKEN_TTL", 30)
# Open websockets (serial console, live updates, the VNC bridge) check their session again this often,
# besides being told at once when it ends (sign-out, password or two-factor change, suspension).
KVMPANEL_SOCKET_RECHECK_SECONDS = envint("KVMPANEL_SOCKET_RECHECK_SECONDS", 30)
# Serve static files from their sources in the ASGI app (tests); production uses WhiteNoise.
KVMPANEL_SERVE_STATIC = envbool("KVMPANEL_SERVE_STATIC", False)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    # django-axes logs every sign-in at INFO; lockouts come as warnings.
    "loggers": {"axes": {"level": "WARNING"}},
}

# Django 6 will assume https for scheme-less URLs; adopt that now (image download URLs).
FORMS_URLFIELD_ASSUME_HTTPS = True

# REST API (api/): Django REST framework under /api/v1/, its OpenAPI schema
# (drf-spectacular, docs served from local assets), personal tokens, rate limits.
INSTALLED_APPS += ["rest_framework", "django_filters", "drf_spectacular", "drf_spectacular_sidecar", "api"]
REST_FRAMEWORK = {
    # Bearer first: its challenge makes a request without credentials a 401. Sessions (with CSRF)
    # serve the browsable docs page.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "api.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["api.permissions.IsActiveUser", "api.permissions.TokenScopeAllows"],
    "DEFAULT_THROTTLE_CLASSES": [
        "api.throttling.AnonymousRate",
        "api.throttling.UserRate",
        "api.throttling.ChangeRate",
    ],
    "DEFAULT_PAGINATION_CLASS": "api.pagination.Pages",
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.SearchFilter",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "api.negotiation.JSONWhateverTheAcceptHeader",
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "api.errors.handle_exception",
    # Rate limits count REMOTE_ADDR only, as the audit log does: X-Forwarded-For is the client's to forge.
    "NUM_PROXIES": 0,
    "DEFAULT_SCHEMA_CLASS": "api.schema.PanelAutoSchema",
}
# Requests per user (and per address without credentials), counted in the shared Redis cache;
# "changes" (creates, actions, deletes) is stricter. DRF's format: N/second|minute|hour|day.
KVMPANEL_API_RATES = {
    "anonymous": env("KVMPANEL_API_RATE_ANONYMOUS", "60/minute"),
    "user": env("KVMPANEL_API_RATE_USER", "600/minute"),
    "changes": env("KVMPANEL_API_RATE_CHANGES", "60/minute"),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "kvmpanel API",
    "DESCRIPTION": "VMs, their actions and operations, SSH keys, images and plans for customers; "
    "nodes, plans, images and users for staff (/api/v1/admin/). Authenticate with "
    "`Authorization: Bearer <token>` (a personal token from the portal's API tokens page).",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",  # browsers here may have no internet: assets come from the panel
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
}
