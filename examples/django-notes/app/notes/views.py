"""A health check that reaches the database, the version, POST a note (a row written on
every POST, its id returned once committed), the count of notes, and a long request."""
import os
import time

from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from .models import Note

VERSION = os.environ.get("APP_VERSION", "1")


def healthz(request):
    if os.environ.get("APP_BROKEN") == "1":  # a bad release, for the demo and the tests
        return HttpResponse("broken release\n", status=500, content_type="text/plain")
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return HttpResponse("ok\n", content_type="text/plain")


def version(request):
    return HttpResponse(f"version {VERSION}\n", content_type="text/plain")


@csrf_exempt
def notes(request):
    if request.method == "POST":
        note = Note.objects.create(body=request.body.decode(errors="replace")[:1000], version=VERSION)
        return JsonResponse({"id": note.id, "version": VERSION}, status=201)
    return JsonResponse({"count": Note.objects.count(), "version": VERSION})


def slow(request):
    """A long request (an export, a report): it holds its worker for a few seconds. The demo
    keeps some in flight across every rollout, and they must all complete."""
    try:
        seconds = min(max(float(request.GET.get("seconds", "3")), 0.0), 10.0)
    except ValueError:
        return HttpResponse("seconds: a number of seconds, at most 10\n", status=400, content_type="text/plain")
    time.sleep(seconds)
    return HttpResponse(f"version {VERSION}\n", content_type="text/plain")
