"""Model refusals on the Responses API (served over chat completions): chat's
``message.refusal`` / ``delta.refusal`` become a ``refusal`` content part of the
assistant message, streamed with ``response.refusal.delta`` / ``.done``; stored
responses keep it, and a ``previous_response_id`` continuation sends it back upstream
as the assistant message's ``refusal``. The safety scan still covers it.

Through the official ``openai`` SDK over HTTP, in front of real loopback upstreams: the
``FakeUpstream``'s ``refuses`` behaviour (``gpt-refuses``), and a ``ScriptedServer``
whose answers mix text and a refusal in a given order."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from host.app import create_app
from tests.conftest import ADMIN
from tests.fake_openai_upstream import KEY_ENV, NORMAL_TEXT, REFUSAL_TEXT, FakeUpstream
from tests.openai_helpers import InProcessServer, async_sdk, sdk, served
from tests.scripted_server import ScriptedServer, request_json
from tests.test_openai_responses_spec import sse_events
from tests.test_safety_streams import PhrasePlugin, gateway_in_front_of, responses_stream

REFUSAL_WORDS = len(REFUSAL_TEXT.split(" "))


def parts_of(response: Any) -> list[tuple[str, str]]:
    """(type, text) of each content part of a response's one message."""
    [item] = response.output
    assert item.type == "message" and item.role == "assistant"
    return [(p.type, p.refusal if p.type == "refusal" else p.text) for p in item.content]


def test_a_refusal_is_a_refusal_part_stored_and_sent_back_on_continuation(openai_gateway, upstream):
    client = sdk(openai_gateway)
    first = client.responses.create(model="gpt-refuses", input="do the bad thing")
    assert first.status == "completed"
    assert parts_of(first) == [("refusal", REFUSAL_TEXT)]
    assert first.output_text == ""
    assert client.responses.retrieve(first.id).output == first.output
    follow = client.responses.create(
        model="gpt-test", input="why not?", previous_response_id=first.id
    )
    assert follow.output_text == NORMAL_TEXT
    assert upstream.bodies("normal")[-1]["messages"] == [
        {"role": "user", "content": "do the bad thing"},
        {"role": "assistant", "content": None, "refusal": REFUSAL_TEXT},
        {"role": "user", "content": "why not?"},
    ]


async def test_a_streamed_refusal_has_its_part_events_in_order(openai_gateway, upstream):
    client = async_sdk(openai_gateway)
    stream = await client.responses.create(model="gpt-refuses", input="bad", stream=True)
    # Read by position once their types are checked: each is one of the SDK's event classes.
    events: list[Any] = [event async for event in stream]
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.refusal.delta"] * REFUSAL_WORDS,
        "response.refusal.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    numbers = [e.sequence_number for e in events]
    assert numbers == list(range(numbers[0], numbers[0] + len(events)))
    item_id = events[2].item.id
    for event in events[3:-2]:
        assert (event.item_id, event.output_index, event.content_index) == (item_id, 0, 0)
    assert events[3].part.type == "refusal" and events[3].part.refusal == ""
    deltas = [e.delta for e in events if e.type == "response.refusal.delta"]
    assert "".join(deltas) == REFUSAL_TEXT
    assert events[-4].refusal == REFUSAL_TEXT
    assert events[-3].part.type == "refusal" and events[-3].part.refusal == REFUSAL_TEXT
    final = events[-1].response
    assert parts_of(final) == [("refusal", REFUSAL_TEXT)]
    assert final.output[0] == events[-2].item
    assert (await client.responses.retrieve(final.id)).output == final.output
    again = await client.responses.create(
        model="gpt-test", input="sure?", previous_response_id=final.id, stream=True
    )
    assert [e.type async for e in again][-1] == "response.completed"
    assistant = upstream.bodies("normal")[-1]["messages"][1]
    assert assistant == {"role": "assistant", "content": None, "refusal": REFUSAL_TEXT}
    await client.close()


def test_the_raw_refusal_events_are_named_as_their_type(openai_gateway, upstream):
    body = {"model": "gpt-refuses", "input": "bad", "stream": True}
    with httpx.stream("POST", f"{openai_gateway.url}/v1/responses", json=body, headers=ADMIN) as r:
        raw = "\n".join(r.iter_lines())
    events, rest = sse_events(raw)  # event: == type, sequence numbers one by one
    assert rest == ["data: [DONE]"]
    delta = next(e for e in events if e["type"] == "response.refusal.delta")
    assert set(delta) == {
        "type",
        "sequence_number",
        "item_id",
        "output_index",
        "content_index",
        "delta",
    }
    done = next(e for e in events if e["type"] == "response.refusal.done")
    assert set(done) - set(delta) == {"refusal"} and done["refusal"] == REFUSAL_TEXT


def test_an_assistant_message_given_back_with_its_refusal_part_is_understood(
    openai_gateway, upstream
):
    """``input`` may replay an earlier output (the SDK's ``input += response.output``)."""
    client = sdk(openai_gateway)
    first = client.responses.create(model="gpt-refuses", input="bad", store=False)
    replay: Any = [
        {"role": "user", "content": "bad"},
        first.output[0].model_dump(),
        {"role": "user", "content": "fine"},
    ]
    assert client.responses.create(model="gpt-test", input=replay).output_text == NORMAL_TEXT
    assert upstream.bodies("normal")[-1]["messages"][1] == {
        "role": "assistant",
        "content": None,
        "refusal": REFUSAL_TEXT,
    }
    refusal_from_the_user: Any = [  # a part the SDK's types do not allow here either
        {"role": "user", "content": [{"type": "refusal", "refusal": "no"}]}
    ]
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="gpt-test", input=refusal_from_the_user)
    assert caught.value.code == "unsupported_parameter"
    assert "'refusal' is not supported" in caught.value.message


# -- text and a refusal in one message, in a given order ------------------------------------

SCRIPTS = {
    "text_then_refusal": [("content", "Let me look. "), ("refusal", "No, I can't"),
                          ("refusal", " do that")],
    "refusal_then_text": [("refusal", "I won't do that."), ("content", " But here"),
                          ("content", " is a poem")],
    # Scanned (hold-back 4): the refusal is held back whole, then goes out in the delta
    # that starts the text, which is longer than the hold-back.
    "refusal_held_then_text": [("refusal", "No."),
                               ("content", "But here is something else, at length.")],
    # Scanned: the second refusal starts in the delta that ends the (held) text.
    "refusal_text_refusal": [("refusal", "No way"), ("content", "ok"),
                             ("refusal", "really not that")],
}  # fmt: skip


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": model}
    return b"data: " + json.dumps({**chunk, "choices": [choice]}).encode() + b"\n\n"


async def mixed(request: bytes, writer: asyncio.StreamWriter) -> bool:
    """Chat answers of ``SCRIPTS``: streamed delta by delta, or one message with both
    fields."""
    body = request_json(request)
    model, pieces = body["model"], SCRIPTS[body["model"]]
    if body.get("stream"):
        chunks = [_chunk(model, {"role": "assistant", "content": ""})]
        chunks += [_chunk(model, {field: piece}) for field, piece in pieces]
        data = b"".join([*chunks, _chunk(model, {}, "stop"), b"data: [DONE]\n\n"])
        kind = "text/event-stream"
    else:
        message = {"role": "assistant", "content": "", "refusal": ""}
        for field, piece in pieces:
            message[field] += piece
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        data = json.dumps({"id": "c1", "object": "chat.completion", "choices": [choice]}).encode()
        kind = "application/json"
    head = f"HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {len(data)}\r\n\r\n"
    writer.write(head.encode() + data)
    await writer.drain()
    return True


@pytest.fixture(params=[None, 4], ids=["unscanned", "scanned"])
async def mixed_gateway(make_settings: Any, request: Any) -> AsyncIterator[InProcessServer]:
    """The gateway in front of ``mixed``; ``scanned``: with a safety scanner and
    ``stream_safety_holdback = 4``, so that the held-back end of one part goes out in
    the same delta as the start of the next (the scan ends a segment when the next
    begins), and must still land in its own part."""
    async with ScriptedServer(mixed) as script:
        base = f"http://127.0.0.1:{script.port}/v1"
        models = {
            name: {"provider": "openai", "base_url": base, "upstream_model": name, "api_key": "k"}
            for name in SCRIPTS
        }
        scanned = request.param is not None
        settings = make_settings(
            models=models,
            plugins={"openai_compat": {"stream_safety_holdback": request.param}} if scanned else {},
        )
        plugins: list[tuple[str, object]] = [("phrase", PhrasePlugin())] if scanned else []
        app = create_app(settings, load_entrypoints=False, extra_plugins=plugins)
        async with served(app) as server:
            yield server


def _runs(types: list[str]) -> list[str]:
    """``types`` with each run of the same event type as one (deltas come in runs)."""
    return [t for i, t in enumerate(types) if i == 0 or types[i - 1] != t]


def _merged(pieces: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The content parts of ``pieces`` in arrival order: (part type, text), adjacent pieces
    of one field as one part."""
    parts: list[tuple[str, str]] = []
    for field, piece in pieces:
        kind = "output_text" if field == "content" else "refusal"
        if parts and parts[-1][0] == kind:
            parts[-1] = (kind, parts[-1][1] + piece)
        else:
            parts.append((kind, piece))
    return parts


async def test_text_and_refusal_parts_come_in_arrival_order(mixed_gateway):
    client = async_sdk(mixed_gateway)
    for model, pieces in SCRIPTS.items():
        # Not streamed, chat keeps no order between its fields: the text comes first.
        plain = await client.responses.create(model=model, input="hi")
        text = "".join(p for f, p in pieces if f == "content")
        refusal = "".join(p for f, p in pieces if f == "refusal")
        assert parts_of(plain) == [("output_text", text), ("refusal", refusal)]
        stream = await client.responses.create(model=model, input="hi", stream=True)
        events: list[Any] = [event async for event in stream]  # read by position, as above
        expected = _merged(pieces)
        per_part = [
            [
                "response.content_part.added",
                f"response.{kind}.delta",
                f"response.{kind}.done",
                "response.content_part.done",
            ]
            for kind, _ in expected
        ]
        assert _runs([e.type for e in events]) == [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            *[t for types in per_part for t in types],
            "response.output_item.done",
            "response.completed",
        ], model
        parts = [e for e in events if e.type.startswith("response.content_part.")]
        assert [(e.content_index, e.part.type) for e in parts] == [
            (index, kind) for index, (kind, _) in enumerate(expected) for _ in range(2)
        ]
        for index, (kind, whole) in enumerate(expected):
            streamed = [
                e.delta
                for e in events
                if e.type == f"response.{kind}.delta" and e.content_index == index
            ]
            assert "".join(streamed) == whole, model
        final = events[-1].response
        assert parts_of(final) == expected, model
        assert (await client.responses.retrieve(final.id)).output == final.output
    await client.close()


# -- the safety scan ----------------------------------------------------------------------------


async def test_refusals_on_the_responses_api_are_scanned_streamed_and_not(
    upstream: FakeUpstream, make_settings: Any, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv(KEY_ENV, upstream.api_key)
    async with gateway_in_front_of(upstream, make_settings) as (server, _app):
        client = async_sdk(server)
        plain = await client.responses.create(model="refusal_secret", input="hi")
        assert parts_of(plain) == [("refusal", "not telling: [redacted]")]
        events, failure = await responses_stream(client, "refusal_secret")
        assert failure is None
        deltas = [e.delta for e in events if e.type == "response.refusal.delta"]
        assert "".join(deltas) == "not telling: [redacted]"
        assert parts_of(events[-1].response) == [("refusal", "not telling: [redacted]")]
        with pytest.raises(openai.BadRequestError, match="forbidden phrase"):
            await client.responses.create(model="refusal_phrase", input="hi")
        events, failure = await responses_stream(client, "refusal_phrase")
        assert failure is not None and "forbidden phrase" in failure
        assert "the up" not in "".join(getattr(e, "delta", "") for e in events)
