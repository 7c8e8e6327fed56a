"""playground.api's decorator: each refusal a view raises becomes its JSON answer."""

import asyncio
import json

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.http import Http404, JsonResponse
from django.test import RequestFactory

from playground.access import Forbidden, LoggedOut, NoWorkspace
from playground.api import NOT_FOUND, Refused, api
from playground.capabilities import ProbeBusy, ProbeFailed
from playground.relay import RelayBusy
from playground.validation import Invalid

USER = User(id=1, username="alice")
CASES = [
    (
        Invalid({"title": "must be text"}),
        400,
        {"error": "title: must be text", "fields": {"title": "must be text"}},
    ),
    (
        Invalid({"body": "is 2.0 MB"}, status=413),
        413,
        {"error": "body: is 2.0 MB", "fields": {"body": "is 2.0 MB"}},
    ),
    (Invalid({"text": "No."}, message="No."), 400, {"error": "No.", "fields": {"text": "No."}}),
    (
        Refused(429, "Too many answers streaming.", cap="user", active=2, limit=2),
        429,
        {"error": "Too many answers streaming.", "cap": "user", "active": 2, "limit": 2},
    ),
    (Refused(409, "Still answering.", streaming=True), 409, {"error": "Still answering.", "streaming": True}),
    (LoggedOut(), 401, {"error": "Log in first."}),
    (Forbidden("Viewers cannot."), 403, {"error": "Viewers cannot."}),
    (Forbidden(), 403, {"error": "Your role does not allow that."}),
    (Http404("no such row"), 404, {"error": NOT_FOUND}),
    (NoWorkspace("in none"), 404, {"error": NOT_FOUND}),
    (RelayBusy(), 503, {"error": RelayBusy.message, "busy": True}),
    (ProbeBusy("A probe is running."), 503, {"error": "A probe is running.", "busy": True}),
    (ProbeFailed("The relay answered 500."), 502, {"error": "The relay answered 500."}),
]


def request(method="POST", body=b"{}", content_type="application/json", user=USER):
    made = RequestFactory().generic(method, "/api/x/", body, content_type=content_type)
    made.user = user

    async def auser():
        return user

    made.auser = auser
    return made


def answer(response):
    return response.status_code, json.loads(response.content)


@pytest.mark.parametrize(("exc", "status", "body"), CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_each_refusal_is_its_json_answer(exc, status, body):
    @api(methods={"POST": "workspace.read"})
    def view(request):
        raise exc

    @api(methods={"POST": "workspace.read"})
    async def async_view(request):
        raise exc

    assert answer(view(request())) == (status, body)
    assert answer(asyncio.run(async_view(request()))) == (status, body)


def test_other_exceptions_are_not_swallowed():
    @api(methods={"POST": "workspace.read"})
    def view(request):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        view(request())


def test_a_wrong_method_is_405_before_the_login_and_no_login_is_401():
    @api(methods={"POST": "workspace.read", "PATCH": "workspace.read"})
    def view(request):
        return JsonResponse({})

    refused = view(request("GET", user=AnonymousUser()))
    assert (refused.status_code, refused["Allow"]) == (405, "POST, PATCH")
    assert answer(view(request(user=AnonymousUser()))) == (401, {"error": "Log in first."})


@pytest.mark.parametrize(
    ("raw", "content_type", "status", "field"),
    [
        (b"a=1", "application/x-www-form-urlencoded", 415, "body"),
        (b"[1]", "application/json", 400, "body"),
        (b"{", "application/json", 400, "body"),
        (b'{"a": "\\u0000"}', "application/json", 400, "a"),
    ],
)
def test_request_json_refuses_what_is_not_a_json_object(raw, content_type, status, field):
    @api(methods={"POST": "workspace.read"}, json=True)
    def view(request):
        return JsonResponse(request.json())

    code, body = answer(view(request(body=raw, content_type=content_type)))
    assert code == status
    assert field in body["fields"]


def test_request_json_is_read_once_and_only_when_asked(settings):
    settings.PLAYGROUND_MAX_BODY_BYTES = 10

    @api(methods={"POST": "workspace.read"}, json=True)
    def first_checks(request):
        raise Forbidden("Viewers cannot.")  # before the body: its 413 is not the answer

    @api(methods={"POST": "workspace.read"}, json=True)
    def reads_twice(request):
        return JsonResponse({"same": request.json() is request.json(), **request.json()})

    assert answer(first_checks(request(body=b"x" * 100))) == (403, {"error": "Viewers cannot."})
    assert answer(reads_twice(request(body=b'{"a": 1}'))) == (200, {"same": True, "a": 1})
    assert answer(reads_twice(request(body=b'{"a": 12345}')))[0] == 413
