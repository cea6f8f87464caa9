import os
import socket

from django.contrib.auth.models import User
from django.http import HttpResponse, JsonResponse
from django.urls import path


def health(request):
    # The load balancer's check: the database answers, so migrations ran.
    User.objects.exists()
    return HttpResponse("ok\n")


def index(request):
    return JsonResponse({
        "app": "shop",
        "unit": os.environ.get("WSGI_UNIT"),
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "release": os.path.basename(os.path.realpath(".")),
        "users": User.objects.count(),
    })


urlpatterns = [path("healthz", health), path("", index)]
