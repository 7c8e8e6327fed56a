"""The app as deployed: DEBUG off, a real host name, static files, the Demo relay."""

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.servers import AppServer, Client, app_database, base_env


@pytest.fixture(scope="module")
def production():
    settings = {"DEBUG": "0", "SECRET_KEY": "a-production-secret", "ALLOWED_HOSTS": "localhost"}
    with app_database(**settings) as env, AppServer(env) as server:
        server.url = f"http://localhost:{server.port}"
        yield server


def wait_for_run(client: Client, run_id: int) -> dict:
    for _ in range(200):
        run = client.get(f"/api/runs/{run_id}/").json()
        if run["status"] not in ("queued", "streaming"):
            return run
        time.sleep(0.05)
    raise AssertionError("the run did not finish")


def test_the_demo_relay_answers_when_the_server_knows_only_its_public_name(production):
    client = Client(production.url)
    conversation = client.new_conversation()
    response = client.submit(
        conversation, client.demo_provider(), "ping pong", model="demo-echo", stream=True
    )
    run = wait_for_run(client, response.json()["run"]["id"])
    assert run["status"] == "completed"
    assert run["choices"][0]["content"] == "ping pong"


def test_static_files_are_served_without_debug(production):
    client = Client(production.url)
    script = client.get("/static/js/playground.js")
    assert script.status_code == 200
    assert "MarkdownView" in script.text


def test_other_host_names_are_refused(production):
    client = Client(production.url)
    response = client.session.get(f"http://127.0.0.1:{production.port}/accounts/login/")
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ALLOWED_HOSTS": "example.com,*"}, 'ALLOWED_HOSTS must name the hosts served, not "*"'),
        ({"DEBUG": "0", "SECRET_KEY": ""}, "SECRET_KEY must be set when DEBUG is off"),
    ],
)
def test_unsafe_settings_stop_the_server_from_starting(env, message):
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "DEBUG": "1", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert message in result.stderr


def test_issue15_1_check_deploy_is_clean_in_a_production_environment():
    """With DEBUG off, a real secret key, host names, secure cookies, HSTS and HTTPS by
    environment, Django's deployment checks see its own middleware and warn of nothing."""
    production = {
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(60),
        "ALLOWED_HOSTS": "playground.example.com",
        "SESSION_COOKIE_SECURE": "1",
        "CSRF_COOKIE_SECURE": "1",
        "SECURE_SSL_REDIRECT": "1",
        "SECURE_HSTS_SECONDS": "31536000",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
        "SECURE_HSTS_PRELOAD": "1",
        "PLAYGROUND_BEHIND_TLS_PROXY": "1",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=Path(__file__).resolve().parent.parent,
        env={**base_env(), **production},
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNING" not in output, output
    assert "security.W" not in output, output
    assert "System check identified no issues" in output
