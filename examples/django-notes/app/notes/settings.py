"""Settings of the example: PostgreSQL from the environment, the password from a secret file."""
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["notes"]
MIDDLEWARE = []
ROOT_URLCONF = "notes.urls"
WSGI_APPLICATION = "notes.wsgi.application"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def _password() -> str:
    path = os.environ.get("DB_PASSWORD_FILE")
    if path:
        with open(path) as fh:
            return fh.read().strip()
    return os.environ.get("DB_PASSWORD", "")


DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ.get("DB_HOST", "db"),
        "PORT": os.environ.get("DB_PORT", "5432"),
        "NAME": os.environ.get("DB_NAME", "app"),
        "USER": os.environ.get("DB_USER", "app"),
        "PASSWORD": _password(),
        # Persistent connections: each gunicorn worker keeps its connection across requests.
        "CONN_MAX_AGE": int(os.environ.get("DB_CONN_MAX_AGE", "300")),
        "OPTIONS": {"connect_timeout": 5},
    }
}

LOGGING = {
    "version": 1,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django.request": {"handlers": ["console"], "level": "ERROR"}},
}
