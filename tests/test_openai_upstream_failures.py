"""Upstream failures on every OpenAI route, /v1/responses included, through the official
openai SDK (raw httpx where the SSE bytes matter) against a real ``gateway serve`` in
front of the fake upstream on loopback (``tests/fake_openai_upstream.py``).

An upstream that fails before its first chunk is an HTTP error with the upstream's status
kept; one that breaks, stalls past the read timeout or sends garbage mid-stream yields an
error event (``response.failed`` on /v1/responses) and the stream ends, without a hang; a
client that leaves cancels the upstream request; a Responses stream really streams."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import ADMIN
from tests.openai_helpers import USER, async_sdk, sdk, sse_data

# The fake upstream's ``stall`` behaviour holds its second chunk for this long; the gateway
# model ``gpt-stall`` gives up after 0.3 s.
STALL_SECONDS = 3.0

CALLS: dict[str, Callable[..., Any]] = {
    "chat": lambda c, model, **kw: c.chat.completions.create(model=model, messages=USER, **kw),
    "completions": lambda c, model, **kw: c.completions.create(model=model, prompt="x", **kw),
    "responses": lambda c, model, **kw: c.responses.create(model=model, input="hi", **kw),
}
BODIES: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", {"messages": USER}),
    "completions": ("/v1/completions", {"prompt": "x"}),
    "responses": ("/v1/responses", {"input": "hi"}),
}


def stream_raw(server: Any, api: str, model: str) -> tuple[list[Any], float]:
    """POST a streamed request on ``api``; the ``data:`` payloads of the whole body (read
    to its end, which must come within a few seconds) and the time it took."""
    path, body = BODIES[api]
    started = time.monotonic()
    with httpx.stream(
        "POST",
        f"{server.url}{path}",
        json={**body, "model": model, "stream": True},
        headers=ADMIN,
        timeout=8,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read()
    return sse_data(raw), time.monotonic() - started


def failed_response(events: list[Any]) -> dict[str, Any]:
    """The ``response.failed`` event a broken Responses stream ends with (then ``[DONE]``
    or the end of the body, nothing else)."""
    if events and events[-1] == "[DONE]":
        events = events[:-1]
    assert "[DONE]" not in events
    last: dict[str, Any] = events[-1]
    assert last["type"] == "response.failed", [e["type"] for e in events]
    assert last["response"]["status"] == "failed"
    assert isinstance(last["response"]["error"], dict)
    return last


def text_of(events: list[Any]) -> str:
    return "".join(
        e["delta"] for e in events if isinstance(e, dict) and e["type"].endswith("text.delta")
    )


# -- /v1/responses before the first chunk: an HTTP error, the upstream's status kept -----------


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("model", "status", "code", "upstream_status"),
    [
        ("gpt-500", 502, "upstream_error", 500),
        ("gpt-429", 429, "rate_limit_exceeded", 429),
        ("gpt-refused", 502, "upstream_unavailable", None),
        ("gpt-sleepy", 504, "upstream_timeout", None),
    ],
)
async def test_responses_upstream_failure_is_a_clean_error(
    openai_gateway, upstream, model, status, code, upstream_status, stream
):
    async with async_sdk(openai_gateway) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.responses.create(model=model, input="hi", stream=stream)
    err = caught.value
    assert err.status_code == status
    assert err.code == code
    assert isinstance(err.body, dict)
    assert err.body.get("upstream_status") == upstream_status
    assert model in err.body["message"]  # (its ``type`` follows the OpenResponses vocabulary)
    if status == 429:
        assert err.response.headers["Retry-After"] == "7"  # the upstream's, passed on
    # Never retried: a refused connection reached nothing; the rest reached it once.
    assert len(upstream.requests) == (0 if model == "gpt-refused" else 1)


def test_responses_stream_really_streams(openai_gateway, upstream):
    """The client sees the first delta while the upstream still holds its last one."""
    deltas: list[str] = []
    with sdk(openai_gateway).responses.create(model="gpt-slow", input="hi", stream=True) as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                if not deltas:
                    assert upstream.last_chunk_sent is False, "the gateway buffered the stream"
                    upstream.release.set()
                deltas.append(event.delta)
    assert "".join(deltas) == "first last"
    assert event.type == "response.completed"
    assert event.response.output_text == "first last"
    assert upstream.last_chunk_sent is True


# -- mid-stream failures: an error event, then the stream ends ---------------------------------


def test_responses_upstream_dying_mid_stream_ends_with_response_failed(openai_gateway, upstream):
    events, _ = stream_raw(openai_gateway, "responses", "gpt-dies")
    failed = failed_response(events)
    error = failed["response"]["error"]
    assert error["code"] in {"upstream_stream_broken", "upstream_stream_incomplete"}
    assert text_of(events) == "partial answer"


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_stall_past_the_read_timeout_mid_stream_is_an_error_event(openai_gateway, upstream, api):
    events, elapsed = stream_raw(openai_gateway, api, "gpt-stall")
    assert elapsed < STALL_SECONDS, "the gateway waited for the stalled upstream"
    *chunks, last = events
    assert "[DONE]" not in events
    assert len(chunks) == 1 and chunks[0]["model"] == "gpt-stall"
    assert last["error"]["code"] == "upstream_timeout"
    assert last["error"]["type"] == "server_error"


def test_responses_stall_past_the_read_timeout_ends_with_response_failed(openai_gateway, upstream):
    events, elapsed = stream_raw(openai_gateway, "responses", "gpt-stall")
    assert elapsed < STALL_SECONDS, "the gateway waited for the stalled upstream"
    failed = failed_response(events)
    assert failed["response"]["error"]["code"] == "upstream_timeout"
    assert text_of(events) == "first"


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_malformed_chunk_mid_stream_is_an_error_event(openai_gateway, upstream, api):
    events, _ = stream_raw(openai_gateway, api, "gpt-garbled")
    *chunks, last = events
    assert "[DONE]" not in events
    assert len(chunks) == 1 and chunks[0]["model"] == "gpt-garbled"
    assert last["error"]["code"] == "upstream_invalid_response"
    assert last["error"]["type"] == "server_error"


def test_responses_malformed_chunk_ends_with_response_failed(openai_gateway, upstream):
    events, _ = stream_raw(openai_gateway, "responses", "gpt-garbled")
    failed = failed_response(events)
    assert failed["response"]["error"]["code"] == "upstream_invalid_response"
    assert text_of(events) == "fine"


# -- an upstream answering something that is not JSON ------------------------------------------


@pytest.mark.parametrize("api", ["chat", "completions", "responses"])
def test_upstream_answering_non_json_is_502_upstream_invalid_response(
    openai_gateway, upstream, api
):
    with pytest.raises(openai.InternalServerError) as caught:
        CALLS[api](sdk(openai_gateway), "gpt-notjson")
    err = caught.value
    assert err.status_code == 502
    assert err.code == "upstream_invalid_response"
    assert isinstance(err.body, dict)
    assert err.body["upstream_status"] == 200
    if api != "responses":  # which has the OpenResponses error types
        assert err.body["type"] == "server_error"
    assert "gpt-notjson" in err.body["message"] and "<html>" not in err.body["message"]
    assert len(upstream.requests) == 1


# -- a client that goes away cancels the upstream request --------------------------------------


@pytest.mark.parametrize("api", ["completions", "responses"])
def test_client_disconnect_cancels_the_upstream_request(openai_gateway, upstream, api):
    client = sdk(openai_gateway)
    stream = CALLS[api](client, "gpt-endless", stream=True)
    seen = 0
    for event in stream:
        text = event.choices[0].text if api == "completions" else getattr(event, "delta", "")
        seen += text == "more "
        if seen >= 2:
            break
    assert not upstream.disconnected.is_set()
    stream.close()
    client.close()
    assert upstream.disconnected.wait(10), "the upstream request kept running"
    # The gateway is still healthy and serves the next request.
    again = CALLS[api](sdk(openai_gateway), "gpt-test")
    assert again.id
