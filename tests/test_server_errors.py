"""An unhandled exception is answered by views.errors.server_error: a database that
refuses connections is a 503 with Retry-After, anything else a 500 that says nothing more."""

import pytest
from django.db import OperationalError
from django.test import Client, override_settings
from django.urls import path

from playground.urls import urlpatterns as site_urls


def refused(request):
    raise OperationalError("connection to server failed: FATAL:  sorry, too many clients already")


def broken(request):
    raise RuntimeError("secret detail sk-test-should-not-show")


urlpatterns = [
    path("api/refused/", refused),
    path("refused/", refused),
    path("api/broken/", broken),
    *site_urls,
]
handler500 = "playground.views.errors.server_error"


@pytest.fixture
def client():
    with override_settings(ROOT_URLCONF=__name__, DEBUG=False):
        yield Client(raise_request_exception=False)


@pytest.mark.django_db
def test_a_database_that_refuses_is_a_503_with_retry_after(client):
    api = client.get("/api/refused/")
    assert api.status_code == 503
    assert api["Retry-After"] == "5"
    assert api.json()["busy"] is True
    assert "too many clients" not in api.content.decode()
    page = client.get("/refused/")
    assert page.status_code == 503
    assert "try again" in page.content.decode()


@pytest.mark.django_db
def test_other_errors_are_a_500_without_details(client):
    response = client.get("/api/broken/")
    assert response.status_code == 500
    assert "sk-test" not in response.content.decode()
    assert "error" in response.json()
