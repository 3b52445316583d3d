"""Streamed output cannot slip past the safety scanners: the rolling scan of
``plugins/openai_compat/safety_stream.py`` sees a phrase split over deltas, applies a
redaction that spans deltas, and scans tool-call arguments (streamed and not).

Through the official ``openai`` SDK against the gateway served by Hypercorn in-process,
in front of real loopback upstreams: ``FakeUpstream`` (its answer "Hello from the
upstream" streams word by word, so "the upstream" spans two deltas) and a
``ScriptedServer`` streaming the deltas each test needs."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import openai
import pytest

from host.api import context, hookimpl
from host.app import create_app
from host.safety import Verdict
from tests.conftest import ADMIN, running_app
from tests.fake_openai_upstream import KEY_ENV, FakeUpstream, models_config
from tests.openai_helpers import USER, InProcessServer, async_sdk, served
from tests.scripted_server import ScriptedServer, request_json

TOOLS: Any = [{"type": "function", "function": {"name": "note", "parameters": {"type": "object"}}}]


class PhraseScanner:
    async def scan(self, text: str, *, direction: str, context: dict[str, Any]) -> Verdict | None:
        if direction != "output":
            return None
        if "the upstream" in text:
            return Verdict("block", reason="forbidden phrase")
        if "secret123" in text:
            return Verdict("redact", text=text.replace("secret123", "[redacted]"), reason="key")
        if "forbidden_tool" in text:
            return Verdict("block", reason="forbidden tool")
        if re.search(r"<<.*>>", text, re.S):  # a match as long as the text it spans
            return Verdict("block", reason="long match")
        return None


class PhrasePlugin:
    @hookimpl
    def gateway_register_safety_scanners(self, register: Any) -> None:
        register("phrase", PhraseScanner())


# -- a scripted upstream: each upstream model name streams its own deltas ----------------------

TEXT_SCRIPTS = {
    "phrase_late": ["All good so far, ", "nothing to see here. ", "Then the up", "stream said hi."],
    "secret": ["my key is sec", "ret123, keep it"],
    "long_match": ["<<", "x" * 40, " more ", ">>"],
    "dies_phrase": ["fine, the up", "stream"],  # then the upstream hangs up
}
ARGS_SCRIPTS = {
    "args_phrase": ['{"note": "the up', 'stream"}'],
    "args_secret": ['{"key": "sec', 'ret123"}'],
    "name_phrase": ['{"a": 1}'],
}
REFUSAL_SCRIPTS = {  # the pieces stream as delta.refusal
    "refusal_phrase": ["I won't repeat the up", "stream"],
    "refusal_secret": ["not telling: sec", "ret123"],
}
TOOL_NAMES = {"name_phrase": "forbidden_tool"}
LONG_DELTAS = [f"word{i} " for i in range(30)]  # 210 characters, well past the hold-back
RELEASE = asyncio.Event()
LAST_SENT = asyncio.Event()


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [choice],
    }


def _call(arguments: str, first: bool, name: str) -> dict[str, Any]:
    if first:
        fn = {"name": name, "arguments": arguments}
        return {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": fn}]}
    return {"tool_calls": [{"index": 0, "function": {"arguments": arguments}}]}


def _completion(model: str, pieces: list[str], calls: bool) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": None if calls else "".join(pieces)}
    if model in REFUSAL_SCRIPTS:
        message.update(content=None, refusal="".join(pieces))
    if calls:
        fn = {"name": TOOL_NAMES.get(model, "note"), "arguments": "".join(pieces)}
        message["tool_calls"] = [{"id": "call_1", "type": "function", "function": fn}]
    choice = {"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}
    usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    return {
        "id": "c1",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [choice],
        "usage": usage,
    }


async def _send(writer: asyncio.StreamWriter, payload: bytes) -> None:
    writer.write(b"%x\r\n%s\r\n" % (len(payload), payload))
    await writer.drain()


async def scripted(request: bytes, writer: asyncio.StreamWriter) -> bool:
    body = request_json(request)
    model = body["model"]
    pieces = (
        TEXT_SCRIPTS.get(model)
        or ARGS_SCRIPTS.get(model)
        or REFUSAL_SCRIPTS.get(model)
        or LONG_DELTAS
    )
    calls = model in ARGS_SCRIPTS
    field = "refusal" if model in REFUSAL_SCRIPTS else "content"
    if not body.get("stream"):
        data = json.dumps(_completion(model, pieces, calls)).encode()
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(data)}"
        writer.write(head.encode() + b"\r\n\r\n" + data)
        await writer.drain()
        return True
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunks = [_chunk(model, {"role": "assistant", "content": ""})]
    for i, piece in enumerate(pieces):
        name = TOOL_NAMES.get(model, "note")
        chunks.append(_chunk(model, _call(piece, i == 0, name) if calls else {field: piece}))
    for chunk in chunks:
        await _send(writer, b"data: " + json.dumps(chunk).encode() + b"\n\n")
    if model.startswith("dies"):
        return False  # the connection closes mid-stream: no finish, no [DONE]
    if model == "long_slow":  # the last delta waits until the test saw the first one
        await asyncio.wait_for(RELEASE.wait(), 10)
        await _send(
            writer, b"data: " + json.dumps(_chunk(model, {"content": "end"})).encode() + b"\n\n"
        )
        LAST_SENT.set()
    finish = _chunk(model, {}, "tool_calls" if calls else "stop")
    await _send(writer, b"data: " + json.dumps(finish).encode() + b"\n\ndata: [DONE]\n\n")
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    return True


# -- the gateway --------------------------------------------------------------------------------


@asynccontextmanager
async def gateway_in_front_of(
    upstream: FakeUpstream, settings_of: Any, holdback: int | None = None
) -> AsyncIterator[tuple[InProcessServer, Any]]:
    """The gateway with the phrase scanner (``stream_safety_holdback``: ``holdback``, or
    the built-in 64), in front of ``upstream`` and the scripted server."""
    plugin_section = {} if holdback is None else {"stream_safety_holdback": holdback}
    async with ScriptedServer(scripted) as script:
        base = f"http://127.0.0.1:{script.port}/v1"
        models = models_config(upstream)
        for name in [*TEXT_SCRIPTS, *ARGS_SCRIPTS, *REFUSAL_SCRIPTS, "long_slow"]:
            models[name] = {
                "provider": "openai",
                "base_url": base,
                "upstream_model": name,
                "api_key": "k",
            }
        # The built-in safety plugin off: these tests pin the hold-back the phrase scanner
        # alone gets (the plugin's rules raise it to their reach: tests/test_safety_stages.py).
        plugins = {"openai_compat": plugin_section, "safety": {"enabled": False}}
        settings = settings_of(models=models, plugins=plugins)
        app = create_app(
            settings, load_entrypoints=False, extra_plugins=[("phrase", PhrasePlugin())]
        )
        async with served(app) as server:
            yield server, app


@pytest.fixture
async def gateway(
    upstream: FakeUpstream, make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[InProcessServer, Any]]:
    monkeypatch.setenv(KEY_ENV, upstream.api_key)
    async with gateway_in_front_of(upstream, make_settings) as pair:
        yield pair


@pytest.fixture
async def small_gateway(
    upstream: FakeUpstream, make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[InProcessServer, Any]]:
    """``stream_safety_holdback = 16``: text goes out while the stream goes on."""
    monkeypatch.setenv(KEY_ENV, upstream.api_key)
    async with gateway_in_front_of(upstream, make_settings, holdback=16) as pair:
        yield pair


async def safety_events(app: Any) -> list[tuple[str, str]]:
    events = await context(app).store.events_after("safety", 0)
    return [(e.type, e.data["direction"]) for e in events]


async def responses_stream(client: Any, model: str) -> tuple[list[Any], str | None]:
    """A streamed response's events, and how it failed: the ``error`` event (the SDK
    raises it) or the ``response.failed`` event's message; None when it did not."""
    events: list[Any] = []
    try:
        async for event in await client.responses.create(model=model, input="hi", stream=True):
            events.append(event)
    except openai.APIError as exc:
        return events, exc.message
    if events and events[-1].type == "response.failed" and events[-1].response.error:
        return events, str(events[-1].response.error.message)
    return events, None


async def chat_text(stream: Any, seen: list[str]) -> None:
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            seen.append(chunk.choices[0].delta.content)


# -- a phrase split over deltas -----------------------------------------------------------------


async def test_phrase_split_across_deltas_is_blocked_on_a_streamed_chat(gateway):
    server, app = gateway
    client = async_sdk(server)
    with pytest.raises(openai.BadRequestError) as plain:
        await client.chat.completions.create(model="gpt-test", messages=USER)
    assert plain.value.code == "content_blocked"
    seen: list[str] = []
    stream = await client.chat.completions.create(model="gpt-test", messages=USER, stream=True)
    with pytest.raises(openai.APIError, match="forbidden phrase"):
        await chat_text(stream, seen)
    assert "the upstream" not in "".join(seen)
    assert await safety_events(app) == [("safety.block", "output")] * 2  # audited, both ways


async def test_phrase_split_across_deltas_is_blocked_on_streamed_completions(gateway):
    server, _app = gateway
    stream = await async_sdk(server).completions.create(model="gpt-test", prompt="hi", stream=True)
    seen: list[str] = []
    with pytest.raises(openai.APIError, match="forbidden phrase"):
        async for chunk in stream:
            seen += [c.text for c in chunk.choices]
    assert "the upstream" not in "".join(seen)


async def test_phrase_split_across_deltas_fails_a_streamed_response(gateway):
    server, _app = gateway
    events, failure = await responses_stream(async_sdk(server), "gpt-test")
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert "the upstream" not in deltas
    assert failure is not None and "forbidden phrase" in failure


async def test_text_before_a_split_phrase_goes_out_and_the_phrase_does_not(small_gateway):
    server, _app = small_gateway
    seen: list[str] = []
    stream = await async_sdk(server).chat.completions.create(
        model="phrase_late", messages=USER, stream=True
    )
    with pytest.raises(openai.APIError, match="forbidden phrase"):
        await chat_text(stream, seen)
    sent = "".join(seen)
    assert sent.startswith("All good so far, nothing")  # released before the block
    assert "the up" not in sent


# -- redaction ----------------------------------------------------------------------------------


async def test_redaction_spanning_deltas_is_applied_when_streamed(gateway):
    server, app = gateway
    client = async_sdk(server)
    seen: list[str] = []
    stream = await client.chat.completions.create(model="secret", messages=USER, stream=True)
    await chat_text(stream, seen)
    assert "".join(seen) == "my key is [redacted], keep it"
    events, failure = await responses_stream(client, "secret")
    assert failure is None and events[-1].type == "response.completed"
    assert events[-1].response.output_text == "my key is [redacted], keep it"
    # One finding per streamed text, not one per rescan of the held-back window.
    assert await safety_events(app) == [("safety.redact", "output")] * 2


async def test_redaction_spanning_deltas_applies_while_text_goes_out(small_gateway):
    server, _app = small_gateway
    stream = await async_sdk(server).chat.completions.create(
        model="secret", messages=USER, stream=True
    )
    seen: list[str] = []
    await chat_text(stream, seen)
    # "my key is sec" was held back; the next delta completes the key, redacted, and
    # all but the last 16 characters go out at once, the rest at the end.
    assert seen == ["my key is [re", "dacted], keep it"]


# -- tool-call arguments ------------------------------------------------------------------------


async def test_tool_call_arguments_with_a_blocked_phrase_are_blocked_streamed_and_not(gateway):
    server, _app = gateway
    client = async_sdk(server)
    for stream in (False, True):
        if not stream:
            with pytest.raises(openai.BadRequestError) as plain:
                await client.chat.completions.create(
                    model="args_phrase", messages=USER, tools=TOOLS
                )
            assert plain.value.code == "content_blocked"
            continue
        chunks = await client.chat.completions.create(
            model="args_phrase", messages=USER, tools=TOOLS, stream=True
        )
        arguments = ""
        with pytest.raises(openai.APIError, match="forbidden phrase"):
            async for chunk in chunks:
                for call in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
                    arguments += (call.function and call.function.arguments) or ""
        assert "the up" not in arguments
    with pytest.raises(openai.BadRequestError):
        await client.responses.create(model="args_phrase", input="hi", tools=TOOLS)
    events, failure = await responses_stream(client, "args_phrase")
    assert failure is not None and "forbidden phrase" in failure
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert "the up" not in deltas


async def test_tool_call_arguments_are_redacted_across_deltas_streamed_and_not(gateway):
    server, _app = gateway
    client = async_sdk(server)
    plain = await client.chat.completions.create(model="args_secret", messages=USER, tools=TOOLS)
    [call] = plain.choices[0].message.tool_calls or []
    assert call.type == "function"
    assert call.function.arguments == '{"key": "[redacted]"}'
    chunks = await client.chat.completions.create(
        model="args_secret", messages=USER, tools=TOOLS, stream=True
    )
    arguments = ""
    async for chunk in chunks:
        for call_delta in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            arguments += (call_delta.function and call_delta.function.arguments) or ""
    assert arguments == '{"key": "[redacted]"}'
    events, failure = await responses_stream(client, "args_secret")
    assert failure is None
    [done] = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert done.arguments == '{"key": "[redacted]"}'


# -- the hold-back stays bounded ----------------------------------------------------------------


async def test_a_scanned_stream_still_streams(gateway):
    """The first delta reaches the client while the upstream still holds its last one."""
    server, _app = gateway
    RELEASE.clear()
    LAST_SENT.clear()
    stream = await async_sdk(server).chat.completions.create(
        model="long_slow", messages=USER, stream=True
    )
    seen: list[str] = []
    async for chunk in stream:
        delta = chunk.choices[0].delta.content if chunk.choices else None
        if delta:
            if not seen:
                assert not LAST_SENT.is_set(), "the gateway held the whole stream back"
                RELEASE.set()
            seen.append(delta)
    assert "".join(seen) == "".join(LONG_DELTAS) + "end"
    assert LAST_SENT.is_set()


@pytest.mark.parametrize("value", [-1, "64", True, 1.5])
async def test_stream_safety_holdback_must_be_a_whole_number(make_settings, value):
    async with running_app(make_settings()) as (_app, client):
        patch = {"plugins": {"openai_compat": {"stream_safety_holdback": value}}}
        answer = await client.patch("/gateway/config", json=patch, headers=ADMIN)
        assert answer.status_code == 400, await answer.get_data()
        error = (await answer.get_json())["error"]
        assert error["code"] == "config_invalid"
        assert "plugins.openai_compat.stream_safety_holdback: must be a whole" in error["message"]
        shown = await (await client.get("/gateway/config", headers=ADMIN)).get_json()
        assert shown["sources"]["overrides_present"] is False  # nothing was written


# -- an upstream that fails mid-stream ----------------------------------------------------------


async def test_held_back_text_goes_out_before_the_error_when_the_upstream_dies(gateway):
    """``gpt-dies`` streams "partial answer" (all of it held back), then hangs up."""
    server, _app = gateway
    client = async_sdk(server)
    seen: list[str] = []
    stream = await client.chat.completions.create(model="gpt-dies", messages=USER, stream=True)
    with pytest.raises(openai.APIError) as failed:
        await chat_text(stream, seen)
    assert "".join(seen) == "partial answer"
    assert "safety" not in failed.value.message
    events, failure = await responses_stream(client, "gpt-dies")
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == "partial answer"
    assert failure is not None and "safety" not in failure


async def test_held_back_text_with_a_blocked_phrase_stays_back_when_the_upstream_dies(gateway):
    server, app = gateway
    client = async_sdk(server)
    seen: list[str] = []
    stream = await client.chat.completions.create(model="dies_phrase", messages=USER, stream=True)
    with pytest.raises(openai.APIError, match="forbidden phrase"):
        await chat_text(stream, seen)
    assert "the up" not in "".join(seen)
    events, failure = await responses_stream(client, "dies_phrase")
    assert failure is not None and "forbidden phrase" in failure
    assert not [e for e in events if e.type == "response.output_text.delta"]
    assert await safety_events(app) == [("safety.block", "output")] * 2


# -- refusals and tool-call names ---------------------------------------------------------------


async def refusal_text(client: Any, model: str) -> str:
    stream = await client.chat.completions.create(model=model, messages=USER, stream=True)
    text = ""
    async for chunk in stream:
        text += (chunk.choices[0].delta.refusal or "") if chunk.choices else ""
    return text


async def test_refusals_are_scanned_streamed_and_not(gateway):
    server, _app = gateway
    client = async_sdk(server)
    with pytest.raises(openai.BadRequestError, match="forbidden phrase"):
        await client.chat.completions.create(model="refusal_phrase", messages=USER)
    with pytest.raises(openai.APIError, match="forbidden phrase"):
        await refusal_text(client, "refusal_phrase")
    plain = await client.chat.completions.create(model="refusal_secret", messages=USER)
    assert plain.choices[0].message.refusal == "not telling: [redacted]"
    assert await refusal_text(client, "refusal_secret") == "not telling: [redacted]"


async def test_tool_call_names_are_scanned_streamed_and_not(gateway):
    server, _app = gateway
    client = async_sdk(server)
    with pytest.raises(openai.BadRequestError, match="forbidden tool"):
        await client.chat.completions.create(model="name_phrase", messages=USER, tools=TOOLS)
    stream = await client.chat.completions.create(
        model="name_phrase", messages=USER, tools=TOOLS, stream=True
    )
    names: list[str] = []
    with pytest.raises(openai.APIError, match="forbidden tool"):
        async for chunk in stream:
            for call in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
                names.append((call.function and call.function.name) or "")
    assert "forbidden_tool" not in names
    events, failure = await responses_stream(client, "name_phrase")
    assert failure is not None and "forbidden tool" in failure
    assert not [e for e in events if e.type == "response.output_item.added"]
    # A name that passes is not held back: it comes whole with its call's first chunk.
    stream = await client.chat.completions.create(
        model="args_secret", messages=USER, tools=TOOLS, stream=True
    )
    firsts = [
        call.function.name
        async for chunk in stream
        for call in (chunk.choices[0].delta.tool_calls or [] if chunk.choices else [])
        if call.id and call.function
    ]
    assert firsts == ["note"]


# -- a match longer than the hold-back ----------------------------------------------------------


async def test_a_match_longer_than_the_holdback_is_blocked_and_says_part_went_out(small_gateway):
    server, _app = small_gateway
    seen: list[str] = []
    stream = await async_sdk(server).chat.completions.create(
        model="long_match", messages=USER, stream=True
    )
    with pytest.raises(openai.APIError, match="long match") as blocked:
        await chat_text(stream, seen)
    assert "".join(seen).startswith("<<x")  # sent before the match was whole
    assert ">>" not in "".join(seen)
    assert "found only by the final scan" in blocked.value.message
    assert "stream_safety_holdback + 1 characters" in blocked.value.message
