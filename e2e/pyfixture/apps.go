package pyfixture

// DjangoFiles are a small Django app (SQLite, the admin's static files), the e2e tests' and
// the benchmarks' Django release.
var DjangoFiles = map[string]string{
	"manage.py": `import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    from django.core.management import execute_from_command_line
    execute_from_command_line(sys.argv)
`,
	"mysite/__init__.py": "",
	"mysite/settings.py": `import os

SECRET_KEY = "e2e-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "django.contrib.sessions",
                  "django.contrib.messages", "django.contrib.staticfiles", "django.contrib.admin"]
MIDDLEWARE = ["django.contrib.sessions.middleware.SessionMiddleware",
              "django.contrib.auth.middleware.AuthenticationMiddleware",
              "django.contrib.messages.middleware.MessageMiddleware"]
ROOT_URLCONF = "mysite.urls"
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True,
              "OPTIONS": {"context_processors": ["django.template.context_processors.request",
                                                 "django.contrib.auth.context_processors.auth",
                                                 "django.contrib.messages.context_processors.messages"]}}]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["DATABASE_PATH"]}}
STATIC_URL = "/static/"
STATIC_ROOT = os.environ["STATIC_ROOT"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
`,
	"mysite/urls.py": `import os

from django.contrib.auth.models import User
from django.http import HttpResponse
from django.urls import path


def health(request):
    return HttpResponse("ok\n")


def index(request):
    return HttpResponse("unit=%s users=%d release=%s\n" % (os.environ.get("WSGI_UNIT"), User.objects.count(), os.environ.get("RELEASE", "")))


def secrets(request):
    # Digests, not values: the test proves the app read each secret without a response carrying it.
    import hashlib
    names = ["DJANGO_SECRET_KEY", "DATABASE_URL"]
    return HttpResponse("".join("%s=%s\n" % (n, hashlib.sha256(os.environ.get(n, "").encode()).hexdigest()) for n in names))


urlpatterns = [path("healthz", health), path("secrets", secrets), path("", index)]
`,
	"mysite/wsgi.py": `import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
application = get_wsgi_application()
`,
}

// FastcounterFiles are the C-extension fixture: an sdist with an in-tree PEP 517 backend that
// compiles one C file with the interpreter's compiler and headers, so building it needs
// build-essential and python3-dev and nothing from an index (no setuptools wheel exists offline
// here).
var FastcounterFiles = map[string]string{
	"pyproject.toml": `[build-system]
requires = []
build-backend = "backend"
backend-path = ["."]
`,
	"PKG-INFO": "Metadata-Version: 2.1\nName: fastcounter\nVersion: 1.0\n",
	"fastcounter/__init__.py": `from ._speedups import triangle

__all__ = ["triangle"]
`,
	"src/speedups.c": `#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* triangle(n): 1 + 2 + ... + n, in C. */
static PyObject *triangle(PyObject *self, PyObject *args) {
    long long n, sum = 0;
    if (!PyArg_ParseTuple(args, "L", &n))
        return NULL;
    for (long long i = 1; i <= n; i++)
        sum += i;
    return PyLong_FromLongLong(sum);
}

static PyMethodDef methods[] = {{"triangle", triangle, METH_VARARGS, "1 + ... + n"}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_speedups", NULL, -1, methods};
PyMODINIT_FUNC PyInit__speedups(void) { return PyModule_Create(&module); }
`,
	"backend.py": `"""A minimal PEP 517 backend: compiles src/speedups.c into a platform wheel."""
import base64
import hashlib
import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
import zipfile

NAME, VERSION = "fastcounter", "1.0"


def _tag():
    impl = "cp%d%d" % sys.version_info[:2]
    return "%s-%s-%s" % (impl, impl, sysconfig.get_platform().replace("-", "_").replace(".", "_"))


def get_requires_for_build_wheel(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    tag = _tag()
    so = "_speedups" + sysconfig.get_config_var("EXT_SUFFIX")
    out = os.path.join(tempfile.mkdtemp(), so)
    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
    subprocess.check_call(cc + ["-shared", "-fPIC", "-O2", "-I" + sysconfig.get_paths()["include"], "src/speedups.c", "-o", out])
    info = "%s-%s.dist-info/" % (NAME, VERSION)
    files = {
        "fastcounter/__init__.py": open("fastcounter/__init__.py", "rb").read(),
        "fastcounter/" + so: open(out, "rb").read(),
        info + "METADATA": ("Metadata-Version: 2.1\nName: %s\nVersion: %s\n" % (NAME, VERSION)).encode(),
        info + "WHEEL": ("Wheel-Version: 1.0\nGenerator: fastcounter-backend\nRoot-Is-Purelib: false\nTag: %s\n" % tag).encode(),
    }
    name = "%s-%s-%s.whl" % (NAME, VERSION, tag)
    record = []
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append("%s,sha256=%s,%d" % (path, digest, len(data)))
        record.append(info + "RECORD,,")
        z.writestr(info + "RECORD", "\n".join(record) + "\n")
    return name
`,
}

// ShopURLs are the shop's urls.py: its page shows where each requirement was imported from.
var ShopURLs = `import os

import asgiref
import django
import fastcounter
import greeting
import sqlparse
from django.contrib.auth.models import User
from django.http import HttpResponse
from django.urls import path


def health(request):
    return HttpResponse("ok\n")


def index(request):
    return HttpResponse("unit=%s users=%d django=%s triangle=%d greeting=%s sqlparse=%s from=%s\n" % (
        os.environ.get("WSGI_UNIT"), User.objects.count(), django.get_version(), fastcounter.triangle(100),
        greeting.hello(), sqlparse.__version__, os.path.dirname(os.path.dirname(fastcounter.__file__))))


urlpatterns = [path("healthz", health), path("", index)]
`
