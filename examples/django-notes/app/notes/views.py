"""Four endpoints: a health check that reaches the database, the version, POST a note
(a row written on every POST, its id returned once committed), and the count of notes."""
import os

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
