"""The JSON API's one decorator, `api`, and what it answers for each refusal.

Every view under /api/ is wrapped by `api(methods={method: action}, json=…)`: it
declares the policy action each method takes (playground.access.POLICY; the view checks
it against the object it acts on), answers 405 for another method, 401 without a
login, and turns the exceptions a view (or what it calls) raises into JSON answers, so
views hold no try/except for them:

- `Invalid` (playground.validation): its status (400; 413 or 415 for the body) with
  `{"error": …, "fields": {field: why}}`;
- `LoggedOut` 401, `Forbidden` 403, `Http404` (`NoWorkspace` included) 404
  (playground.access);
- `Refused`: its status, message and details (a stream cap's 429, a streaming
  conversation's 409, …);
- `RelayBusy` (playground.relay) and `ProbeBusy` 503 with `busy: true`; `ProbeFailed` 502.

With `json=True` the view reads its JSON object with `request.json()`: read and
parsed on the first call (so the view's own checks, 404 and 403, answer first),
refused as `Invalid` (415 for a form's body, 413 past the limit, 400 for anything
not a JSON object).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from inspect import iscoroutinefunction

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse

from playground.access import Forbidden, LoggedOut, declare
from playground.api_errors import declared_length
from playground.capabilities import ProbeBusy, ProbeFailed
from playground.relay import RelayBusy
from playground.validation import Invalid, parse_json

NOT_FOUND = "Not found, or not in your workspaces."
FORM_TYPES = ("multipart/", "application/x-www-form-urlencoded", "text/plain")


class Refused(Exception):
    """A request refused as it stands: `status` (409, 429, …), a message in plain words,
    and details that go into the answer's body beside it."""

    def __init__(self, status: int, message: str, **details) -> None:
        super().__init__(message)
        self.status, self.message, self.details = status, message, details


def json_error(status: int, message: str, **extra) -> JsonResponse:
    return JsonResponse({"error": message, **extra}, status=status)


def refusal(exc: Exception) -> JsonResponse:
    """The answer to one of `REFUSALS`."""
    if isinstance(exc, Invalid):
        return json_error(exc.status, str(exc), fields=exc.errors)
    if isinstance(exc, Refused):
        return json_error(exc.status, exc.message, **exc.details)
    if isinstance(exc, LoggedOut):
        return json_error(401, "Log in first.")
    if isinstance(exc, Forbidden):
        return json_error(403, str(exc) or "Your role does not allow that.")
    if isinstance(exc, Http404):
        return json_error(404, NOT_FOUND)
    if isinstance(exc, RelayBusy):
        return json_error(503, exc.message, busy=True)
    if isinstance(exc, ProbeBusy):
        return json_error(503, str(exc), busy=True)
    assert isinstance(exc, ProbeFailed)
    return json_error(502, str(exc))


REFUSALS = (Invalid, Refused, LoggedOut, Forbidden, Http404, RelayBusy, ProbeBusy, ProbeFailed)


def request_body(request: HttpRequest, limit: int | None = None) -> bytes:
    """The raw body of a JSON request, or Invalid: 415 for a form's body, 413 past `limit`
    bytes (PLAYGROUND_MAX_BODY_BYTES unless given), told before reading it when the
    request says its length."""
    if request.content_type.startswith(FORM_TYPES):
        reason = f"must be JSON (Content-Type: application/json), not {request.content_type}"
        raise Invalid({"body": reason}, status=415)
    limit = settings.PLAYGROUND_MAX_BODY_BYTES if limit is None else limit
    declared = declared_length(request)
    raw = b"" if declared > limit else request.read(limit + 1)
    if declared > limit or len(raw) > limit:
        mb = 1024 * 1024
        size = f"{max(declared, len(raw)) / mb:.1f} MB" if declared else f"over {limit / mb:g} MB"
        raise Invalid({"body": f"is {size}; at most {limit / mb:g} MB is accepted here"}, status=413)
    return raw


def read_json(request: HttpRequest, limit: int | None = None) -> dict:
    """A JSON object from the request's body (`request_body`, then `parse_json`; an
    empty body is `{}`), or Invalid."""
    data = parse_json(request_body(request, limit) or b"{}")
    if not isinstance(data, dict):
        raise Invalid({"body": "must be a JSON object"})
    return data


def api(*, methods: dict[str, str], json: bool = False, limit: int | None = None) -> Callable:
    """Wrap a JSON API view (sync or async): `methods` maps each method it answers to the
    policy action it takes (`access.declare`; another method is a 405, as Django's
    require_http_methods), 401 without a login, `REFUSALS` answered as JSON. `json`:
    `request.json()` gives the body's JSON object (at most `limit` bytes, see
    `request_body`)."""
    allowed = [m.upper() for m in methods]

    def decorate(view: Callable) -> Callable:
        def prepare(request: HttpRequest) -> HttpResponse | None:
            if request.method not in allowed:
                return HttpResponseNotAllowed(allowed)
            if json:
                request.json = _json_reader(request, limit)
            return None

        if iscoroutinefunction(view):

            @wraps(view)
            async def async_wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
                if (refused := prepare(request)) is not None:
                    return refused
                if not (await request.auser()).is_authenticated:
                    return refusal(LoggedOut())
                try:
                    return await view(request, *args, **kwargs)
                except REFUSALS as exc:
                    return refusal(exc)

            return declare(async_wrapper, methods)

        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if (refused := prepare(request)) is not None:
                return refused
            if not request.user.is_authenticated:
                return refusal(LoggedOut())
            try:
                return view(request, *args, **kwargs)
            except REFUSALS as exc:
                return refusal(exc)

        return declare(wrapper, methods)

    return decorate


def _json_reader(request: HttpRequest, limit: int | None) -> Callable[[], dict]:
    parsed: list[dict] = []

    def read() -> dict:
        if not parsed:
            parsed.append(read_json(request, limit))
        return parsed[0]

    return read
