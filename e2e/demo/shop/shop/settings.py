"""Settings of the demo shop. Everything that differs per environment comes from the
environment (/etc/wsgi/wsgi.env on the instance)."""
import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "demo-only-not-secret")
DEBUG = False
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "*").split(",")
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.admin",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "shop.urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
# SQLite in the app's state directory (StateDirectory=wsgi-app), writable by the app user.
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3",
                         "NAME": os.environ.get("DATABASE_PATH", "/var/lib/wsgi-app/shop.sqlite3")}}
STATIC_URL = "/static/"
# First boot sets STATIC_ROOT to <release>/static, which NGINX serves.
STATIC_ROOT = os.environ["STATIC_ROOT"] if "STATIC_ROOT" in os.environ else None
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
