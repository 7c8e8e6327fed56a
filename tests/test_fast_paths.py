"""PLAYGROUND_FAST_PATHS: `none` serves Django's, Channels' and Daphne's own code, a comma list
installs exactly those, an unknown name stops the start; a patch whose third-party
internals changed warns once and leaves the stock behaviour; a real Daphne in stock mode
relays a run end to end."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from autobahn.websocket.protocol import WebSocketProtocol as AutobahnProtocol
from channels.consumer import AsyncConsumer
from channels.layers import BaseChannelLayer
from daphne.ws_protocol import WebSocketProtocol
from django.conf import settings
from twisted.internet import tcp

from playground import server
from playground.consumers import ConversationConsumer
from playground.server import backlog, consumer_loop, eager_write, memory_layer
from tests.events import text_of
from tests.servers import AppServer, Client, app_database, base_env
from tests.test_scaleout import connect, expected_lorem, next_event, until

ROOT = Path(__file__).resolve().parent.parent

# What a fresh server process installed, as Daphne imports the application.
REPORT = """
import json, sys
import playground.asgi as asgi
from channels import sessions
from autobahn.websocket.protocol import WebSocketProtocol as AutobahnProtocol
from channels.consumer import AsyncConsumer
from daphne.ws_protocol import WebSocketProtocol
from django.conf import settings
from twisted.internet import tcp
from playground import server
from playground.consumers import ConversationConsumer
from playground.server import backlog
stack = server.websocket_auth_stack(None)
print(json.dumps({
    "installed": sorted(server.installed()),
    "http": type(asgi.django_asgi_app).__module__ + "." + type(asgi.django_asgi_app).__qualname__,
    "session": type(stack.inner).__module__ + "." + type(stack.inner).__qualname__,
    "layer": settings.CHANNEL_LAYERS["default"]["BACKEND"],
    "write": tcp.Connection.write.__module__ + "." + tcp.Connection.write.__qualname__,
    "backlog": WebSocketProtocol.serverSend is backlog.server_send,
    "frames": backlog.send_frame is backlog.daphne_server_send,
    "consumer": ConversationConsumer.__call__ is AsyncConsumer.__call__,
    "switch": sys.getswitchinterval(),
}))
"""


def started_with(fast_paths: str, **env: str) -> tuple[dict, str]:
    result = subprocess.run(
        [sys.executable, "-c", REPORT],
        env={**base_env(), "PLAYGROUND_FAST_PATHS": fast_paths, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def test_none_installs_nothing_and_serves_djangos_own_handler():
    report, log = started_with("none")
    assert report == {
        "installed": [],
        "http": "django.core.handlers.asgi.ASGIHandler",
        "session": "channels.sessions.SessionMiddleware",
        "layer": "channels.layers.InMemoryChannelLayer",
        "write": "twisted.internet._newtls.ConnectionMixin.write",
        "backlog": True,  # the backlog bound is a feature: on in both modes
        "frames": True,  # ... sending with Daphne's own serverSend
        "consumer": True,
        "switch": 0.005,
    }
    assert "not installed" not in log


def test_all_installs_every_fast_path():
    report, log = started_with("all", PLAYGROUND_GIL_SWITCH_MS="0.25")
    assert report["installed"] == sorted(set(settings.FAST_PATH_NAMES) - {"loop_reader"})
    assert report["http"] == "playground.server.request_threads.ASGIHandler"
    assert report["session"] == "channels.sessions.SessionMiddleware"
    assert report["layer"] == "playground.server.memory_layer.InMemoryChannelLayer"
    assert report["write"] == "playground.server.eager_write.write"
    assert report["backlog"] is True
    assert report["frames"] is False  # ws_frames.server_send, after the backlog check
    assert report["consumer"] is False
    assert report["switch"] == 0.00025
    assert "not installed" not in log


def test_a_comma_list_installs_exactly_those():
    report, _ = started_with("eager_write, gil_switch")
    assert report["installed"] == ["eager_write", "gil_switch"]
    assert report["http"] == "django.core.handlers.asgi.ASGIHandler"
    assert report["layer"] == "channels.layers.InMemoryChannelLayer"
    assert report["write"] == "playground.server.eager_write.write"
    assert report["frames"] is True


def test_an_unknown_name_stops_the_start():
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        env={**base_env(), "PLAYGROUND_FAST_PATHS": "eager_write,warp_drive"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "ImproperlyConfigured: PLAYGROUND_FAST_PATHS: unknown warp_drive" in result.stderr


def test_this_process_installed_what_its_settings_name():
    import playground.asgi  # noqa: F401 - installs, once per process

    expected = set(settings.FAST_PATHS) & set(server.PATCHES)
    if settings.GIL_SWITCH_MS <= 0:
        expected.discard("gil_switch")
    assert server.installed() == expected
    assert backlog.installed()


# -- a third-party internal gone: one warning, the stock behaviour


def stock_write(monkeypatch):
    monkeypatch.setattr(tcp.Connection, "write", eager_write.twisted_write)
    monkeypatch.delattr(tcp._AbortingMixin, "_aborting")
    return lambda: tcp.Connection.write is eager_write.twisted_write


def stock_send(monkeypatch):
    monkeypatch.setattr(WebSocketProtocol, "serverSend", backlog.daphne_server_send)
    monkeypatch.delattr(AutobahnProtocol, "dropConnection")
    return lambda: WebSocketProtocol.serverSend is backlog.daphne_server_send


def stock_layer(monkeypatch):
    layers = {"default": {"BACKEND": memory_layer.OURS, "CONFIG": {}}}
    monkeypatch.setattr(settings, "CHANNEL_LAYERS", layers)
    monkeypatch.delattr(BaseChannelLayer, "require_valid_group_name")
    return lambda: layers["default"]["BACKEND"] == "channels.layers.InMemoryChannelLayer"


def stock_consumer(monkeypatch):
    if "__call__" in vars(ConversationConsumer):  # installed: back to channels' (inherited)
        monkeypatch.delattr(ConversationConsumer, "__call__")

    async def changed(self, scope, receive, send):  # channels doing something new there
        self.scope = scope
        await self.something_new()

    monkeypatch.setattr(AsyncConsumer, "__call__", changed)
    return lambda: ConversationConsumer.__call__ is changed


@pytest.mark.parametrize(
    ("patch", "breaks", "named"),
    [
        (eager_write, stock_write, "_aborting"),
        (backlog, stock_send, "dropConnection"),
        (memory_layer, stock_layer, "require_valid_group_name"),
        (consumer_loop, stock_consumer, "something_new"),
    ],
    ids=["eager_write", "backlog", "memory_layer", "consumer_loop"],
)
def test_a_patch_whose_internals_changed_warns_once_and_keeps_the_stock_behaviour(
    patch, breaks, named, monkeypatch, caplog
):
    is_stock = breaks(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="playground.server"):
        assert patch.install() is False
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert patch.NAME in warnings[0].getMessage()
    assert named in warnings[0].getMessage()
    assert is_stock()


# -- a real Daphne, stock mode


@pytest.fixture(scope="module")
def stock_server():
    with app_database(PLAYGROUND_FAST_PATHS="none") as env, AppServer(env) as daphne:
        yield daphne


async def test_a_daphne_in_stock_mode_relays_a_run_end_to_end(stock_server):
    client = Client(stock_server.url)
    conversation = client.new_conversation()
    ws = await connect(client, conversation)
    assert await next_event(ws) == {"type": "sync", "active": []}
    response = client.submit(
        conversation, client.demo_provider(), "go", stream=True, max_tokens=60,
        extra_body={"tokens_per_second": 300},
    )  # fmt: skip
    assert response.status_code == 201
    run_id = response.json()["run"]["id"]
    events = await until(ws, "run.done")
    assert [e["type"] for e in events if e["type"].startswith("run.")][0] == "run.started"
    assert text_of(events, run_id) == expected_lorem(stock_server.url, 60)
    assert events[-1]["run"]["status"] == "completed"
    assert client.get(f"/api/runs/{run_id}/").json()["status"] == "completed"
    await ws.close()
    log = stock_server.output()
    assert "Traceback" not in log
    assert "not installed" not in log
