"""The answer to an unhandled exception (urls.handler500).

A database that refuses or drops the connection (OperationalError: too many clients, a
restart) is a temporary condition, not a bug: 503 with Retry-After, in JSON under /api/.
Anything else is Django's 500 (JSON under /api/). Neither says more than that: the
details go to the log, through playground.debug's filter.
"""

from __future__ import annotations

import sys

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults

UNAVAILABLE = "The server's database is busy or restarting: try again in a few seconds."
RETRY_AFTER_SECONDS = 5


def server_error(request: HttpRequest) -> HttpResponse:
    exc = sys.exc_info()[1]
    api = request.path.startswith("/api/")
    if isinstance(exc, OperationalError | InterfaceError):
        if api:
            response = JsonResponse({"error": UNAVAILABLE, "busy": True}, status=503)
        else:
            response = HttpResponse(UNAVAILABLE, status=503, content_type="text/plain; charset=utf-8")
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    if api:
        return JsonResponse({"error": "Server error: the request failed; it has been logged."}, status=500)
    return defaults.server_error(request)
