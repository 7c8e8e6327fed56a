"""Under /api/, every answer is JSON, Django's own error pages included.

The JSON API's views answer their refusals as `{"error": …, "fields": …}`; what
Django answers before or around them (no such URL, a method not allowed, a CSRF
failure, a body its request parsing refuses, an uncaught exception) is an HTML
page, a debug page with DEBUG on. This middleware replaces those with
`{"error": …}` and the same status, with nothing of the page in it: the
exception is still logged by Django as usual.

A form body (which the CSRF check reads itself, before any view) larger than
DATA_UPLOAD_MAX_MEMORY_SIZE is refused here with a 413 before anything reads it;
Django would refuse it with a bare 400. JSON bodies are read only by the views
(`playground.api.request_body`), which answer 413 and 415 themselves.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

API_PREFIX = "/api/"
PARSED_BY_DJANGO = ("multipart/", "application/x-www-form-urlencoded")  # request.POST reads these
MESSAGES = {
    400: "The request could not be read.",
    403: "Forbidden: reload the page (the CSRF check failed, or you are not allowed).",
    404: "Not found.",
    413: "The request's body is too large.",
    500: "The server failed while answering; the error is logged.",
}


class ApiErrorsMiddleware:
    """Synchronous only, like the middleware around it."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith(API_PREFIX):
            return self.get_response(request)
        if request.content_type.startswith(PARSED_BY_DJANGO) and declared_length(request) > (
            settings.DATA_UPLOAD_MAX_MEMORY_SIZE or float("inf")
        ):
            return json_page(413, "The request's body is too large (and the API takes JSON, not a form).")
        response = self.get_response(request)
        if response.status_code < 400 or response.get("Content-Type", "").startswith("application/json"):
            return response
        return as_json(request, response)


def declared_length(request: HttpRequest) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def json_page(status: int, message: str, **extra) -> JsonResponse:
    return JsonResponse({"error": message, **extra}, status=status)


def as_json(request: HttpRequest, response: HttpResponse) -> JsonResponse:
    """Django's error page as JSON: the status, its headers that matter, plain words."""
    status = response.status_code
    if status == 405:
        allowed = response.get("Allow", "")
        answer = json_page(405, f"{request.method} is not allowed here; use {allowed}.", allowed=allowed)
        answer["Allow"] = allowed
        return answer
    message = MESSAGES.get(status) or MESSAGES[500 if status >= 500 else 400]
    return json_page(status, message)
