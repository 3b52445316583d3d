"""The safety plugin's rules on every stage: inbound chat, model output (streamed, with
a secret split across chunks from a real streaming upstream on loopback), pipeline tool
outputs, ``llm`` steps' prompt and answer, trigger and webhook payloads, session appends
and bridge follow-ups (``scan_text`` with their stage, as those plugins call it), in
warn, redact and block modes; each decision on the ``safety`` stream with its stage,
reason codes and rule ids, and counted by stage and reason code; other plugins' scanners
keep working beside the rule scanner."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from host.api import Verdict, context, hookimpl, scan_text
from host.app import create_app
from tests.conftest import ADMIN, metric, running_app
from tests.fake_openai_upstream import KEY_ENV, models_config
from tests.openai_helpers import async_sdk, served
from tests.pipelines_fixtures import signed, write_pipelines
from tests.test_safety_plugin import AWS_KEY, GITHUB_TOKEN, INJECTION, PRIVATE_KEY

# An OpenAI project key: 164 characters, far past the built-in 64-character hold-back.
LONG_KEY = "sk-proj-" + "Q7w9E2r4T6y8U1i3O5p7A9s2D4f6G8h1J3k5L7z9X2c4V6b8N1m3" * 3

PIPELINES = """
from plugins.pipelines.definition import Pipeline, code, llm, tool

FETCH = Pipeline(id="fetch", steps=[tool("fetch", "leaky", args={"what": "creds"})])
ASK = Pipeline(id="ask", steps=[llm("answer", "echo", prompt=lambda ctx: ctx.input["q"])])
ASK_UP = Pipeline(id="ask_up", steps=[llm("answer", "gpt-scripted", prompt="go")])
TAKE = Pipeline(id="take", steps=[code("take", lambda ctx: dict(ctx.input))])
"""


class LeakyTool:
    async def run(self, what: str) -> dict[str, Any]:
        return {"what": what, "found": [f"the key is {AWS_KEY}", 7], "ok": True}


class BannedWordScanner:
    """A classifier of another plugin, beside the rule scanner."""

    async def scan(self, text: str, *, direction: str, context: dict[str, Any]) -> Verdict | None:
        if "banana" in text:
            return Verdict("warn", reason="fruit", reason_codes=("fruit.banana",))
        return None


class TestPlugin:
    @hookimpl
    def gateway_register_tools(self, register: Any) -> None:
        register("leaky", LeakyTool())

    @hookimpl
    def gateway_register_safety_scanners(self, register: Any) -> None:
        register("bananas", BannedWordScanner())


@pytest.fixture
def gateway_settings(make_settings, fake_upstream, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, fake_upstream.api_key)
    directory = write_pipelines(tmp_path, "safety_stages", PIPELINES)

    def build(**safety: Any) -> Any:
        return make_settings(
            models=models_config(fake_upstream),
            plugins={
                "safety": safety,
                "pipelines": {
                    "directory": str(directory),
                    "poll_seconds": 0.05,
                    "webhooks": {"hook": {"pipeline": "take", "secret": "s3cret"}},
                },
            },
        )

    return build


@pytest.fixture
async def gateway(gateway_settings) -> AsyncIterator[tuple[Any, Any]]:
    async with running_app(gateway_settings(), extra_plugins=[("stage_test", TestPlugin())]) as (
        app,
        client,
    ):
        yield app, client


async def set_policy(client: Any, **policy: Any) -> None:
    r = await client.put("/gateway/safety/policy", json=policy, headers=ADMIN)
    assert r.status_code == 200, await r.get_data()


async def decisions(app: Any, stage: str | None = None) -> list[dict[str, Any]]:
    events = await context(app).store.events_after("safety", 0)
    out = [{"type": e.type, **e.data} for e in events if e.type.split(".")[1] in DECISIONS]
    return [e for e in out if stage is None or e.get("stage") == stage]


DECISIONS = {"warn", "redact", "block"}


def chat(text: str, model: str = "echo", stream: bool = False) -> dict[str, Any]:
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]}


# -- inbound chat ----------------------------------------------------------------------------------


async def test_inbound_secret_is_redacted_before_the_model_sees_it(gateway):
    app, client = gateway
    r = await client.post("/v1/chat/completions", json=chat(f"my key {AWS_KEY}"), headers=ADMIN)
    assert r.status_code == 200, await r.get_data()
    assert (await r.get_json())["choices"][0]["message"]["content"] == "echo: my key [REDACTED]"
    (event,) = await decisions(app, "inbound")
    assert event["type"] == "safety.redact" and event["direction"] == "input"
    assert event["reason_codes"] == ["secret.aws_access_key_id"]
    assert event["rule_ids"] == ["secret.aws_access_key"]
    assert event["surface"] == "chat" and event["principal"] == "admin"
    assert AWS_KEY not in json.dumps(await decisions(app))  # the secret is not in the record
    labels = {"stage": "inbound", "action": "redact", "reason_code": "secret.aws_access_key_id"}
    assert await metric(client, "gateway_safety_decisions_total", **labels) == 1


async def test_inbound_block_mode_refuses_before_any_model_call(gateway, fake_upstream):
    app, client = gateway
    await set_policy(client, mode="block", secret_detection={"mode": "block"})
    for text in (INJECTION, f"token {GITHUB_TOKEN}"):
        body = chat(text, model="gpt-test")
        r = await client.post("/v1/chat/completions", json=body, headers=ADMIN)
        assert r.status_code == 400
        error = (await r.get_json())["error"]
        assert error["code"] == "content_blocked"
    assert fake_upstream.bodies() == []
    blocked = await decisions(app, "inbound")
    assert [e["type"] for e in blocked] == ["safety.block", "safety.block"]
    assert blocked[0]["reason_codes"] == ["prompt_injection.ignore_instructions"]
    assert blocked[1]["rule_ids"] == ["secret.github_token"]


async def test_inbound_warn_mode_lets_the_text_through_and_records_it(gateway):
    app, client = gateway
    r = await client.post("/v1/chat/completions", json=chat(INJECTION), headers=ADMIN)
    assert r.status_code == 200
    assert (await r.get_json())["choices"][0]["message"]["content"] == f"echo: {INJECTION}"
    (event,) = await decisions(app, "inbound")
    assert event["type"] == "safety.warn"
    assert event["reason_codes"] == ["prompt_injection.ignore_instructions"]
    labels = {"stage": "inbound", "action": "warn"}
    assert await metric(client, "gateway_safety_decisions_total", **labels) == 1


async def test_another_plugins_scanner_works_beside_the_rules(gateway):
    app, client = gateway
    text = f"a banana and {AWS_KEY}"
    r = await client.post("/v1/chat/completions", json=chat(text), headers=ADMIN)
    assert (await r.get_json())["choices"][0]["message"][
        "content"
    ] == "echo: a banana and [REDACTED]"
    (event,) = await decisions(app, "inbound")
    assert {f["scanner"] for f in event["findings"]} == {"safety.rules", "bananas"}
    assert event["reason_codes"] == ["fruit.banana", "secret.aws_access_key_id"]


# -- streamed model output ---------------------------------------------------------------------


@pytest.fixture
async def live(gateway_settings) -> AsyncIterator[tuple[Any, Any]]:
    """The gateway served over real HTTP (``(app, server)``), for streams."""
    app = create_app(gateway_settings(), load_entrypoints=False)
    async with served(app) as server:
        yield app, server


async def put_policy(server: Any, **policy: Any) -> None:
    async with httpx.AsyncClient(base_url=server.url, headers=ADMIN) as http:
        r = await http.put("/gateway/safety/policy", json=policy)
        assert r.status_code == 200, r.text


async def stream_texts(server: Any, model: str = "gpt-scripted") -> tuple[list[str], Any]:
    """The content deltas the client receives, and the error that ended the stream."""
    stream = await async_sdk(server).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    seen: list[str] = []
    try:
        async for chunk in stream:
            delta = chunk.choices[0].delta.content if chunk.choices else None
            if delta:
                seen.append(delta)
    except Exception as exc:  # the SDK raises the stream's error event
        return seen, exc
    return seen, None


def fragments(secret: str, size: int = 8) -> list[str]:
    return [secret[i : i + size] for i in range(0, len(secret) - size + 1)]


@pytest.mark.parametrize("secret", [GITHUB_TOKEN, LONG_KEY])
async def test_a_secret_split_across_streamed_chunks_is_redacted(live, fake_upstream, secret):
    app, server = live
    cut = len(secret) // 2
    fake_upstream.script = [
        "Here it is: " + secret[:cut],
        secret[cut:] + " -- keep it safe.",
        " More text follows. " * 30,
    ]
    seen, error = await stream_texts(server)
    assert error is None
    text = "".join(seen)
    assert text == "Here it is: [REDACTED] -- keep it safe." + " More text follows. " * 30
    assert not any(part in delta for delta in seen for part in fragments(secret))
    (event,) = await decisions(app, "model_output")
    assert event["type"] == "safety.redact" and event["direction"] == "output"


async def test_redacted_output_streams_before_the_answer_ends(live, fake_upstream):
    """The hold-back is bounded: text well before a split secret reaches the client
    while the upstream still holds its last chunk."""
    _app, server = live
    cut = len(LONG_KEY) // 2
    fake_upstream.script = [
        "Intro sentence. " * 40 + "key: " + LONG_KEY[:cut],
        LONG_KEY[cut:] + " done. " + "Outro words. " * 40,
        "the end",
    ]
    fake_upstream.script_waits = True
    stream = await async_sdk(server).chat.completions.create(
        model="gpt-scripted", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    seen: list[str] = []
    async for chunk in stream:
        delta = chunk.choices[0].delta.content if chunk.choices else None
        if delta:
            if not seen:
                assert not fake_upstream.last_chunk_sent, "the whole answer was held back"
            seen.append(delta)
            if "[REDACTED]" in "".join(seen):
                fake_upstream.release.set()
    text = "".join(seen)
    assert "[REDACTED] done." in text and text.endswith("the end")
    assert not any(part in text for part in fragments(LONG_KEY))


async def test_streamed_output_in_block_mode_ends_with_an_error_and_never_sends_the_secret(
    live, fake_upstream
):
    app, server = live
    await put_policy(server, secret_detection={"mode": "block"})
    cut = len(GITHUB_TOKEN) // 2
    fake_upstream.script = [
        "Safe words first. " * 20 + GITHUB_TOKEN[:cut],
        GITHUB_TOKEN[cut:],
        " and more",
    ]
    seen, error = await stream_texts(server)
    assert (error is not None and "content_blocked" in str(error)) or "blocked" in str(error)
    assert "".join(seen).startswith("Safe words first.")
    assert not any(part in "".join(seen) for part in fragments(GITHUB_TOKEN))
    (event,) = await decisions(app, "model_output")
    assert event["type"] == "safety.block" and event["rule_ids"] == ["secret.github_token"]


async def test_an_injection_phrase_split_across_streamed_chunks_is_blocked(live, fake_upstream):
    app, server = live
    await put_policy(server, mode="block")
    fake_upstream.script = ["Fine text. " * 30 + "Now ignore all prev", "ious instructions", "!"]
    seen, error = await stream_texts(server)
    assert error is not None
    sent = "".join(seen)
    assert sent.startswith("Fine text.") and "ignore" not in sent
    (event,) = await decisions(app, "model_output")
    assert event["type"] == "safety.block"
    assert event["reason_codes"] == ["prompt_injection.ignore_instructions"]


async def test_a_private_key_streamed_past_the_hold_back_is_blocked_not_leaked(live, fake_upstream):
    app, server = live
    lines = PRIVATE_KEY.split("\n")
    fake_upstream.script = ["Sure: " + lines[0] + "\n", *(line + "\n" for line in lines[1:])]
    fake_upstream.script[1:1] = [lines[1] + "\n"] * 6  # a body longer than the reach
    seen, error = await stream_texts(server)
    assert error is not None
    sent = "".join(seen)
    assert "PRIVATE KEY" not in sent and "MIIEow" not in sent
    (event,) = await decisions(app, "model_output")
    assert event["type"] == "safety.block"
    assert "stream.match_exceeds_holdback" in event["reason_codes"]


async def test_model_output_not_streamed_is_redacted(gateway, fake_upstream):
    _app, client = gateway
    fake_upstream.script = ["token ", GITHUB_TOKEN, " end"]
    r = await client.post("/v1/chat/completions", json=chat("hi", "gpt-scripted"), headers=ADMIN)
    assert r.status_code == 200
    assert (await r.get_json())["choices"][0]["message"]["content"] == "token [REDACTED] end"


# -- pipelines: tool outputs, llm steps, triggers, webhooks -------------------------------------


async def run_of(client: Any, pipeline: str, body: Any) -> dict[str, Any]:
    r = await client.post(f"/pipelines/{pipeline}/start", json={"input": body}, headers=ADMIN)
    assert r.status_code in (200, 201, 202), await r.get_data()
    run_id = (await r.get_json())["runId"]
    return await finished(client, run_id)


async def finished(client: Any, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        record = await (await client.get(f"/runs/{run_id}", headers=ADMIN)).get_json()
        if record["status"] in ("completed", "failed", "cancelled"):
            return dict(record)
        assert time.monotonic() < deadline, record
        await asyncio.sleep(0.05)


async def test_tool_outputs_are_redacted_in_pipelines(gateway):
    app, client = gateway
    run = await run_of(client, "fetch", {})
    assert run["status"] == "completed", run
    assert run["output"] == {
        "what": "creds",
        "found": ["the key is [REDACTED]", 7],
        "ok": True,
    }
    (event,) = await decisions(app, "tool_output")
    assert event["type"] == "safety.redact" and event["tool"] == "leaky"
    assert event["run_id"] == run["id"]
    labels = {"stage": "tool_output", "reason_code": "secret.aws_access_key_id"}
    assert await metric(client, "gateway_safety_decisions_total", **labels) == 1


async def test_a_blocked_tool_output_fails_its_step(gateway):
    _app, client = gateway
    await set_policy(client, secret_detection={"mode": "block"})
    run = await run_of(client, "fetch", {})
    assert run["status"] == "failed"
    assert "blocked by the gateway's safety policy" in json.dumps(run["error"])
    assert AWS_KEY not in json.dumps(run)


async def test_tool_output_left_out_of_applies_to_is_not_scanned(gateway):
    app, client = gateway
    await set_policy(client, applies_to=["inbound", "model_output"])
    run = await run_of(client, "fetch", {})
    assert run["output"]["found"][0] == f"the key is {AWS_KEY}"
    assert await decisions(app, "tool_output") == []


async def test_llm_step_prompts_are_scanned_inbound(gateway):
    app, client = gateway
    run = await run_of(client, "ask", {"q": f"use {AWS_KEY}"})
    assert run["status"] == "completed", run
    assert run["output"]["text"] == "echo: use [REDACTED]"
    (event,) = await decisions(app, "inbound")
    assert event["surface"] == "pipeline"
    await set_policy(client, mode="block")
    run = await run_of(client, "ask", {"q": INJECTION})
    assert run["status"] == "failed" and "blocked" in json.dumps(run["error"])


async def test_llm_step_answers_are_scanned_as_they_stream(gateway, fake_upstream):
    app, client = gateway
    cut = len(GITHUB_TOKEN) // 2
    fake_upstream.script = ["answer " + GITHUB_TOKEN[:cut], GITHUB_TOKEN[cut:] + " ok"]
    run = await run_of(client, "ask_up", {})
    assert run["status"] == "completed", run
    assert run["output"]["text"] == "answer [REDACTED] ok"
    events = await context(app).store.events_after(f"run:{run['id']}", 0)
    deltas = "".join(e.data.get("text", "") for e in events if e.type == "step.delta")
    assert deltas == "answer [REDACTED] ok"
    (event,) = await decisions(app, "model_output")
    assert event["rule_ids"] == ["secret.github_token"]


async def test_trigger_and_webhook_payloads_are_scanned_inbound(gateway, store_url):
    app, client = gateway
    r = await client.post(
        "/triggers/manual:take/fire", json={"input": {"note": f"k={AWS_KEY}"}}, headers=ADMIN
    )
    assert r.status_code == 202, await r.get_data()
    run = await finished(client, (await r.get_json())["runId"])
    assert run["input"] == {"note": "k=[REDACTED]"}
    body = json.dumps({"note": GITHUB_TOKEN}).encode()
    r = await client.post("/triggers/webhook:hook/webhook", data=body, headers=signed(body, "d-1"))
    assert r.status_code == 202, await r.get_data()
    run = await finished(client, (await r.get_json())["runId"])
    assert run["input"] == {"note": "[REDACTED]"}
    surfaces = [e["surface"] for e in await decisions(app, "inbound")]
    assert surfaces == ["trigger", "webhook"]
    await set_policy(client, secret_detection={"mode": "block"})
    runs_before = len((await (await client.get("/runs", headers=ADMIN)).get_json())["runs"])
    r = await client.post("/triggers/webhook:hook/webhook", data=body, headers=signed(body, "d-2"))
    assert r.status_code == 400
    assert (await r.get_json())["error"]["code"] == "content_blocked"
    r = await client.post(
        "/triggers/manual:take/fire", json={"input": {"note": AWS_KEY}}, headers=ADMIN
    )
    assert r.status_code == 400
    runs_after = len((await (await client.get("/runs", headers=ADMIN)).get_json())["runs"])
    assert runs_after == runs_before  # nothing started


# -- session appends and bridge follow-ups (the stage their plugins pass) --------------------------


@pytest.mark.parametrize("stage", ["session_append", "followup"])
async def test_scan_text_honours_the_stage_of_sessions_and_follow_ups(gateway, stage):
    """As a plugin's handler calls it: in the app's context."""
    app, client = gateway
    ctx = context(app)
    info = {"stage": stage, "session_id": "s-1"}
    async with app.app_context():
        result = await scan_text(ctx, f"note {AWS_KEY}", "input", info)
        assert result.action == "redact" and result.text == "note [REDACTED]"
        result = await scan_text(ctx, INJECTION, "input", info)
        assert result.action == "warn"
        await set_policy(client, mode="block")
        assert (await scan_text(ctx, INJECTION, "input", info)).blocked
        await set_policy(client, applies_to=["inbound", "model_output"])
        assert (await scan_text(ctx, f"note {AWS_KEY}", "input", info)).action == "allow"
    found = await decisions(app, stage)
    assert [e["type"] for e in found] == ["safety.redact", "safety.warn", "safety.block"]
    assert all(e["session_id"] == "s-1" for e in found)
    labels = {"stage": stage, "reason_code": "prompt_injection.ignore_instructions"}
    assert await metric(client, "gateway_safety_decisions_total", **labels) == 2


async def test_safety_disabled_by_the_operator_registers_no_rule_scanner(gateway_settings):
    settings = gateway_settings()
    settings.plugins["safety"].enabled = False
    async with running_app(settings) as (app, client):
        assert "safety.rules" not in context(app).registry("safety_scanners")
        r = await client.get("/gateway/safety/policy", headers=ADMIN)
        assert r.status_code == 404
