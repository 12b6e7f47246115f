"""Settings for Ensemble Arena, all from environment variables.

With nothing set, the arena runs embedded: SQLite and files under ARENA_DATA_DIR, and the
Redis that `manage.py up` starts. DATABASE_URL and REDIS_URL point it at Postgres and an
external Redis instead; ARENA_ENV=production turns on the deployment checks.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from arena.env import env_bool, env_int, env_list, env_secret, env_str
from ensembles.net import parse_allowed

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("ARENA_DATA_DIR", str(BASE_DIR / "data"))).expanduser().resolve()
# Conversions of model files (GGUF exports) are shared by every checkout on the machine.
CACHE_DIR = Path(env_str("ARENA_CACHE_DIR", str(Path.home() / ".cache" / "ensemble-arena"))).expanduser()
MODELS_DIR = DATA_DIR / "models"

# Models come from local files; nothing reaches out to a model hub unless asked to.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

PRODUCTION = env_str("ARENA_ENV", "development") == "production"
# Off unless asked for, `make up` included: DEBUG shows a 500's traceback and local variables, and a
# 404's URL patterns, to whoever sent the request.
DEBUG = env_bool("ARENA_DEBUG", False)


def _secret_key() -> str:
    key = env_secret("ARENA_SECRET_KEY")
    if key:
        return key
    if PRODUCTION:
        raise ImproperlyConfigured("ARENA_SECRET_KEY (or ARENA_SECRET_KEY_FILE) is required in production")
    # Development: one random key per data directory, kept so sessions survive restarts.
    path = DATA_DIR / "secret_key"
    if not path.exists():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ARENA_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("ARENA_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    # As an app, django-ninja serves its bundled Swagger UI from static/ninja/ instead of a CDN.
    "ninja",
    "django_celery_beat",
    "axes",
    "arena.core",
    "arena.teams",
    "arena.registry",
    "arena.benchmarks",
    "arena.evaluations",
    "arena.leaderboard",
    "arena.serving",
    "arena.schedules",
    "arena.alerts",
    "arena.search",
    "arena.deployment",
]

MIDDLEWARE = [
    # First: every line logged while a request is served, a 500's traceback among them, carries its id.
    "arena.core.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "arena.core.middleware.ControlCharacterMiddleware",
    "arena.core.middleware.DataErrorMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "arena.urls"
ASGI_APPLICATION = "arena.asgi.application"
WSGI_APPLICATION = None

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
                "arena.teams.context.teams",
            ],
        },
    },
]

SQLITE_PATH = DATA_DIR / "arena.sqlite3"
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{SQLITE_PATH}"), conn_max_age=env_int("DB_CONN_MAX_AGE", 0)
    )
}
# A password kept out of the URL, e.g. in a secret file shared with the database container.
if database_password := env_secret("DATABASE_PASSWORD"):
    DATABASES["default"]["PASSWORD"] = database_password
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server and the worker write at once: WAL lets readers go on, IMMEDIATE
    # transactions take the write lock up front instead of failing on upgrade.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
# The web server (ASGI) runs each request's and each websocket's database work in a thread of its
# own, so without a pool every one of them opens a new PostgreSQL connection; a pool hands them a
# warm one (bench/README.md, "Load"). For web processes only: with it on in prefork Celery workers
# too, a test run never started.
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env_bool("ARENA_DB_POOL", False):
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # Django's pool and persistent connections exclude each other
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 2,
        "max_size": env_int("ARENA_DB_POOL_SIZE", 20, minimum=2),
        "timeout": 10,
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # Live events are best-effort (the database is the truth), so they may live on a Redis of their own.
        "CONFIG": {"hosts": [env_str("ARENA_CHANNEL_LAYER_URL", REDIS_URL)], "capacity": 1500, "expiry": 30},
    }
}

# Shared by web processes and workers: live snapshots built once per change (arena/core/cache.py).
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "arena",
        "OPTIONS": {
            "serializer": "arena.core.cache.JSONSerializer",
            "socket_connect_timeout": 1,
            "socket_timeout": 1,
        },
    }
}

CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A task sent while the broker is away waits for it to return (about two minutes at most) instead of
# being lost, which would leave its run waiting forever; Celery's default gives up within a second.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 30, "interval_start": 0, "interval_step": 1, "interval_max": 5}
# A task's hard limit stays below the broker's visibility timeout, so an unacked task is
# only redelivered once its first worker is surely gone.
CELERY_TASK_TIME_LIMIT = env_int("ARENA_TASK_TIME_LIMIT", 1800, minimum=60)
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - 30
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_TASK_TIME_LIMIT + 600}
CELERY_TASK_DEFAULT_QUEUE = "cpu"
# GPU queues: `gpu`, or `gpu.0` … `gpu.<N-1>` with N shards, a model's batches always to one
# shard so its workers keep the weights loaded (arena/core/routing.py).
ARENA_GPU_SHARDS = env_int("ARENA_GPU_SHARDS", 1, minimum=1)
CELERY_TASK_ROUTES = [
    "arena.evaluations.routing.route_task",
    {"arena.evaluations.tasks.*": {"queue": "cpu"}},
]
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# Work items are retried at most this many times before the run marks them failed.
ARENA_MAX_ATTEMPTS = env_int("ARENA_MAX_ATTEMPTS", 3, minimum=1)
ARENA_BATCH_SIZE = env_int("ARENA_BATCH_SIZE", 8, minimum=1)
# /v1 chat answers of local models are generated on a GPU worker, concurrent requests for one model
# in one batch (arena/serving/batching.py); off, the web process generates them itself, one at a time.
# `manage.py up` and docker/compose.yaml turn it on, as they start the workers that serve.
ARENA_SERVE_ON_WORKER = env_bool("ARENA_SERVE_ON_WORKER", False)
# How long a /v1 request waits for its worker before it is answered with a 503 (no worker took it) or a 504.
ARENA_SERVE_TIMEOUT_S = env_int("ARENA_SERVE_TIMEOUT_S", 120, minimum=1)
# How long a worker lets a batch fill before it generates: added to a lone request's wait, it lets
# requests sent together, which reach the worker milliseconds apart, go in one batch.
ARENA_SERVE_GATHER_MS = env_int("ARENA_SERVE_GATHER_MS", 50, minimum=0)
# How many worker processes may generate batches of one model at once: 1 where a worker process has
# a GPU to itself; `manage.py up` sets its worker's concurrency, processes that share the CPU cores.
ARENA_SERVE_PARALLEL = env_int("ARENA_SERVE_PARALLEL", 1, minimum=1)
# Suite uploads: per file, and items per suite (page and API alike).
ARENA_SUITE_MAX_BYTES = env_int("ARENA_SUITE_MAX_BYTES", 20 * 1024 * 1024, minimum=1024)
ARENA_SUITE_MAX_ITEMS = env_int("ARENA_SUITE_MAX_ITEMS", 50_000, minimum=10)
# A JSON API upload carries up to three files' text in its body, JSON-escaped.
DATA_UPLOAD_MAX_MEMORY_SIZE = 3 * ARENA_SUITE_MAX_BYTES + 1024 * 1024
ARENA_MAX_LOADED_MODELS = env_int("ARENA_MAX_LOADED_MODELS", 3, minimum=1)
# Local model paths must lie under one of these roots.
ARENA_MODEL_ROOTS = [Path(p).expanduser() for p in env_list("ARENA_MODEL_ROOTS", [str(MODELS_DIR)])]
# Where the arena writes models it makes (merges, fine-tunes): writable, and shared by every worker.
ARENA_BUILT_MODELS_DIR = Path(env_str("ARENA_BUILT_MODELS_DIR", str(DATA_DIR / "built"))).expanduser()
# Endpoint members, judges and webhooks reach public addresses and these hosts and CIDRs (arena/core/outbound.py);
# outside production loopback too, for a server of one's own. Never the ports of Redis, the database or PORT.
ARENA_OUTBOUND_ALLOW = env_list("ARENA_OUTBOUND_ALLOW", [] if PRODUCTION else ["127.0.0.0/8", "::1"])
try:
    parse_allowed(ARENA_OUTBOUND_ALLOW)
except ValueError as exc:
    raise ImproperlyConfigured(f"ARENA_OUTBOUND_ALLOW: {exc}") from None
# The web server's port (`manage.py up --port` passes it on to the worker it starts).
ARENA_WEB_PORT = env_int("PORT", 8000, minimum=1)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Login attempts are rate-limited by django-axes: it sees every authenticate() call (the login page
# and the admin's), and keeps its counts in the database, which every web replica shares.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env_int("ARENA_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("ARENA_LOGIN_COOLOFF_MINUTES", 15, minimum=1))
# Per username and address together: a guesser is stopped without locking the real user out elsewhere.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/lockout.html"
AXES_HTTP_RESPONSE_CODE = 429
# Bad API tokens are counted per address in the shared cache (arena/teams/services.py): past the
# limit, every token from that address gets 429 until the window ends.
ARENA_TOKEN_FAILURE_LIMIT = env_int("ARENA_TOKEN_FAILURE_LIMIT", 20, minimum=1)
ARENA_TOKEN_COOLOFF_S = 60 * env_int("ARENA_TOKEN_COOLOFF_MINUTES", 15, minimum=1)
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    # vendor/plotly.min.js from the installed plotly package (never a CDN, never committed).
    "arena.core.staticfiles.PlotlyFinder",
]
STATIC_ROOT = DATA_DIR / "staticfiles"
# Collected files get hashed names, gzip and a year's max-age (plotly.min.js is 4.8 MB): in
# production, and under `manage.py up`, which runs collectstatic first and sets this for its children.
COLLECTED_STATIC = PRODUCTION or env_bool("ARENA_COLLECTED_STATIC", False)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "arena.core.staticfiles.CollectedStaticStorage"
        if COLLECTED_STATIC
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = not COLLECTED_STATIC
if not COLLECTED_STATIC:
    # Development serves static files through the finders; the empty root keeps WhiteNoise quiet.
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)

EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "arena@localhost")
# SMTP, for EMAIL_BACKEND=django.core.mail.backends.smtp.EmailBackend (regression alerts).
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_secret("EMAIL_HOST_PASSWORD") or ""
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = 10
# Where links in notifications point, e.g. https://arena.example.org (empty: paths only).
ARENA_PUBLIC_URL = env_str("ARENA_PUBLIC_URL", "")
# Regression notices (email, webhook) are retried with exponential backoff from this many seconds
# (at most an hour between attempts), up to this many attempts.
ARENA_NOTICE_RETRY_S = env_int("ARENA_NOTICE_RETRY_S", 30, minimum=1)
ARENA_NOTICE_ATTEMPTS = env_int("ARENA_NOTICE_ATTEMPTS", 10, minimum=1)
# How long one attempt may take before another worker may take the notice over (its sender died).
ARENA_NOTICE_LEASE_S = env_int("ARENA_NOTICE_LEASE_S", 120, minimum=1)

SESSION_COOKIE_SECURE = PRODUCTION
CSRF_COOKIE_SECURE = PRODUCTION
SECURE_SSL_REDIRECT = env_bool("ARENA_SSL_REDIRECT", PRODUCTION)
SECURE_HSTS_SECONDS = env_int("ARENA_HSTS_SECONDS", 31536000 if PRODUCTION else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = PRODUCTION
SECURE_HSTS_PRELOAD = PRODUCTION
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if PRODUCTION else None

# Every record carries the run and the Celery task it belongs to (arena/core/logs.py).
LOG_FORMAT = env_str("ARENA_LOG_FORMAT", "text")
if LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured(f"ARENA_LOG_FORMAT={LOG_FORMAT!r} must be text or json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "arena.core.logs.ContextFilter"}},
    "formatters": {
        "text": {"()": "arena.core.logs.TextFormatter"},
        "json": {"()": "arena.core.logs.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["context"]}},
    "root": {"handlers": ["console"], "level": env_str("ARENA_LOG_LEVEL", "INFO")},
    # axes: failed and locked-out logins are warnings; its start-up banner and every good login are not news.
    "loggers": {
        "daphne": {"level": "WARNING"},
        "django.channels.server": {"level": "WARNING"},
        "axes": {"level": "WARNING"},
    },
}
