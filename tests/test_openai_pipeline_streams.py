"""Pipeline models: token usage from ``llm`` steps (``step.usage``), keep-alive comments
in slow streams (pipeline models and upstream models), and a retried ``llm`` step whose
text is streamed once. The gateway is served by Hypercorn on loopback and called with
the async openai SDK and raw HTTP; upstreams are scripted servers on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from host.app import create_app
from tests.conftest import ADMIN, running_app
from tests.openai_helpers import SAFETY_OFF, InProcessServer, async_sdk, served, sse_data
from tests.pipelines_fixtures import write_pipelines
from tests.scripted_server import Answer, ScriptedServer

PIPELINES = """
import asyncio

from plugins.pipelines.definition import Pipeline, code, llm


def last(ctx) -> str:
    return ctx.input["messages"][-1]["content"]


async def slow(ctx):
    await ctx.delta("before")
    await asyncio.sleep(0.7)
    await ctx.delta(" after")
    return "before after"


TWICE = Pipeline(
    id="twice",
    steps=[
        llm("first", "echo", prompt=last),
        llm("second", "echo", prompt=lambda ctx: ctx.results["first"]["text"]),
    ],
)
PLAIN = Pipeline(id="plain", steps=[code("say", lambda ctx: "plain: " + last(ctx))])
SLOW = Pipeline(id="slow", steps=[code("wait", slow)])
FLAKY = Pipeline(
    id="flaky", steps=[llm("answer", "flaky", prompt=last, retries=1, backoff_seconds=0.01)]
)
DIVERGES = Pipeline(
    id="diverges", steps=[llm("answer", "diverges", prompt=last, retries=1, backoff_seconds=0.01)]
)


async def next_step(ctx):
    await ctx.delta(" Next step.")
    return "Next step."


SHRINKS = Pipeline(
    id="shrinks",
    steps=[
        llm("answer", "shrinks", prompt=last, retries=1, backoff_seconds=0.01),
        code("then", next_step),
    ],
)
REPEATS = Pipeline(
    id="repeats",
    steps=[
        llm("answer", "repeats", prompt=last, retries=1, backoff_seconds=0.01),
        code("then", next_step),
    ],
)
"""

EXPOSED = ["twice", "plain", "slow", "flaky", "diverges", "shrinks", "repeats"]
KEEPALIVE = b": keep-alive\n\n"
DIE = "die"  # in a script: close the connection mid-stream (no [DONE])
HOLD = "hold"  # in a script: send no chunk, only SSE comments, until the client goes away

# -- scripted upstreams -----------------------------------------------------------------------


def streams(*scripts: list[Any], gone: asyncio.Event | None = None) -> Answer:
    """Answer the n-th request with the n-th script as an SSE stream (the last script
    repeats). A script item is a text delta, a usage dict (the usage chunk), seconds to
    wait, ``DIE`` or ``HOLD`` (``gone`` is set when the client has gone); a script that
    does not die ends with ``data: [DONE]``."""
    count = 0

    async def answer(request: bytes, writer: asyncio.StreamWriter) -> bool:
        nonlocal count
        script = scripts[min(count, len(scripts) - 1)]
        count += 1
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )

        def send(payload: bytes) -> None:
            writer.write(b"%x\r\n%s\r\n" % (len(payload), payload))

        for item in script:
            if item == DIE:
                await writer.drain()
                return False
            if item == HOLD:
                await _hold(writer, gone)
                return False
            if isinstance(item, float):
                await writer.drain()
                await asyncio.sleep(item)
                continue
            chunk: dict[str, Any] = {"id": "up", "object": "chat.completion.chunk", "model": "m"}
            if isinstance(item, dict):
                chunk |= {"choices": [], "usage": item}
            else:
                chunk["choices"] = [{"index": 0, "delta": {"content": item}, "finish_reason": None}]
            send(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        send(b"data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    return answer


async def _hold(writer: asyncio.StreamWriter, gone: asyncio.Event | None) -> None:
    for _ in range(200):
        try:
            writer.write(b"c\r\n: upstream\n\n\r\n")  # an SSE comment, 12 bytes
            await writer.drain()
        except ConnectionError:
            if gone is not None:
                gone.set()
            return
        await asyncio.sleep(0.05)


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


FIRST_USAGE, RETRY_USAGE = usage(3, 2), usage(3, 3)
# The first attempt dies after its usage chunk (tokens consumed), the retry succeeds.
FLAKY_SCRIPTS = (["Hello", " wor", FIRST_USAGE, DIE], ["Hello", " wor", "ld", RETRY_USAGE])
DIVERGING_SCRIPTS = (["Hello", " wor", DIE], ["Howdy", " there"])
# The retry completes with a strict prefix of what the first attempt sent, or all of it.
SHRINKING_SCRIPTS = (["The answer is 42.", " Also, ", DIE], ["The answer is 42."])
REPEATING_SCRIPTS = (["The answer is 42.", " Also, ", DIE], ["The answer is 42.", " Also, "])
SLOW_SCRIPT = ["first", 0.7, " last"]
HELD_GONE = asyncio.Event()


def model(server: ScriptedServer) -> dict[str, Any]:
    return {
        "provider": "openai",
        "base_url": f"http://127.0.0.1:{server.port}/v1",
        "upstream_model": "m",
        "max_retries": 0,
    }


@pytest.fixture
async def gateway(
    make_settings: Any, tmp_path: Path
) -> AsyncIterator[tuple[InProcessServer, dict[str, ScriptedServer]]]:
    directory = write_pipelines(tmp_path, "models", PIPELINES)
    async with (
        ScriptedServer(streams(*FLAKY_SCRIPTS)) as flaky,
        ScriptedServer(streams(*DIVERGING_SCRIPTS)) as diverges,
        ScriptedServer(streams(*SHRINKING_SCRIPTS)) as shrinks,
        ScriptedServer(streams(*REPEATING_SCRIPTS)) as repeats,
        ScriptedServer(streams(SLOW_SCRIPT)) as slow,
        ScriptedServer(streams(["first", HOLD], gone=HELD_GONE)) as held,
    ):
        upstreams = {
            "flaky": flaky,
            "diverges": diverges,
            "shrinks": shrinks,
            "repeats": repeats,
            "slow-upstream": slow,
            "held-upstream": held,
        }
        settings = make_settings(
            models={"echo": {"provider": "echo"}} | {n: model(s) for n, s in upstreams.items()},
            plugins={
                "pipelines": {"directory": str(directory), "poll_seconds": 0.05},
                "openai_compat": {"pipeline_models": EXPOSED, "keepalive_seconds": 0.2},
                **SAFETY_OFF,  # stream timing and chunking are what these tests pin
            },
        )
        async with served(create_app(settings, load_entrypoints=False)) as server:
            yield server, upstreams


async def chat_chunks(client: Any, model: str, text: str, **options: Any) -> list[Any]:
    """Every chunk of a streamed chat completion through the SDK."""
    stream = await client.chat.completions.create(
        model=model, messages=user(text), stream=True, **options
    )
    return [c async for c in stream]


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


async def raw_post(server: InProcessServer, path: str, body: dict[str, Any]) -> bytes:
    async with httpx.AsyncClient(base_url=server.url, headers=ADMIN, timeout=30) as client:
        answer = await client.post(path, json=body)
        assert answer.status_code == 200, answer.text
        return answer.content


async def run_events(server: InProcessServer, run_id: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=server.url, headers=ADMIN, timeout=30) as client:
        page = await client.get(f"/runs/{run_id}/events?format=json")
        events: list[dict[str, Any]] = page.json()["events"]
        return events


async def run_record(server: InProcessServer, run_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.url, headers=ADMIN, timeout=30) as client:
        record: dict[str, Any] = (await client.get(f"/runs/{run_id}")).json()
        return record


# Echo counts words: "one two" -> "echo: one two" (2 + 3), then that -> "echo: echo: one two"
# (3 + 4).
TWICE_USAGE = usage(2 + 3, 3 + 4)


# -- usage ------------------------------------------------------------------------------------


async def test_llm_steps_record_usage_and_pipeline_models_report_its_sum(gateway, store_url):
    server, _ = gateway
    async with async_sdk(server) as client:
        chat = await client.chat.completions.create(
            model="pipeline:twice", messages=user("one two")
        )
        assert chat.choices[0].message.content == "echo: echo: one two"
        assert chat.usage is not None and chat.usage.model_dump(exclude_none=True) == TWICE_USAGE
        completion = await client.completions.create(model="pipeline:twice", prompt="one two")
        assert completion.usage is not None
        assert completion.usage.model_dump(exclude_none=True) == TWICE_USAGE
        response = await client.responses.create(model="pipeline:twice", input="one two")
        assert response.usage is not None
        assert (response.usage.input_tokens, response.usage.output_tokens) == (5, 7)
        assert response.usage.total_tokens == 12
        plain = await client.chat.completions.create(model="pipeline:plain", messages=user("x"))
        assert plain.usage is None  # no llm step: unknown, not zero
    run_id = chat.id.removeprefix("chatcmpl-")
    events = await run_events(server, run_id)
    steps = [
        {k: v for k, v in e["data"].items() if k != "run_id"}
        for e in events
        if e["type"] == "step.usage"
    ]
    assert steps == [
        {"step": "first", "attempt": 1, **usage(2, 3)},
        {"step": "second", "attempt": 1, **usage(3, 4)},
    ]
    record = await run_record(server, run_id)
    assert record["output"] == {"text": "echo: echo: one two", "usage": usage(3, 4)}


async def test_streamed_pipeline_models_send_the_usage_chunk_when_asked(gateway):
    server, _ = gateway
    async with async_sdk(server) as client:
        asked = await chat_chunks(
            client, "pipeline:twice", "one two", stream_options={"include_usage": True}
        )
        *content, last = asked
        assert "".join(c.choices[0].delta.content or "" for c in content) == (
            "echo: one twoecho: echo: one two"  # both steps stream their deltas
        )
        assert last.choices == [] and last.model == "pipeline:twice"
        assert last.usage is not None and last.usage.model_dump(exclude_none=True) == TWICE_USAGE
        assert last.id == content[0].id
        quiet = await chat_chunks(client, "pipeline:twice", "one two")
        assert all(c.choices and c.usage is None for c in quiet)
        unknown = await chat_chunks(
            client, "pipeline:plain", "x", stream_options={"include_usage": True}
        )
        assert unknown[-1].choices == [] and unknown[-1].usage is None
        legacy = [
            c
            async for c in await client.completions.create(
                model="pipeline:twice",
                prompt="one two",
                stream=True,
                stream_options={"include_usage": True},
            )
        ]
        assert legacy[-1].choices == [] and legacy[-1].usage is not None
        assert legacy[-1].usage.model_dump(exclude_none=True) == TWICE_USAGE
        events = [
            e
            async for e in await client.responses.create(
                model="pipeline:twice", input="one two", stream=True
            )
        ]
        done = events[-1]
        assert done.type == "response.completed" and done.response.usage is not None
        assert done.response.usage.total_tokens == 12


# -- keep-alive -------------------------------------------------------------------------------


async def test_a_slow_pipeline_stream_sends_keep_alive_comments_the_sdk_ignores(gateway):
    server, _ = gateway
    chat = {"model": "pipeline:slow", "messages": user("x"), "stream": True}
    raw = await raw_post(server, "/v1/chat/completions", chat)
    assert KEEPALIVE in raw
    # One goes out in the 0.7 s between the two deltas (a busy machine may add another
    # before the first delta: the run's start can take longer than keepalive_seconds).
    assert raw.index(b"before") < raw.index(KEEPALIVE, raw.index(b"before")) < raw.index(b" after")
    text = "".join(
        c["choices"][0]["delta"].get("content") or ""
        for c in sse_data(raw)
        if isinstance(c, dict) and c.get("choices")
    )
    assert text == "before after" and sse_data(raw)[-1] == "[DONE]"
    raw = await raw_post(
        server, "/v1/responses", {"model": "pipeline:slow", "input": "x", "stream": True}
    )
    assert KEEPALIVE in raw
    async with async_sdk(server) as client:
        stream = await client.chat.completions.create(
            model="pipeline:slow", messages=user("x"), stream=True
        )
        texts = [c.choices[0].delta.content async for c in stream if c.choices]
        assert "".join(t or "" for t in texts) == "before after"
        events = [
            e
            async for e in await client.responses.create(
                model="pipeline:slow", input="x", stream=True
            )
        ]
        assert events[-1].type == "response.completed"
        assert events[-1].response.output_text == "before after"


async def test_a_slow_upstream_model_stream_gets_keep_alive_comments_too(gateway):
    server, _ = gateway
    raw = await raw_post(
        server,
        "/v1/chat/completions",
        {"model": "slow-upstream", "messages": user("x"), "stream": True},
    )
    assert raw.index(b"first") < raw.index(KEEPALIVE) < raw.index(b" last")
    async with async_sdk(server) as client:
        stream = await client.chat.completions.create(
            model="slow-upstream", messages=user("x"), stream=True
        )
        texts = [c.choices[0].delta.content async for c in stream if c.choices]
        assert "".join(t or "" for t in texts) == "first last"


async def test_a_client_gone_between_keep_alives_closes_the_upstream_request(gateway):
    server, _ = gateway
    HELD_GONE.clear()
    body = {"model": "held-upstream", "messages": user("x"), "stream": True}
    async with (
        httpx.AsyncClient(base_url=server.url, headers=ADMIN, timeout=30) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as answer,
    ):
        seen = b""
        async for part in answer.aiter_bytes():
            seen += part
            if KEEPALIVE in seen:
                break
        assert b"first" in seen and b"error" not in seen and not HELD_GONE.is_set()
    # The pending read of the upstream stream is cancelled and the request closed.
    await asyncio.wait_for(HELD_GONE.wait(), 10)


@pytest.mark.parametrize("value", [0, -1, "15", True])
async def test_keepalive_seconds_must_be_a_positive_number(make_settings, value):
    async with running_app(make_settings()) as (_app, client):
        patch = {"plugins": {"openai_compat": {"keepalive_seconds": value}}}
        answer = await client.patch("/gateway/config", json=patch, headers=ADMIN)
        assert answer.status_code == 400, await answer.get_data()
        error = (await answer.get_json())["error"]
        assert error["code"] == "config_invalid"
        assert "plugins.openai_compat.keepalive_seconds: must be a number" in error["message"]
        shown = await (await client.get("/gateway/config", headers=ADMIN)).get_json()
        assert shown["sources"]["overrides_present"] is False  # nothing was written


# -- retried llm steps ------------------------------------------------------------------------


async def test_a_retried_llm_step_is_streamed_once(gateway, store_url):
    server, upstreams = gateway
    async with async_sdk(server) as client:
        chunks = await chat_chunks(
            client, "pipeline:flaky", "hi", stream_options={"include_usage": True}
        )
    *content, last = chunks
    texts = [c.choices[0].delta.content for c in content if c.choices[0].delta.content]
    assert "".join(texts) == "Hello world"
    assert texts == ["Hello", " wor", "ld"]  # the retry's repeat of "Hello wor" held back
    # Both attempts' tokens were consumed, so both count.
    assert last.usage is not None
    assert last.usage.model_dump(exclude_none=True) == usage(6, 5)
    assert len(upstreams["flaky"].requests) == 2
    run_id = content[0].id.removeprefix("chatcmpl-")
    events = await run_events(server, run_id)
    deltas = [
        (e["data"]["attempt"], e["data"]["text"]) for e in events if e["type"] == "step.delta"
    ]
    assert deltas == [(1, "Hello"), (1, " wor"), (2, "Hello"), (2, " wor"), (2, "ld")]
    assert [e["type"] for e in events].count("step.retry") == 1
    assert [e["data"]["attempt"] for e in events if e["type"] == "step.usage"] == [1, 2]


async def test_a_retry_that_streams_other_text_ends_the_stream_with_an_error(gateway):
    server, _ = gateway
    texts: list[str] = []
    async with async_sdk(server) as client:
        stream = await client.chat.completions.create(
            model="pipeline:diverges", messages=user("hi"), stream=True
        )
        with pytest.raises(openai.APIError) as caught:
            async for chunk in stream:
                texts.extend(c.delta.content for c in chunk.choices if c.delta.content)
    assert "".join(texts) == "Hello wor"  # never "Howdy": it would contradict what was sent
    assert caught.value.code == "pipeline_output_diverged"
    run_id = caught.value.message.split("pipeline run ")[1].split()[0]
    assert "'answer'" in caught.value.message and "goes on" in caught.value.message
    # The run itself went on and completed with the retry's answer.
    record = await completed_run(server, run_id)
    assert record["output"]["text"] == "Howdy there"


async def completed_run(server: InProcessServer, run_id: str) -> dict[str, Any]:
    """The run's record once it has completed (it goes on after the stream ended)."""
    for _ in range(200):
        record = await run_record(server, run_id)
        if record["status"] == "completed":
            return record
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} did not complete: {record}")


def chunk_texts(events: list[Any]) -> str:
    """The content a client got from a streamed chat completion's SSE payloads."""
    return "".join(
        c["choices"][0]["delta"].get("content") or ""
        for c in events
        if isinstance(c, dict) and c.get("choices")
    )


async def test_a_retry_that_completes_with_less_text_ends_the_stream_with_an_error(gateway):
    server, upstreams = gateway
    chat = {"model": "pipeline:shrinks", "messages": user("hi"), "stream": True}
    events = sse_data(await raw_post(server, "/v1/chat/completions", chat))
    # What was sent is the first attempt's text, never followed by the next step's.
    assert chunk_texts(events) == "The answer is 42. Also, "
    assert "[DONE]" not in events
    error = events[-1]["error"]
    assert error["code"] == "pipeline_output_diverged"
    assert "'answer'" in error["message"] and "less text" in error["message"]
    assert len(upstreams["shrinks"].requests) == 2
    run_id = error["message"].split("pipeline run ")[1].split()[0]
    record = await completed_run(server, run_id)
    assert record["output"] == "Next step."


async def test_a_retry_that_repeats_what_was_sent_and_completes_streams_on(gateway):
    server, upstreams = gateway
    chat = {"model": "pipeline:repeats", "messages": user("hi"), "stream": True}
    events = sse_data(await raw_post(server, "/v1/chat/completions", chat))
    assert chunk_texts(events) == "The answer is 42. Also,  Next step."
    assert events[-1] == "[DONE]"
    assert not [e for e in events if isinstance(e, dict) and "error" in e]
    assert len(upstreams["repeats"].requests) == 2
