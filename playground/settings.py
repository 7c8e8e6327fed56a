"""Settings, every knob an environment variable with a default that works on a laptop.

The README lists each variable; `tests/test_docs.py` fails when one is missing there.
"""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def envbool(name: str, default: str) -> bool:
    return os.getenv(name, default).strip().lower() in ("1", "true", "yes", "on")


def envint(name: str, default: int) -> int:
    return int(os.getenv(name, str(default)))


def envfloat(name: str, default: float) -> float:
    return float(os.getenv(name, str(default)))


def envlist(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.getenv(name, default).split(",") if item.strip()]


DEBUG = envbool("DEBUG", "1")
SECRET_KEY = os.getenv("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    SECRET_KEY = "dev-only-insecure-secret-key"

# Never "*": AllowedHostsOriginValidator treats it as "allow every Origin".
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
if "*" in ALLOWED_HOSTS:
    raise ImproperlyConfigured(
        'ALLOWED_HOSTS must name the hosts served, not "*": the websocket Origin check uses it '
        "and would let every site's pages open sockets with a member's cookies."
    )
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "servestatic.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "playground",
]

# Django's stock middleware. ServeStatic, which runs only async, comes first: static files
# are answered before any of the others (with the request_threads fast path, every
# middleware below it runs synchronously, in one trip to a request thread with the view).
MIDDLEWARE = [
    "servestatic.middleware.ServeStaticMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "playground.api_errors.ApiErrorsMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "playground.signals.ActorMiddleware",  # names who changed a conversation (the live list)
]

ROOT_URLCONF = "playground.urls"
ASGI_APPLICATION = "playground.asgi.application"

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
                "playground.views.workspaces.context",
                "playground.views.audit.nav",
            ],
        },
    },
]

# Speed changes to third-party internals (playground.server), each installed only when
# named here: "all" (default), "none", or a comma list of these names. Stock mode ("none")
# is fully supported; the suite runs in both modes.
FAST_PATH_NAMES = (
    "request_threads",  # Django's ASGI handler on pooled threads, sync middleware in one trip
    "ws_frames",  # autobahn's text frames built in one step
    "eager_write",  # Twisted TCP writes sent at once when nothing is queued
    "memory_layer",  # the trimmed in-memory channel layer
    "consumer_loop",  # one reading loop per source in the conversation consumer
    "loop_reader",  # upstream SSE read on the event loop from urllib3's socket
    "gil_switch",  # sys.setswitchinterval(PLAYGROUND_GIL_SWITCH_MS)
)


def _fast_paths(value: str) -> frozenset[str]:
    names = {name.strip() for name in value.split(",") if name.strip()}
    if names == {"all"}:
        return frozenset(FAST_PATH_NAMES)
    if names <= {"none"}:
        return frozenset()
    unknown = names - set(FAST_PATH_NAMES)
    if unknown:
        raise ImproperlyConfigured(
            f"PLAYGROUND_FAST_PATHS: unknown {', '.join(sorted(unknown))}; "
            f"use all, none or a comma list of {', '.join(FAST_PATH_NAMES)}"
        )
    return frozenset(names)


FAST_PATHS = _fast_paths(os.getenv("PLAYGROUND_FAST_PATHS", "all"))
# channels' in-memory layer, or the trimmed one (playground.server.memory_layer).
IN_MEMORY_CHANNEL_LAYER = (
    "playground.server.memory_layer.InMemoryChannelLayer"
    if "memory_layer" in FAST_PATHS
    else "channels.layers.InMemoryChannelLayer"
)

DATA_DIR = Path(os.getenv("PLAYGROUND_DATA_DIR", BASE_DIR / "var"))
DATA_DIR.mkdir(parents=True, exist_ok=True)
DATABASES = {
    "default": dj_database_url.parse(
        os.getenv("DATABASE_URL", f"sqlite:///{DATA_DIR / 'playground.sqlite3'}"),
        # Persistent only where request threads are pooled (the request_threads fast path)
        # and keep their connection: Django's own ASGI handler runs each request on a new
        # thread, which would leave its connection open (Django: disable them under ASGI).
        conn_max_age=envint("DATABASE_CONN_MAX_AGE", 60 if "request_threads" in FAST_PATHS else 0),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL + a busy timeout: relay threads write while page views read.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not :memory:: relay threads write while the test's connection reads.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / f"test-{os.getpid()}.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.getenv("REDIS_URL", "")
# Bounded per-connection queue: a websocket client that falls further behind than this
# many undelivered messages is disconnected and resyncs from a snapshot on reconnect.
CHANNEL_CAPACITY = envint("PLAYGROUND_CHANNEL_CAPACITY", 200)
# ...and one that leaves more than this many bytes unread for this long (it stopped
# reading) is dropped, and resyncs the same way (playground.server.backlog).
WS_BACKLOG_BYTES = envint("PLAYGROUND_WS_BACKLOG_BYTES", 4 * 1024 * 1024)
WS_BACKLOG_SECONDS = envfloat("PLAYGROUND_WS_BACKLOG_SECONDS", 15)
# How often an open conversation socket checks again that its user may still see the
# conversation (also when a run starts in it, and at once on a membership change).
WS_RECHECK_SECONDS = envfloat("PLAYGROUND_WS_RECHECK_SECONDS", 30)
# A conversation's viewers announce themselves this often; one silent for three periods is gone.
PRESENCE_SECONDS = envfloat("PLAYGROUND_PRESENCE_SECONDS", 10)
# Every request reads its session: from the cache, written through to the database.
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
# With REDIS_URL, Redis carries the channel layer and the cache, shared by every process
# (so a log-out in one holds in all); without it (one process), this process's memory.
if REDIS_URL:
    REDIS_PREFIX = os.getenv("PLAYGROUND_CHANNEL_PREFIX", "playground")
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py 8 reads with a 5 s socket timeout by default, which cuts the
                # layer's 5 s blocking BZPOPMIN (channels_redis#422): allow longer.
                "hosts": [{"address": REDIS_URL, "socket_timeout": 15, "socket_connect_timeout": 5}],
                "capacity": CHANNEL_CAPACITY,
                "prefix": REDIS_PREFIX,
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": REDIS_PREFIX,
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": IN_MEMORY_CHANNEL_LAYER,
            "CONFIG": {"capacity": CHANNEL_CAPACITY},
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "OPTIONS": {"MAX_ENTRIES": 10_000},
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/accounts/login/"
# Login throttling (playground/logins.py): failures allowed per username and per client
# address within the lockout window, and how long a lock lasts.
LOGIN_FAILURES_PER_USER = envint("PLAYGROUND_LOGIN_FAILURES_PER_USER", 5)
LOGIN_FAILURES_PER_ADDRESS = envint("PLAYGROUND_LOGIN_FAILURES_PER_ADDRESS", 20)
LOGIN_LOCKOUT_SECONDS = envint("PLAYGROUND_LOGIN_LOCKOUT_SECONDS", 900)
LOGIN_REDIRECT_URL = "/"

# Members and accounts: any logged-in user may create a workspace (and owns it) unless this
# is off; invitations and password resets are emailed with Django's backends (the console
# backend unless EMAIL_BACKEND names another, e.g. django.core.mail.backends.smtp.EmailBackend).
PLAYGROUND_ALLOW_NEW_WORKSPACES = envbool("PLAYGROUND_ALLOW_NEW_WORKSPACES", "1")
EMAIL_BACKEND = os.getenv("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = os.getenv("EMAIL_HOST", "localhost")
EMAIL_PORT = envint("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.getenv("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.getenv("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", "0")
EMAIL_USE_SSL = envbool("EMAIL_USE_SSL", "0")
DEFAULT_FROM_EMAIL = os.getenv("DEFAULT_FROM_EMAIL", "webmaster@localhost")
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)  # ServeStatic serves from the finders; it warns when this is missing
SERVESTATIC_USE_FINDERS = True
SERVESTATIC_AUTOREFRESH = DEBUG

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = envbool("SESSION_COOKIE_SECURE", "0")
CSRF_COOKIE_SECURE = envbool("CSRF_COOKIE_SECURE", "1" if SESSION_COOKIE_SECURE else "0")
# HTTPS only: set these once the site is served over TLS (README, Deploying).
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", "0")
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", "0")
SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", "0")
# Behind a TLS-terminating proxy that sets X-Forwarded-Proto (and strips it from clients).
if envbool("PLAYGROUND_BEHIND_TLS_PROXY", "0"):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# The largest JSON body the API takes, in bytes (larger: 413); importing a conversation
# export takes up to its own limit (uploaded images make exports large).
PLAYGROUND_MAX_BODY_BYTES = envint("PLAYGROUND_MAX_BODY_BYTES", 2 * 1024 * 1024)
PLAYGROUND_IMPORT_MAX_BYTES = envint("PLAYGROUND_IMPORT_MAX_BYTES", 32 * 1024 * 1024)
# Days a deleted conversation stays restorable in the trash before it is purged.
PLAYGROUND_TRASH_DAYS = envint("PLAYGROUND_TRASH_DAYS", 30)

# Provider API keys are encrypted with these Fernet keys (comma-separated, newest first).
# Unset: a key file in PLAYGROUND_DATA_DIR, created on first use. Never SECRET_KEY.
ENCRYPTION_KEYS = envlist("PLAYGROUND_ENCRYPTION_KEYS", "")
ENCRYPTION_KEY_FILE = DATA_DIR / "encryption.keys"

# The relay: a dedicated, capped pool of threads, one per streaming run.
RELAY_MAX_STREAMS = envint("PLAYGROUND_MAX_STREAMS", 128)
# Active runs (queued or streaming) one user, and one workspace, may have at once, counted
# in the database across processes; 0: no cap.
PLAYGROUND_MAX_STREAMS_PER_USER = envint("PLAYGROUND_MAX_STREAMS_PER_USER", 8)
PLAYGROUND_MAX_STREAMS_PER_WORKSPACE = envint("PLAYGROUND_MAX_STREAMS_PER_WORKSPACE", 32)
RELAY_COALESCE_MS = envfloat("PLAYGROUND_COALESCE_MS", 16)
# How long a thread may hold the GIL while another waits for it (Python's default: 5 ms).
# The server's event loop lets go of the GIL at every socket call, and while a request or
# relay thread computes it then waits this long to get it back: shorter, the answers the
# loop relays wait less behind submissions (the gil_switch fast path, server process only).
GIL_SWITCH_MS = envfloat("PLAYGROUND_GIL_SWITCH_MS", 0.5)
RELAY_CHECKPOINT_SECONDS = envfloat("PLAYGROUND_CHECKPOINT_SECONDS", 1.0)
RELAY_HEARTBEAT_SECONDS = envfloat("PLAYGROUND_HEARTBEAT_SECONDS", 5.0)
RELAY_STALE_AFTER_SECONDS = envfloat("PLAYGROUND_STALE_AFTER_SECONDS", 20.0)
RELAY_MAX_OUTPUT_CHARS = envint("PLAYGROUND_MAX_OUTPUT_CHARS", 2_000_000)

# Upstream deadlines (seconds) and retries.
UPSTREAM_CONNECT_TIMEOUT = envfloat("PLAYGROUND_CONNECT_TIMEOUT", 10)
UPSTREAM_FIRST_BYTE_TIMEOUT = envfloat("PLAYGROUND_FIRST_BYTE_TIMEOUT", 120)
UPSTREAM_IDLE_TIMEOUT = envfloat("PLAYGROUND_IDLE_TIMEOUT", 60)
UPSTREAM_TOTAL_TIMEOUT = envfloat("PLAYGROUND_TOTAL_TIMEOUT", 900)
UPSTREAM_MAX_RETRIES = envint("PLAYGROUND_MAX_RETRIES", 2)
UPSTREAM_MAX_RETRY_WAIT = envfloat("PLAYGROUND_MAX_RETRY_WAIT", 20)
# A PEM file of CA certificates to verify relays against instead of certifi's bundle.
UPSTREAM_CA_BUNDLE = os.getenv("PLAYGROUND_CA_BUNDLE") or None
# Relays at link-local and cloud metadata addresses, or at this playground's own address,
# are refused (when saved and when connecting: playground.netguard) unless this is on.
ALLOW_PRIVATE_RELAYS = envbool("PLAYGROUND_ALLOW_PRIVATE_RELAYS", "0")

# The built-in demo relay. Off (0): its routes answer 404.
DEMO_ENABLED = envbool("PLAYGROUND_DEMO", "1")
# The most tokens one Demo request may ask for, n × max_tokens.
DEMO_MAX_TOKENS = envint("PLAYGROUND_DEMO_MAX_TOKENS", 32768)
DEMO_TOKENS_PER_SECOND = envfloat("PLAYGROUND_DEMO_TOKENS_PER_SECOND", 40)
# Where the Demo provider is reached. Unset: this server's own listening address.
DEMO_BASE_URL = os.getenv("PLAYGROUND_DEMO_BASE_URL", "")

# Error reports (the DEBUG page included) hide keys, credentials and service addresses.
DEFAULT_EXCEPTION_REPORTER_FILTER = "playground.debug.SafeReporterFilter"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.getenv("LOG_LEVEL", "INFO")},
    "loggers": {
        # urllib3 logs full URLs and retries at DEBUG; keep it quiet whatever LOG_LEVEL says.
        "urllib3": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
    },
}
