"""The rolling safety scan keeps a stream's order: a seeded fuzz of upstream chat streams
(text, refusals, reasoning and tool calls, in random pieces, with and without a
``finish_reason``) through the real ``OutputScanner`` -> ``StreamScan`` ->
``ResponsesStream``, at hold-backs 0, 1, 3, 8 and 64, in a running gateway with a
registered scanner.

The scan holds text back and releases it in a later delta, often together with the start
of the next segment; the chat text must come out whole (nothing lost, nothing twice) and
the Responses output items and content parts in the upstream's arrival order. The same
over HTTP, through the SDK: ``test_openai_responses_refusals.py``."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from quart import g

from host.api import Principal
from plugins.openai_compat.responses.stream import ResponsesStream
from plugins.openai_compat.safety import OutputScanner
from tests.conftest import running_app
from tests.test_safety_streams import PhrasePlugin

HOLDBACKS = (0, 1, 3, 8, 64)
CASES = 300
TEXT_KINDS = ("content", "refusal", "reasoning_content")
KINDS = ("content", "refusal", "content", "refusal", "reasoning_content", "tool")
ALPHABET = "abcdefghij XY"  # nothing the phrase scanner acts on

Segment = tuple[str, str]  # (a delta text field, or "tool"; its whole text)


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [choice]}


def _case(rng: random.Random) -> tuple[list[Segment], list[dict[str, Any]]]:
    """Random segments, and the upstream chunks streaming them in pieces of 1-12."""
    segments = [  # short ones too: held back whole, then out with the next segment's start
        (
            rng.choice(KINDS),
            "".join(rng.choices(ALPHABET, k=rng.randint(1, rng.choice([2, 4, 10, 40])))),
        )
        for _ in range(rng.randint(1, 5))
    ]
    chunks = [_chunk({"role": "assistant", "content": ""})]
    calls = 0
    for kind, text in segments:
        pieces: list[str] = []
        while len("".join(pieces)) < len(text):
            start = len("".join(pieces))
            pieces.append(text[start : start + rng.randint(1, 12)])
        for n, piece in enumerate(pieces):
            if kind != "tool":
                chunks.append(_chunk({kind: piece}))
                continue
            call: dict[str, Any] = {"index": calls, "function": {"arguments": piece}}
            if n == 0:
                call.update(id=f"call_{calls}", type="function")
                call["function"]["name"] = f"tool{calls}"
            chunks.append(_chunk({"tool_calls": [call]}))
        calls += kind == "tool"
    if rng.random() < 0.7:
        chunks.append(_chunk({}, "tool_calls" if calls else "stop"))
    return segments, chunks


def _chat_texts(chunks: list[dict[str, Any]]) -> dict[Any, str]:
    """Each text field's whole text, and each tool call's name and arguments."""
    texts: dict[Any, str] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            delta = choice["delta"]
            for kind in TEXT_KINDS:
                if delta.get(kind):
                    texts[kind] = texts.get(kind, "") + delta[kind]
            for call in delta.get("tool_calls") or []:
                for key in ("name", "arguments"):
                    if call["function"].get(key):
                        slot = (key, call["index"])
                        texts[slot] = texts.get(slot, "") + call["function"][key]
    return texts


def _expected_items(segments: list[Segment]) -> list[Any]:
    """The Responses output the segments make, in arrival order: a message of its parts
    (adjacent text of one kind one part) until a tool call ends it, each call an item."""
    items: list[Any] = []
    for kind, text in segments:
        if kind == "tool":
            items.append(("function_call", text))
        elif kind != "reasoning_content":
            part = "output_text" if kind == "content" else "refusal"
            if not items or items[-1][0] != "message":
                items.append(("message", []))
            parts = items[-1][1]
            if parts and parts[-1][0] == part:
                parts[-1] = (part, parts[-1][1] + text)
            else:
                parts.append((part, text))
    return items


def _items(output: list[dict[str, Any]]) -> list[Any]:
    return [
        ("function_call", item["arguments"])
        if item["type"] == "function_call"
        else ("message", [(p["type"], p.get("text", p.get("refusal"))) for p in item["content"]])
        for item in output
    ]


async def _upstream(chunks: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    for chunk in chunks:
        yield chunk


@pytest.fixture
async def scanning_app(make_settings: Any) -> AsyncIterator[Any]:
    """A started gateway with the phrase scanner registered, so the scan is active."""
    plugins = [("phrase", PhrasePlugin())]
    settings = make_settings(plugins={"safety": {"enabled": False}})  # the phrase scanner alone
    async with running_app(settings, extra_plugins=plugins) as (app, _client):
        yield app


async def test_scanned_streams_keep_their_text_and_arrival_order(scanning_app):
    rng = random.Random(20240611)
    async with scanning_app.app_context():
        g.principal = Principal("fuzz", "token")  # what authentication sets for a request
        scanner = OutputScanner("responses", "fuzz")
        assert scanner.active
        for case in range(CASES):
            segments, chunks = _case(rng)
            upstream_texts = _chat_texts(chunks)
            scanner.holdback = HOLDBACKS[case % len(HOLDBACKS)]
            scanned = [chunk async for chunk in scanner.stream(_upstream(chunks))]
            where = (scanner.holdback, segments)
            assert _chat_texts(scanned) == upstream_texts, where
            state = ResponsesStream()
            for chunk in scanned:
                state.feed(chunk)
            state.close()
            assert _items(state.output) == _expected_items(segments), where
