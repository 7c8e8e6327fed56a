"""The browser side's one of each thing: one websocket client (static/js/lib/
conversation-socket.js), one parameter parser (static/js/lib/params.js) and the paths
from the server (`{% client_config %}`, read by static/js/lib/urls.js), used by both the
main page and Compare."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from playground.relay.events import done_messages
from playground.templatetags.client import ROUTES, client_urls
from tests.test_browser import browser, choose, page, send, server, set_param  # noqa: F401
from tests.test_compare import column, conversation_ids, set_up, status

pytestmark = pytest.mark.browser

JS = Path(__file__).resolve().parent.parent / "static" / "js"
SOCKET_MODULE = "lib/conversation-socket.js"


def scripts() -> dict[str, str]:
    """The project's own scripts (not the vendored libraries), by path below static/js."""
    return {
        path.relative_to(JS).as_posix(): path.read_text()
        for path in sorted(JS.rglob("*.js"))
        if "vendor" not in path.relative_to(JS).parts
    }


def description_reason(field, label: str) -> str:
    """A field's error as the page describes it, without the field's label in front."""
    text = field.evaluate("e => document.getElementById(e.id + '-error').textContent")
    assert text.startswith(f"{label} "), text
    return text.removeprefix(f"{label} ")


def test_both_pages_refuse_a_reserved_key_extra_body_in_the_same_words(page: Page):  # noqa: F811
    reserved = '{"model": "x", "messages": []}'
    before = conversation_ids(page)

    # The main page refuses it before sending.
    choose(page, "demo-echo")
    set_param(page, "extra_body", reserved)
    send(page, "Keep me.")
    main_field = page.get_by_role("textbox", name="extra_body", exact=True)
    expect(main_field).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_role("alert").filter(has_text="Fix")).to_have_text(
        "Fix the highlighted parameters: extra_body."
    )
    main_reason = description_reason(main_field, "extra_body")

    # Compare refuses it before sending too.
    page.goto("/compare/")
    set_up(page, 1, "demo-echo", extra_body=reserved)
    set_up(page, 2, "demo-echo")
    page.get_by_role("textbox", name="Message").fill("Keep me.")
    page.get_by_role("button", name="Compare", exact=True).click()
    compare_field = column(page, 1).get_by_role("textbox", name="extra body")
    expect(compare_field).to_have_attribute("aria-invalid", "true")
    compare_reason = description_reason(compare_field, "extra body")
    expect(page.get_by_role("alert").filter(has_text="Not sent.")).to_have_text(
        f"Not sent. Column 1: extra body {compare_reason}."
    )
    expect(status(page, 1)).to_have_text("idle")
    assert conversation_ids(page) == before

    # The same words as the server's own refusal of that extra body.
    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    preset = {"name": "x", "model": "demo-echo", "extra_body": json.loads(reserved)}
    headers = {"Content-Type": "application/json", "X-CSRFToken": csrf}
    refused = page.request.post("/api/presets/", data=json.dumps(preset), headers=headers)
    assert refused.status == 400
    server_reason = refused.json()["fields"]["extra_body"]
    assert main_reason == compare_reason == server_reason == "cannot set messages, model"


def test_no_script_writes_an_api_path_and_every_url_name_it_asks_for_exists():
    sources = scripts()
    assert {"lib/urls.js", "lib/params.js", SOCKET_MODULE} <= set(sources)
    assert [name for name, text in sources.items() if "/api/" in text] == []
    asked = set()
    for text in sources.values():
        asked |= set(re.findall(r"""\burl\(\s*["']([\w-]+)["']""", text))
        asked |= {f"api-export-{f}" for f in ("json", "md")} if "`api-export-${format}`" in text else set()
    assert asked, "the pages ask lib/urls.js for their paths"
    assert asked <= set(ROUTES), asked - set(ROUTES)


def test_the_client_config_holds_the_paths_the_scripts_wrote_before():
    assert client_urls() == {
        "index": "/",
        "conversation": "/c/{id}/",
        "api-conversations": "/api/conversations/",
        "api-import": "/api/import/",
        "api-conversation": "/api/conversations/{id}/",
        "api-submit": "/api/conversations/{id}/runs/",
        "api-add-message": "/api/conversations/{id}/messages/",
        "api-fork": "/api/conversations/{id}/fork/",
        "api-restore-conversation": "/api/conversations/{id}/restore/",
        "api-share-links": "/api/conversations/{id}/share-links/",
        "api-share-link": "/api/share-links/{id}/",
        "api-message": "/api/messages/{id}/",
        "api-move-message": "/api/messages/{id}/move/",
        "api-choose": "/api/messages/{id}/choose/",
        "api-run": "/api/runs/{id}/",
        "api-hide-run": "/api/runs/{id}/hide/",
        "api-stop": "/api/runs/{id}/stop/",
        "providers": "/providers/",
        "api-providers": "/api/providers/",
        "api-provider": "/api/providers/{id}/",
        "api-provider-test": "/api/providers/{id}/test/",
        "api-probe": "/api/providers/{id}/probe/",
        "api-profile": "/api/providers/{id}/profile/",
        "api-models": "/api/providers/{id}/models/",
        "api-presets": "/api/presets/",
        "api-preset": "/api/presets/{id}/",
        "api-import-conversation": "/api/conversations/import/",
        "api-export-json": "/api/conversations/{id}/export.json",
        "api-export-md": "/api/conversations/{id}/export.md",
    }


def test_only_the_socket_module_opens_a_websocket():
    openers = [name for name, text in scripts().items() if "new WebSocket" in text]
    assert openers == ["lib/live-socket.js"]  # under both the conversation and workspace sockets


@pytest.mark.parametrize("path", ["/", "/compare/"])
def test_both_pages_load_the_one_socket_module_and_the_paths_from_the_server(page: Page, path):  # noqa: F811
    page.goto(path)
    loaded = page.evaluate(
        """() => performance.getEntriesByType("resource").map((e) => new URL(e.name).pathname)"""
    )
    for module in (SOCKET_MODULE, "lib/params.js", "lib/urls.js"):
        assert f"/static/js/{module}" in loaded, (module, loaded)
    config = json.loads(page.locator("#client-config").text_content())
    assert config["urls"]["api-submit"] == "/api/conversations/{id}/runs/"
    assert config["urls"]["api-conversations"] == "/api/conversations/"


def test_the_socket_module_keeps_the_protocol_rules(page: Page):  # noqa: F811
    """Repeats and stale snapshots are dropped, run.done wins over what comes after it."""
    result = page.evaluate(
        """async () => {
            const { RunLedger } = await import("/static/js/lib/conversation-socket.js");
            const ledger = new RunLedger();
            const seen = [];
            const offer = (event) => {
                if (!ledger.accepts(event)) return;
                seen.push(`${event.type}:${event.seq ?? event.run.seq}`);
                ledger.record(event);
            };
            const run = (status, seq) => ({ id: 7, status, seq });
            offer({ type: "run.started", run: run("queued", 0) });
            offer({ type: "run.delta", run: 7, seq: 1 });
            offer({ type: "run.delta", run: 7, seq: 2 });
            offer({ type: "run.delta", run: 7, seq: 2 });          // a repeat
            offer({ type: "snapshot", run: run("streaming", 1) }); // older than shown
            offer({ type: "snapshot", run: run("streaming", 4) });
            offer({ type: "run.delta", run: 7, seq: 3 });          // inside the snapshot
            offer({ type: "run.delta", run: 7, seq: 5 });
            offer({ type: "run.done", seq: 3, run: run("interrupted", 3) }); // ends at a checkpoint
            offer({ type: "run.delta", run: 7, seq: 6 });          // after the end
            offer({ type: "snapshot", run: run("streaming", 9) }); // after the end
            offer({ type: "run.done", seq: 3, run: run("interrupted", 3) }); // a repeat
            return { seen, stale: ledger.outdated(run("streaming", 9)), active: ledger.active() };
        }"""
    )
    assert result == {
        "seen": ["run.started:0", "run.delta:1", "run.delta:2", "snapshot:4", "run.delta:5", "run.done:3"],
        "stale": True,
        "active": [],
    }


def test_the_socket_module_hands_on_run_done_messages_with_their_answer(page: Page):  # noqa: F811
    """run.done carries the answer once, in its run's choices: the socket module puts each
    message's content, reasoning and tool calls back, as the server's reader does."""
    call = {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": "{}"}}
    choice = {"logprobs": None, "finish_reason": "stop"}
    run = {
        "id": 7,
        "status": "completed",
        "seq": 4,
        "choices": [
            {**choice, "index": 0, "content": "The answer.", "reasoning": "Thought.", "tool_calls": None},
            {**choice, "index": 1, "content": "", "reasoning": "", "tool_calls": [call]},
            {**choice, "index": 2, "content": "", "reasoning": "", "tool_calls": None},  # no message
        ],
    }
    message = {"role": "assistant", "run": 7, "position": 1}
    messages = [{**message, "id": 31, "choice_index": 0, "in_history": True}]
    messages += [{**message, "id": 32, "choice_index": 1, "in_history": False}]
    event = {"type": "run.done", "seq": 4, "run": run, "messages": messages}
    handed = page.evaluate(
        """async (event) => {
            const { ConversationSocket } = await import("/static/js/lib/conversation-socket.js");
            const opened = [];
            window.WebSocket = class { constructor(url) { opened.push(this); } close() {} };
            const got = [];
            const socket = new ConversationSocket(5, { onEvent: (e) => { got.push(e); return true; } });
            opened[0].onmessage({ data: JSON.stringify(event) });
            socket.close();
            return got.map((e) => e.messages);
        }""",
        event,
    )
    assert handed == [done_messages(event)]
    assert handed[0] == [
        {**messages[0], "content": "The answer.", "reasoning": "Thought."},
        {**messages[1], "content": "", "reasoning": "", "tool_calls": [call]},
    ]


def test_the_socket_module_acts_on_each_close_code(page: Page):  # noqa: F811
    result = page.evaluate(
        """async () => {
            const { ConversationSocket } = await import("/static/js/lib/conversation-socket.js");
            const opened = [];
            window.WebSocket = class { constructor(url) { this.url = url; opened.push(this); } close() {} };
            const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
            const outcome = async (code, shouldReconnect = () => true) => {
                opened.length = 0;
                const states = [];
                const socket = new ConversationSocket(5, {
                    onEvent: () => true, onState: (s) => states.push(s), shouldReconnect,
                });
                opened[0].onopen();
                opened[0].onclose({ code });
                await sleep(400);  // the first reconnect comes after 250 ms
                socket.close();
                const { roleChanged } = socket;
                return { states, sockets: opened.length, roleChanged, url: opened[0].url };
            };
            return {
                4401: await outcome(4401), 4403: await outcome(4403), 4409: await outcome(4409),
                4008: await outcome(4008), 4400: await outcome(4400), 1006: await outcome(1006),
                idle: await outcome(1006, () => false),
            };
        }"""
    )
    assert result["4401"]["states"] == ["connecting", "live", "logged-out"]
    assert result["4403"]["states"] == ["connecting", "live", "forbidden"]
    for code in ("4401", "4403"):
        assert result[code]["sockets"] == 1
    for code in ("4409", "4008", "4400", "1006"):
        assert result[code]["states"] == ["connecting", "live", "reconnecting", "connecting"], code
        assert result[code]["sockets"] == 2, code
    assert result["4409"]["roleChanged"] is True
    assert result["4008"]["roleChanged"] is False
    assert result["idle"]["states"] == ["connecting", "live", "stopped"]
    assert result["idle"]["sockets"] == 1
    assert re.fullmatch(r"ws://127\.0\.0\.1:\d+/ws/conversations/5/", result["1006"]["url"])
