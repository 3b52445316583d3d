"""Safety scanners (``gateway_register_safety_scanners``) on the OpenAI surfaces: input is
scanned before any provider call, output (streamed deltas included) before the client."""

from __future__ import annotations

import json
from typing import Any

import pytest

from host.api import context, hookimpl
from host.safety import Verdict
from plugins.openai_compat.providers.echo import EchoProvider
from tests.conftest import ADMIN, running_app


class WordScanner:
    async def scan(self, text: str, *, direction: str, context: dict[str, Any]) -> Verdict | None:
        if direction == "input" and "forbidden" in text:
            return Verdict("block", reason="forbidden word")
        if "secret123" in text:
            return Verdict("redact", text=text.replace("secret123", "[redacted]"), reason="key")
        if direction == "output" and "danger" in text:
            return Verdict("block", reason="dangerous output")
        if "hmm" in text:
            return Verdict("warn", reason="suspicious")
        return None


class CountingEcho(EchoProvider):
    name = "counting"

    def __init__(self) -> None:
        self.calls = 0
        self.bodies: list[dict[str, Any]] = []

    async def chat(self, route, body):
        self.calls += 1
        self.bodies.append(body)
        return await super().chat(route, body)

    def chat_stream(self, route, body):
        self.calls += 1
        return super().chat_stream(route, body)


class SafetyPlugin:
    def __init__(self) -> None:
        self.provider = CountingEcho()

    @hookimpl
    def gateway_register_safety_scanners(self, register):
        register("words", WordScanner())

    @hookimpl
    def gateway_register_providers(self, register):
        register("counting", self.provider)


@pytest.fixture
async def safe(make_settings):
    plugin = SafetyPlugin()
    # The built-in safety plugin off: the word scanner alone, at the built-in hold-back.
    safety_off = {"safety": {"enabled": False}}
    settings = make_settings(models={"m": {"provider": "counting"}}, plugins=safety_off)
    async with running_app(settings, extra_plugins=[("safety_test", plugin)]) as (app, client):
        yield plugin, client, app


def chat(text: str, stream: bool = False) -> dict[str, Any]:
    return {"model": "m", "stream": stream, "messages": [{"role": "user", "content": text}]}


async def test_gateway_register_safety_scanners_block_input_before_the_provider(safe):
    plugin, client, _app = safe
    r = await client.post("/v1/chat/completions", json=chat("a forbidden plan"), headers=ADMIN)
    assert r.status_code == 400
    error = (await r.get_json())["error"]
    assert error["code"] == "content_blocked"
    assert "forbidden word" in error["message"]
    assert plugin.provider.calls == 0
    r = await client.post("/v1/responses", json={"model": "m", "input": "forbidden"}, headers=ADMIN)
    assert r.status_code == 400 and plugin.provider.calls == 0


async def test_gateway_register_safety_scanners_redact_input_the_provider_never_sees(safe):
    plugin, client, _app = safe
    r = await client.post("/v1/chat/completions", json=chat("my key secret123"), headers=ADMIN)
    assert r.status_code == 200
    assert (await r.get_json())["choices"][0]["message"]["content"] == "echo: my key [redacted]"
    assert plugin.provider.calls == 1


async def test_replayed_assistant_refusals_and_tool_arguments_are_input_scanned(safe):
    plugin, client, _app = safe
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "lookup", "arguments": '{"key": "secret123"}'},
    }
    history: list[dict[str, Any]] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "found"},
        {"role": "assistant", "content": None, "refusal": "no, that is forbidden"},
        {"role": "user", "content": "again"},
    ]
    r = await client.post(
        "/v1/chat/completions", json={"model": "m", "messages": history}, headers=ADMIN
    )
    assert r.status_code == 400
    assert (await r.get_json())["error"]["code"] == "content_blocked"
    assert plugin.provider.calls == 0
    history[3]["refusal"] = "no, I cannot"
    r = await client.post(
        "/v1/chat/completions", json={"model": "m", "messages": history}, headers=ADMIN
    )
    assert r.status_code == 200, await r.get_data()
    sent = plugin.provider.bodies[-1]["messages"][1]["tool_calls"][0]["function"]["arguments"]
    assert sent == '{"key": "[redacted]"}'


async def test_gateway_register_safety_scanners_block_output_not_streamed(safe):
    _plugin, client, _app = safe
    r = await client.post("/v1/chat/completions", json=chat("danger zone"), headers=ADMIN)
    assert r.status_code == 400
    assert (await r.get_json())["error"]["code"] == "content_blocked"


async def test_gateway_register_safety_scanners_block_streamed_output_mid_stream(safe):
    _plugin, client, _app = safe
    # Longer than the stream's hold-back (64 characters), so the safe part goes out first.
    text = "safe " + "words " * 20 + "then danger"
    r = await client.post("/v1/chat/completions", json=chat(text, True), headers=ADMIN)
    assert r.status_code == 200
    lines = [ln for ln in (await r.get_data(as_text=True)).splitlines() if ln.startswith("data:")]
    last = json.loads(lines[-1][5:])
    assert last["error"]["code"] == "content_blocked"
    assert "data: [DONE]" not in lines
    texts = "".join(
        c["choices"][0]["delta"].get("content") or ""
        for c in (json.loads(ln[5:]) for ln in lines[:-1])
    )
    assert "danger" not in texts and texts.startswith("echo: safe")


async def test_gateway_register_safety_scanners_fail_a_streamed_response(safe):
    _plugin, client, _app = safe
    body = {"model": "m", "input": "now danger", "stream": True}
    r = await client.post("/v1/responses", json=body, headers=ADMIN)
    events = [
        json.loads(ln[6:])
        for ln in (await r.get_data(as_text=True)).splitlines()
        if ln.startswith("data: {")
    ]
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["status"] == "failed"
    assert events[-1]["response"]["error"]["code"] == "content_blocked"


async def test_gateway_register_safety_scanners_findings_are_published(safe):
    _plugin, client, app = safe
    r = await client.post("/v1/chat/completions", json=chat("hmm, secret123"), headers=ADMIN)
    assert r.status_code == 200
    events = await context(app).store.events_after("safety", 0)
    # Input: the key is redacted; output: the echoed "hmm" is warned about on its way out.
    assert [(e.type, e.data["direction"]) for e in events] == [
        ("safety.redact", "input"),
        ("safety.warn", "output"),
    ]
    finding = events[0].data
    assert finding["model"] == "m" and finding["principal"] == "admin"
    assert finding["findings"] == [{"scanner": "words", "action": "redact", "reason": "key"}]
