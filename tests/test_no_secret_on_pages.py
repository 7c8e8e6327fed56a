"""Issue 15, section 1: no secret ever reaches a page, even on an error.

The provider key, REDIS_URL's password and the cache's location stay off Django's
DEBUG page and out of the log when a submission fails; a relay that echoes the key
back has it scrubbed before anything is stored or shown.
"""

import json
import logging

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.test import Client

from playground.debug import SafeReporterFilter
from playground.keys import Secret
from playground.models import Conversation, Membership
from playground.upstream import build_headers
from playground.views import runs as views
from tests.conftest import CANARY_KEY
from tests.fakes import echo_authorization, respond
from tests.test_keys import everything_stored
from tests.test_relay import headers as request_headers
from tests.test_relay import session_cookie, submit, wait_for

REDIS_PASSWORD = "redis-canary-pass-4e1f"
CACHE_LOCATION = "cache-canary-location-9b2c"


def viewer(workspace) -> User:
    user = User.objects.create_user("vera", password="vera-password")
    Membership.objects.update_or_create(
        user=user, workspace=workspace, defaults={"role": Membership.Role.VIEWER}
    )
    return user


@pytest.mark.django_db
def test_issue15_1_a_500_in_the_submit_path_shows_no_secret_on_the_debug_page_or_in_the_log(
    settings, alice, workspace, provider, monkeypatch, caplog
):
    settings.DEBUG = True
    # Under /api/ the answer is JSON (playground.api_errors); without that middleware it is
    # Django's technical page, frames and settings shown, as every other path gets it.
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if not m.endswith("ApiErrorsMiddleware")]
    settings.REDIS_URL = f"redis://:{REDIS_PASSWORD}@127.0.0.1:6379/1"
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": CACHE_LOCATION}
    }

    def create_run_at_fault(user, conv, provider, data, target, *rest):
        """A fault where the frames hold the key: the Secret, its revealed text, a header dict."""
        sent_headers = build_headers(target.api_key, target.headers, stream=True)
        plain = target.api_key.reveal()
        raise RuntimeError(f"the relay connection broke ({len(sent_headers)} headers, {len(plain)} chars)")

    monkeypatch.setattr(views, "create_run", create_run_at_fault)
    caplog.set_level(logging.DEBUG)
    client = Client(raise_request_exception=False, HTTP_ACCEPT="text/html")
    client.force_login(alice)
    conversation = Conversation.objects.create(workspace=workspace, creator=alice)
    body = {"provider": provider.id, "model": "fake-model", "message": "hello", "params": {"stream": True}}
    response = client.post(
        f"/api/conversations/{conversation.id}/runs/", json.dumps(body), content_type="application/json"
    )
    page = response.content.decode()
    assert response.status_code == 500
    assert "the relay connection broke" in page  # the technical page, with its frames
    assert "create_run_at_fault" in page
    assert "Secret(&#x27;sk-…8a0b&#x27;)" in page  # the Secret shows its mask
    logged = "\n".join([caplog.text, *(r.getMessage() for r in caplog.records if r.name == "django.request")])
    assert "Internal Server Error" in logged
    for text in (page, logged):
        assert CANARY_KEY not in text
        assert CANARY_KEY[3:] not in text
        assert REDIS_PASSWORD not in text
        assert CACHE_LOCATION not in text


def test_issue15_1_the_reporter_filter_hides_service_addresses_and_credentials():
    cleanse = SafeReporterFilter().cleanse_setting
    layers = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": f"redis://:{REDIS_PASSWORD}@redis:6379/0"}]},
        }
    }
    shown = repr(
        [
            cleanse("CHANNEL_LAYERS", layers),
            cleanse("REDIS_URL", "redis://redis:6379/0"),
            cleanse("SENTRY_DSN", f"https://user:{REDIS_PASSWORD}@sentry.example/1"),
            cleanse("EXTRA", {"Authorization": f"Bearer {CANARY_KEY}", "note": f"Bearer {CANARY_KEY}"}),
            cleanse("SOME_SETTING", Secret(CANARY_KEY)),
        ]
    )
    assert REDIS_PASSWORD not in shown
    assert "redis:6379" not in shown
    assert CANARY_KEY not in shown
    assert cleanse("STATIC_URL", "/static/") == "/static/"


@pytest.mark.django_db
def test_issue15_1_a_malformed_model_list_is_a_clean_error_for_a_viewer(workspace, provider, fake_relay):
    fake_relay.script(respond(200, {"data": 5}))
    client = Client(raise_request_exception=False)
    client.force_login(viewer(workspace))
    response = client.get(f"/api/providers/{provider.id}/models/")
    assert response.status_code == 200
    assert response.json()["models"] == []
    assert "model list" in response.json()["error"]


@pytest.mark.django_db(transaction=True)
async def test_issue15_1_a_relay_echoing_the_authorization_header_has_it_scrubbed(
    alice, workspace, provider, fake_relay
):
    from channels.testing import HttpCommunicator

    from playground.asgi import application

    fake_relay.script(echo_authorization())
    conversation = await Conversation.objects.acreate(workspace=workspace, creator=alice)
    status, answer = await submit(await sync_to_async(session_cookie)(alice), conversation, provider, "hi")
    assert status == 201, answer
    run = await wait_for(answer["run"]["id"])
    assert fake_relay.requests[-1].headers["Authorization"] == f"Bearer {CANARY_KEY}"
    assert run.status == "completed"
    vera = await sync_to_async(viewer)(workspace)
    communicator = HttpCommunicator(
        application,
        "GET",
        f"/api/runs/{run.id}/",
        headers=request_headers(await sync_to_async(session_cookie)(vera)),
    )
    response = await communicator.get_response(timeout=10)
    assert response["status"] == 200
    shown = response["body"].decode()
    inspector = json.loads(shown)
    assert inspector["response_headers"]["X-Echo-Authorization"] == "Bearer [api key]"
    assert "you sent Bearer [api key]" in shown
    for text in (shown, await sync_to_async(everything_stored)()):
        assert CANARY_KEY not in text
        assert CANARY_KEY[3:] not in text


def test_issue15_1_form_fields_named_after_secrets_are_hidden_with_debug_on(rf, settings):
    settings.DEBUG = True
    request = rf.post("/admin/", {"api_key": CANARY_KEY, "name": "Fake"})
    shown = SafeReporterFilter().get_post_parameters(request)
    assert shown["name"] == "Fake"
    assert CANARY_KEY not in repr(dict(shown))


@pytest.mark.django_db
def test_issue17_a_500_while_testing_a_provider_shows_no_key_on_the_debug_page_or_in_the_log(
    settings, alice, provider, monkeypatch, caplog
):
    from playground.views import providers as provider_views

    settings.DEBUG = True
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if not m.endswith("ApiErrorsMiddleware")]

    def list_models_at_fault(base_url, api_key, extra_headers):
        plain = api_key.reveal()
        raise RuntimeError(f"the model listing broke ({len(plain)} chars)")

    monkeypatch.setattr(provider_views, "list_models", list_models_at_fault)
    caplog.set_level(logging.DEBUG)
    client = Client(raise_request_exception=False, HTTP_ACCEPT="text/html")
    client.force_login(alice)
    response = client.post(f"/api/providers/{provider.id}/test/")
    page = response.content.decode()
    assert response.status_code == 500
    assert "list_models_at_fault" in page
    logged = "\n".join([caplog.text, *(r.getMessage() for r in caplog.records)])
    for text in (page, logged, json.dumps(dict(response.headers))):
        assert CANARY_KEY not in text
        assert CANARY_KEY[3:] not in text
