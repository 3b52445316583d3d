"""What the gateway takes from an upstream, and how long it waits: one line of an event
stream is at most ``[plugins.openai_compat] max_sse_line_bytes`` (the stream fails
cleanly past it), relayed in linear time below it; a non-streamed answer over the size
limit is its own error; and errors a retry cannot fix say so (``x-should-retry``), so
the official SDK calls the upstream once, not three times. Real upstreams on loopback
(``tests/scripted_server.py``)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest

from host.app import create_app
from plugins.openai_compat.providers.client import MAX_BODY_BYTES
from tests.conftest import ADMIN, ADMIN_TOKEN, running_app
from tests.fake_openai_upstream import closed_port
from tests.openai_helpers import USER, assert_error, served, sse_data
from tests.scripted_server import Answer, ScriptedServer, chat_completion, fixed

BODIES: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", {"messages": USER}),
    "completions": ("/v1/completions", {"prompt": "hi"}),
}
WIRE_CHUNK = 65536  # the upstream writes its body in pieces of this size, as a socket would


def chunk_line(api: str, text: str) -> bytes:
    """One ``data:`` line of an OpenAI stream, carrying ``text``."""
    if api == "chat":
        choice: dict[str, Any] = {"index": 0, "delta": {"content": text}, "finish_reason": None}
        kind = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text, "finish_reason": None}
        kind = "text_completion"
    obj = {"id": "c1", "object": kind, "created": 0, "model": "up", "choices": [choice]}
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def sse_upstream(*lines: bytes) -> Answer:
    """A chunked ``text/event-stream`` answer of ``lines``, written in wire-sized pieces."""

    async def answer(request: bytes, writer: Any) -> bool:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        body = b"".join(lines)
        for start in range(0, len(body), WIRE_CHUNK):
            part = body[start : start + WIRE_CHUNK]
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    return answer


def gateway_config(port: int, **plugin: Any) -> dict[str, Any]:
    """One model, ``m``, on the upstream at loopback ``port``."""
    return {
        "models": {
            "m": {
                "provider": "openai",
                "base_url": f"http://127.0.0.1:{port}/v1",
                "upstream_model": "up",
                "read_timeout_seconds": 2.0,
            }
        },
        "plugins": {"openai_compat": plugin},
    }


async def stream(client: Any, api: str) -> tuple[int, Any, bytes]:
    path, body = BODIES[api]
    response = await client.post(path, json={"model": "m", "stream": True, **body}, headers=ADMIN)
    return response.status_code, response.headers, await response.get_data()


def text_of(api: str, events: list[Any]) -> str:
    key = "delta" if api == "chat" else None
    out = []
    for event in events:
        for choice in event.get("choices", []) if isinstance(event, dict) else []:
            out.append(choice[key]["content"] if key else choice["text"])
    return "".join(out)


# -- the length of one event-stream line -------------------------------------------------------


@pytest.mark.parametrize("api", ["chat", "completions"])
async def test_a_stream_line_over_the_cap_ends_the_stream_with_an_error_event(make_settings, api):
    long_line = chunk_line(api, "x" * 100_000)
    lines = (chunk_line(api, "first "), long_line, chunk_line(api, "never"), b"data: [DONE]\n\n")
    async with ScriptedServer(sse_upstream(*lines)) as upstream:
        settings = make_settings(**gateway_config(upstream.port, max_sse_line_bytes=65536))
        async with running_app(settings) as (_app, client):
            status, _, raw = await stream(client, api)
    assert status == 200
    *chunks, last = sse_data(raw)
    assert text_of(api, chunks) == "first "
    error = assert_error(last, "upstream_sse_line_too_long")
    assert "65536 bytes" in error["message"] and "max_sse_line_bytes" in error["message"]
    assert "[DONE]" not in raw.decode()


async def test_a_first_stream_line_over_the_cap_is_a_502_before_the_stream(make_settings):
    lines = (chunk_line("chat", "x" * 100_000), b"data: [DONE]\n\n")
    async with ScriptedServer(sse_upstream(*lines)) as upstream:
        settings = make_settings(**gateway_config(upstream.port, max_sse_line_bytes=65536))
        async with running_app(settings) as (_app, client):
            status, headers, raw = await stream(client, "chat")
    assert status == 502
    assert_error(json.loads(raw), "upstream_sse_line_too_long")
    assert headers["x-should-retry"] == "false"


@pytest.mark.parametrize("api", ["chat", "completions"])
async def test_a_large_stream_line_under_the_cap_is_relayed_intact(make_settings, api):
    text = "".join(chr(ord("a") + i % 26) for i in range(5_000_000))  # 5 MB, under 8 MiB
    lines = (chunk_line(api, "first "), chunk_line(api, text), b"data: [DONE]\n\n")
    async with ScriptedServer(sse_upstream(*lines)) as upstream:
        async with running_app(make_settings(**gateway_config(upstream.port))) as (_app, client):
            status, _, raw = await stream(client, api)
    assert status == 200
    *chunks, done = sse_data(raw)
    assert done == "[DONE]"
    assert text_of(api, chunks) == "first " + text


@pytest.mark.parametrize("value", [0, 65535, 64 * 1024 * 1024 + 1, "8MB", 1e6, True])
async def test_max_sse_line_bytes_must_be_a_bounded_whole_number(make_settings, value):
    async with running_app(make_settings()) as (_app, client):
        patch = {"plugins": {"openai_compat": {"max_sse_line_bytes": value}}}
        answer = await client.patch("/gateway/config", json=patch, headers=ADMIN)
        assert answer.status_code == 400, await answer.get_data()
        error = (await answer.get_json())["error"]
        assert error["code"] == "config_invalid"
        assert (
            "plugins.openai_compat.max_sse_line_bytes: must be a whole number" in (error["message"])
        )
        shown = await (await client.get("/gateway/config", headers=ADMIN)).get_json()
        assert shown["sources"]["overrides_present"] is False


# -- answers a retry cannot fix: called upstream once -------------------------------------------


async def too_large(request: bytes, writer: asyncio.StreamWriter) -> bool:
    """A chunked answer that goes on past the gateway's limit for a whole answer."""
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    piece = b'{"x": "' + b"x" * (1024 * 1024)
    sent = 0
    try:
        while sent <= MAX_BODY_BYTES:
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            sent += len(piece)
    except ConnectionError:  # the gateway gave up on it: what should happen
        pass
    return False


def stalled(release: asyncio.Event) -> Answer:
    async def answer(request: bytes, writer: asyncio.StreamWriter) -> bool:
        await release.wait()  # past the gateway's read timeout
        return False

    return answer


@pytest.mark.parametrize("case", ["too_large", "stall"])
async def test_the_sdk_calls_the_upstream_once_for_an_answer_a_retry_cannot_fix(
    make_settings, case
):
    release = asyncio.Event()
    answer = too_large if case == "too_large" else stalled(release)
    async with ScriptedServer(answer) as upstream:
        config = gateway_config(upstream.port)
        config["models"]["m"]["read_timeout_seconds"] = 0.3
        app = create_app(make_settings(**config), load_entrypoints=False)
        try:
            async with served(app) as gateway:
                # The SDK's defaults: two retries, with back-off.
                async with openai.AsyncOpenAI(
                    base_url=f"{gateway.url}/v1", api_key=ADMIN_TOKEN
                ) as client:
                    with pytest.raises(openai.APIStatusError) as caught:
                        await client.chat.completions.create(model="m", messages=USER)
        finally:
            release.set()
    status, code = (
        (502, "upstream_response_too_large")
        if case == "too_large"
        else (
            504,
            "upstream_timeout",
        )
    )
    assert caught.value.status_code == status
    assert caught.value.code == code
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert len(upstream.requests) == 1


async def test_an_answer_declared_over_the_limit_is_refused_before_it_is_read(make_settings):
    release = asyncio.Event()

    async def declared(request: bytes, writer: asyncio.StreamWriter) -> bool:
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {MAX_BODY_BYTES + 1}\r\n\r\n{{"
        writer.write(head.encode())
        await writer.drain()
        await release.wait()  # the rest never comes: only the header can tell
        return False

    async with ScriptedServer(declared) as upstream:
        async with running_app(make_settings(**gateway_config(upstream.port))) as (_app, client):
            response = await client.post(
                "/v1/chat/completions", json={"model": "m", "messages": USER}, headers=ADMIN
            )
            release.set()
            err = assert_error(await response.get_json(), "upstream_response_too_large")
    assert response.status_code == 502
    assert f"over {MAX_BODY_BYTES} bytes" in err["message"]
    assert response.headers["x-should-retry"] == "false"


@pytest.mark.parametrize(
    ("status", "upstream_body", "hint"),
    [
        (429, b'{"error": {"message": "slow down", "code": "rate_limit_exceeded"}}', "true"),
        (503, b'{"error": {"message": "overloaded"}}', "true"),
        (401, b'{"error": {"message": "bad key"}}', "false"),
        (400, b'{"error": {"message": "context too long", "code": "context_length"}}', "false"),
    ],
)
async def test_upstream_errors_say_whether_a_retry_can_help(
    make_settings, status, upstream_body, hint
):
    async with ScriptedServer(fixed(upstream_body, status=status)) as upstream:
        async with running_app(make_settings(**gateway_config(upstream.port))) as (_app, client):
            response = await client.post(
                "/v1/chat/completions", json={"model": "m", "messages": USER}, headers=ADMIN
            )
    assert response.status_code >= 400
    assert response.headers["x-should-retry"] == hint


@pytest.mark.parametrize(
    ("path", "body", "headers", "status"),
    [
        ("/v1/chat/completions", {"model": "m", "messages": "hi"}, ADMIN, 400),
        ("/v1/chat/completions", {"model": "nope", "messages": USER}, ADMIN, 404),
        ("/v1/responses", {"model": "m", "input": 5}, ADMIN, 400),
        ("/v1/chat/completions", {"model": "m", "messages": USER}, {}, 401),
    ],
)
async def test_refused_requests_say_a_retry_cannot_help(make_settings, path, body, headers, status):
    async with ScriptedServer(chat_completion()) as upstream:
        async with running_app(make_settings(**gateway_config(upstream.port))) as (_app, client):
            response = await client.post(path, json=body, headers=headers)
    assert response.status_code == status
    assert response.headers["x-should-retry"] == "false"
    assert upstream.requests == []


async def test_an_upstream_that_cannot_be_reached_says_a_retry_can_help(make_settings):
    config = gateway_config(closed_port())
    config["models"]["m"]["max_retries"] = 0
    async with running_app(make_settings(**config)) as (_app, client):
        response = await client.post(
            "/v1/chat/completions", json={"model": "m", "messages": USER}, headers=ADMIN
        )
    assert response.status_code == 502
    assert_error(await response.get_json(), "upstream_unavailable")
    assert response.headers["x-should-retry"] == "true"
