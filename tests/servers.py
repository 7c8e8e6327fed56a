"""Real app servers for tests and benchmarks: Daphne processes on a fresh database.

    with app_database() as env:            # SQLite file, or PostgreSQL when DATABASE_URL says so
        with AppServer(env) as server:     # `daphne playground.asgi:application` on a free port
            server.url                     # "http://127.0.0.1:<port>"

`app_database("postgres", redis=True)` always uses PostgreSQL + Redis (the
scale-out path), whatever the current test pass uses.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests

ROOT = Path(__file__).resolve().parent.parent
ADMIN_PASSWORD = "correct-horse-battery"
PG_URL = os.getenv("PLAYGROUND_TEST_PG_URL", "postgres://postgres@127.0.0.1:5432/test")
REDIS_URL = os.getenv("PLAYGROUND_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        DJANGO_SETTINGS_MODULE="playground.settings",
        DJANGO_SUPERUSER_USERNAME="admin",
        DJANGO_SUPERUSER_PASSWORD=ADMIN_PASSWORD,
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


def manage(env: dict[str, str], *args: str, input: str | None = None) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=env,
        cwd=ROOT,
        input=input,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def add_member(
    env: dict[str, str], username: str, password: str, role: str = "member", **flags: bool
) -> None:
    """A user (made if missing; `flags` such as is_superuser) in the bootstrapped workspace:
    a new user belongs to no workspace until a membership adds them."""
    code = (
        "from django.contrib.auth.models import User\n"
        "from playground.models import Membership, Workspace\n"
        f"user, _ = User.objects.update_or_create(username={username!r}, defaults={flags!r})\n"
        f"user.set_password({password!r})\n"
        "user.save()\n"
        "Membership.objects.update_or_create(user=user, workspace=Workspace.objects.get(slug='default'),"
        f" defaults={{'role': {role!r}}})\n"
    )
    manage(env, "shell", "-c", code)


def _with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@contextlib.contextmanager
def app_database(kind: str | None = None, *, redis: bool | None = None, **settings: str):
    """A migrated, bootstrapped database for app servers; yields their environment."""
    kind = kind or ("postgres" if os.getenv("DATABASE_URL", "").startswith("postgres") else "sqlite")
    redis = bool(os.getenv("REDIS_URL")) if redis is None else redis
    with tempfile.TemporaryDirectory(prefix="playground-") as tmp:
        env = base_env(PLAYGROUND_DATA_DIR=tmp, **settings)
        if redis:
            env["REDIS_URL"] = os.getenv("REDIS_URL") or REDIS_URL
            env["PLAYGROUND_CHANNEL_PREFIX"] = f"test-{uuid.uuid4().hex[:8]}"
        name = None
        if kind == "postgres":
            import psycopg

            admin = os.getenv("DATABASE_URL") or PG_URL
            name = f"e2e_{uuid.uuid4().hex[:10]}"
            with psycopg.connect(_with_db(admin, "postgres"), autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            env["DATABASE_URL"] = _with_db(admin, name)
        else:
            env["DATABASE_URL"] = f"sqlite:///{tmp}/playground.sqlite3"
        # One key for every process sharing this database.
        from cryptography.fernet import Fernet

        env["PLAYGROUND_ENCRYPTION_KEYS"] = Fernet.generate_key().decode()
        manage(env, "migrate", "--noinput", "-v0")
        manage(env, "bootstrap")
        try:
            yield env
        finally:
            if name:
                import psycopg

                with psycopg.connect(_with_db(admin, "postgres"), autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class AppServer:
    """`daphne playground.asgi:application` in its own process."""

    def __init__(self, env: dict[str, str], port: int | None = None, log: Path | None = None) -> None:
        self.env = env
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log or Path(tempfile.mkstemp(prefix="daphne-", suffix=".log")[1])
        self.proc: subprocess.Popen | None = None

    def start(self) -> AppServer:
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "playground.asgi:application",
            ],
            env=self.env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daphne exited:\n{self.log_path.read_text()}")
            try:
                requests.get(self.url + "/accounts/login/", timeout=1)
                return self
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("daphne did not start within 30 s")

    def output(self) -> str:
        return self.log_path.read_text()

    def kill(self) -> None:
        """Die as a crashed process does: no clean-up runs."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        if hasattr(self, "log"):
            self.log.close()

    def __enter__(self) -> AppServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class Client:
    """A logged-in HTTP client for an AppServer (session + CSRF, as a browser has)."""

    def __init__(self, server_url: str, username: str = "admin", password: str = ADMIN_PASSWORD):
        self.url = server_url
        self.session = requests.Session()
        self.session.get(f"{server_url}/accounts/login/")
        response = self.session.post(
            f"{server_url}/accounts/login/",
            data={
                "username": username,
                "password": password,
                "csrfmiddlewaretoken": self.session.cookies["csrftoken"],
            },
            headers={"Referer": server_url},
            allow_redirects=False,
        )
        assert response.status_code == 302, "login failed"

    @property
    def headers(self) -> dict[str, str]:
        return {"X-CSRFToken": self.session.cookies["csrftoken"], "Referer": self.url}

    @property
    def cookie_header(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.session.cookies.items())

    def get(self, path: str) -> requests.Response:
        return self.session.get(self.url + path)

    def post(self, path: str, json: dict | None = None) -> requests.Response:
        return self.session.post(self.url + path, json=json or {}, headers=self.headers)

    def new_conversation(self) -> int:
        return self.post("/api/conversations/").json()["id"]

    def demo_provider(self) -> int:
        import json as _json
        import re

        page = self.get("/").text
        match = re.search(r'id="playground-config" type="application/json">(.*?)</script>', page)
        config = _json.loads(match.group(1))
        return next(p["id"] for p in config["providers"] if p["is_demo"])

    def submit(self, conversation: int, provider: int, message: str, **params) -> requests.Response:
        body = {"provider": provider, "model": params.pop("model", "demo-lorem"), "message": message}
        body["extra_body"] = params.pop("extra_body", {})
        body["params"] = params
        return self.post(f"/api/conversations/{conversation}/runs/", body)
