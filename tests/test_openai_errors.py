"""Bad input and upstream failures on /v1/chat/completions and /v1/completions.

Bad input never reaches the provider (the fake upstream records every request it gets);
upstream failures become clean errors in the gateway's envelope, with the upstream's
status kept; a stream that breaks ends with an error event, and a client that leaves
cancels the upstream request."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import ADMIN, running_app
from tests.fake_openai_upstream import KEY_ENV, LEAKED_TEXT, WRONG_KEY, models_config
from tests.openai_helpers import USER, assert_error, sdk, sse_data


@pytest.fixture
async def app_client(make_settings, fake_upstream, monkeypatch) -> AsyncIterator[Any]:
    monkeypatch.setenv(KEY_ENV, fake_upstream.api_key)
    settings = make_settings(
        models=models_config(fake_upstream),
        server={"max_body_bytes": 2048},
    )
    async with running_app(settings) as (_, client):
        yield client


# -- bad input never reaches the upstream -----------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
async def test_unknown_model_is_404_model_not_found(app_client, fake_upstream, path):
    body = {"model": "gpt-nope", "messages": USER, "prompt": "x"}
    body.pop("prompt" if "chat" in path else "messages")
    response = await app_client.post(path, json=body, headers=ADMIN)
    assert response.status_code == 404
    err = assert_error(await response.get_json(), "model_not_found", "model")
    assert "gpt-nope" in err["message"]
    missing = await app_client.get("/v1/models/gpt-nope", headers=ADMIN)
    assert missing.status_code == 404
    assert_error(await missing.get_json(), "model_not_found", "model")
    assert fake_upstream.requests == []


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/chat/completions", {"model": "gpt-test", "messages": "hi"}, "messages"),
        ("/v1/chat/completions", {"model": "gpt-test", "messages": []}, "messages"),
        ("/v1/chat/completions", {"messages": USER}, "model"),
        (
            "/v1/chat/completions",
            {"model": "gpt-test", "messages": USER, "temperature": "hot"},
            "temperature",
        ),
        (
            "/v1/chat/completions",
            {"model": "gpt-test", "messages": USER, "max_tokens": "many"},
            "max_tokens",
        ),
        (
            "/v1/chat/completions",
            {"model": "gpt-test", "messages": [{"role": "wizard", "content": "x"}]},
            "messages.0.role",
        ),
        (
            "/v1/chat/completions",
            {"model": "gpt-test", "messages": USER, "stream": "yes please"},
            "stream",
        ),
        ("/v1/completions", {"model": "gpt-test", "prompt": 42}, "prompt"),
        ("/v1/completions", {"model": "gpt-test", "prompt": "x", "max_tokens": -1}, "max_tokens"),
    ],
)
async def test_wrong_types_are_400_naming_the_field(app_client, fake_upstream, path, body, field):
    response = await app_client.post(path, json=body, headers=ADMIN)
    assert response.status_code == 400
    err = await response.get_json()
    assert err["error"]["param"].startswith(field), err
    assert_error(err, "invalid_request_body", err["error"]["param"])
    assert fake_upstream.requests == []


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
async def test_unknown_parameter_is_named_as_unsupported(app_client, fake_upstream, path):
    body = {"model": "gpt-test", "messages": USER, "prompt": "x", "frobnicate": True}
    body.pop("prompt" if "chat" in path else "messages")
    response = await app_client.post(path, json=body, headers=ADMIN)
    assert response.status_code == 400
    assert_error(await response.get_json(), "unsupported_parameter", "frobnicate")
    assert fake_upstream.requests == []


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
async def test_more_than_one_choice_is_refused(app_client, fake_upstream, path):
    body = {"model": "gpt-test", "messages": USER, "prompt": "x", "n": 2}
    body.pop("prompt" if "chat" in path else "messages")
    response = await app_client.post(path, json=body, headers=ADMIN)
    assert response.status_code == 400
    assert_error(await response.get_json(), "unsupported_parameter", "n")
    assert fake_upstream.requests == []


async def test_body_that_is_not_json_is_400(app_client, fake_upstream):
    response = await app_client.post(
        "/v1/chat/completions",
        data=b"{not json",
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert_error(await response.get_json(), "invalid_json")
    listed = await app_client.post("/v1/chat/completions", json=[1, 2], headers=ADMIN)
    assert listed.status_code == 400
    assert_error(await listed.get_json(), "invalid_json")
    assert fake_upstream.requests == []


async def test_oversized_body_is_413_before_any_provider_call(app_client, fake_upstream):
    big = [{"role": "user", "content": "x" * 5000}]
    response = await app_client.post(
        "/v1/chat/completions", json={"model": "gpt-test", "messages": big}, headers=ADMIN
    )
    assert response.status_code == 413
    assert_error(await response.get_json(), "payload_too_large")
    assert fake_upstream.requests == []


async def test_v1_routes_need_the_bearer_token(app_client, fake_upstream):
    for method, path in [
        ("GET", "/v1/models"),
        ("GET", "/v1/models/gpt-test"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/completions"),
    ]:
        response = await app_client.open(
            path, method=method, json={"model": "gpt-test", "messages": USER, "prompt": "x"}
        )
        assert response.status_code == 401, path
        assert_error(await response.get_json(), "unauthorized")
    assert fake_upstream.requests == []


# -- upstream failures ------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_500_is_502_with_upstream_status_and_not_retried(
    app_client, fake_upstream, stream
):
    response = await app_client.post(
        "/v1/chat/completions",
        json={"model": "gpt-500", "messages": USER, "stream": stream},
        headers=ADMIN,
    )
    assert response.status_code == 502
    err = assert_error(await response.get_json(), "upstream_error")
    assert err["upstream_status"] == 500
    assert err["type"] == "server_error"
    assert "gpt-500" in err["message"] and "500" in err["message"]
    assert "the upstream fell over" not in err["message"]  # its body is logged, not echoed
    assert len(fake_upstream.requests) == 1  # max_retries = 2, yet a 500 is never retried


@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_refusing_the_gateways_key_is_502_without_echoing_it(
    app_client, fake_upstream, stream
):
    response = await app_client.post(
        "/v1/chat/completions",
        json={"model": "gpt-wrong-key", "messages": USER, "stream": stream},
        headers=ADMIN,
    )
    assert response.status_code == 502
    err = assert_error(await response.get_json(), "upstream_error")
    assert err["upstream_status"] == 401
    assert WRONG_KEY not in await response.get_data(as_text=True)
    [seen] = fake_upstream.requests
    assert seen.headers["Authorization"] == f"Bearer {WRONG_KEY}"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("model", "status", "code", "upstream_status"),
    [
        # The upstream's code is free text: the envelope's type stands in for it.
        ("gpt-leaky400", 400, "invalid_request_error", 400),
        ("gpt-leaky500", 502, "upstream_error", 500),
    ],
)
async def test_an_upstream_error_body_is_logged_and_never_echoed(
    app_client, fake_upstream, caplog, stream, model, status, code, upstream_status
):
    caplog.set_level(logging.WARNING, "gateway.openai_compat")
    response = await app_client.post(
        "/v1/chat/completions",
        json={"model": model, "messages": USER, "stream": stream},
        headers=ADMIN,
    )
    assert response.status_code == status
    text = await response.get_data(as_text=True)
    assert LEAKED_TEXT not in text and fake_upstream.api_key not in text
    err = assert_error(json.loads(text), code)
    assert err["upstream_status"] == upstream_status
    assert model in err["message"] and f"upstream answered {upstream_status}" in err["message"]
    # The operator still sees what the upstream said, without the gateway's own key.
    assert LEAKED_TEXT in caplog.text
    assert fake_upstream.api_key not in caplog.text


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
async def test_what_broke_an_upstream_stream_is_logged_not_echoed(
    app_client, fake_upstream, caplog, path
):
    caplog.set_level(logging.WARNING, "gateway.openai_compat")
    body = {"model": "gpt-errorchunk", "messages": USER, "prompt": "x", "stream": True}
    body.pop("prompt" if "chat" in path else "messages")
    response = await app_client.post(path, json=body, headers=ADMIN)
    assert response.status_code == 200
    raw = await response.get_data()
    assert LEAKED_TEXT.encode() not in raw
    *chunks, last = sse_data(raw)
    assert len(chunks) >= 1 and "[DONE]" not in chunks
    assert last["error"]["code"] == "upstream_error"
    assert LEAKED_TEXT in caplog.text


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
async def test_broken_http_framing_from_the_upstream_is_logged_not_echoed(
    app_client, fake_upstream, caplog, path
):
    # The upstream's head, a chunk and then text where a chunk size belongs come in one
    # read: aiohttp's parser (llhttp) refuses the whole read, so nothing reached the
    # client and the call fails before its stream starts, as an unreachable upstream.
    caplog.set_level(logging.WARNING, "gateway.openai_compat")
    body = {"model": "gpt-badchunk", "messages": USER, "prompt": "x", "stream": True}
    body.pop("prompt" if "chat" in path else "messages")
    response = await app_client.post(path, json=body, headers=ADMIN)
    raw = await response.get_data()
    assert LEAKED_TEXT.encode() not in raw
    if response.status_code == 200:  # the framing broke in a later read
        *chunks, last = sse_data(raw)
        assert len(chunks) >= 1 and "[DONE]" not in chunks
        assert last["error"]["code"] == "upstream_stream_broken"
    else:
        assert response.status_code == 502
        assert_error(await response.get_json(), "upstream_unavailable")
    assert LEAKED_TEXT in caplog.text


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
async def test_upstream_429_passes_through(app_client, fake_upstream, path):
    body = {"model": "gpt-429", "messages": USER, "prompt": "x"}
    body.pop("prompt" if "chat" in path else "messages")
    response = await app_client.post(path, json=body, headers=ADMIN)
    assert response.status_code == 429
    err = assert_error(await response.get_json(), "rate_limit_exceeded")
    assert err["type"] == "rate_limit_error" and err["upstream_status"] == 429
    assert response.headers["Retry-After"] == "7"  # the upstream's, passed on
    assert len(fake_upstream.requests) == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_refused_connection_is_502_upstream_unavailable(app_client, fake_upstream, stream):
    response = await app_client.post(
        "/v1/chat/completions",
        json={"model": "gpt-refused", "messages": USER, "stream": stream},
        headers=ADMIN,
    )
    assert response.status_code == 502
    err = assert_error(await response.get_json(), "upstream_unavailable")
    assert "gpt-refused" in err["message"] and "upstream_status" not in err
    assert fake_upstream.requests == []


@pytest.mark.parametrize("stream", [False, True])
async def test_read_timeout_is_504_upstream_timeout(app_client, fake_upstream, stream):
    response = await app_client.post(
        "/v1/chat/completions",
        json={"model": "gpt-sleepy", "messages": USER, "stream": stream},
        headers=ADMIN,
    )
    assert response.status_code == 504
    err = assert_error(await response.get_json(), "upstream_timeout")
    assert err["type"] == "server_error"
    assert len(fake_upstream.requests) == 1  # a timeout is not retried either


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
async def test_upstream_dying_mid_stream_ends_with_an_error_event(app_client, fake_upstream, path):
    body = {"model": "gpt-dies", "messages": USER, "prompt": "x", "stream": True}
    body.pop("prompt" if "chat" in path else "messages")
    response = await app_client.post(path, json=body, headers=ADMIN)
    assert response.status_code == 200
    events = sse_data(await response.get_data())
    assert "[DONE]" not in events
    *chunks, last = events
    assert len(chunks) == 2 and all(c["model"] == "gpt-dies" for c in chunks)
    assert last["error"]["code"] in {"upstream_stream_broken", "upstream_stream_incomplete"}
    assert last["error"]["type"] == "server_error"


async def test_metrics_count_requests_first_tokens_and_tokens_by_model_and_provider(
    app_client, fake_upstream
):
    await app_client.post(
        "/v1/chat/completions", json={"model": "gpt-test", "messages": USER}, headers=ADMIN
    )
    streamed = await app_client.post(
        "/v1/chat/completions",
        json={
            "model": "gpt-test",
            "messages": USER,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        headers=ADMIN,
    )
    await streamed.get_data()
    quiet = await app_client.post(
        "/v1/completions",
        json={"model": "gpt-test", "prompt": "x", "stream": True},
        headers=ADMIN,
    )
    assert b'"usage"' not in await quiet.get_data()  # counted, yet not sent unasked
    await app_client.post(
        "/v1/chat/completions", json={"model": "gpt-500", "messages": USER}, headers=ADMIN
    )
    await app_client.post(
        "/v1/chat/completions", json={"model": "echo", "messages": USER}, headers=ADMIN
    )
    text = (await (await app_client.get("/metrics", headers=ADMIN)).get_data()).decode()
    ok = 'gateway_llm_requests_total{api="chat",model="gpt-test",outcome="ok",provider="openai"}'
    assert f"{ok} 2.0" in text
    error = (
        'gateway_llm_requests_total{api="chat",model="gpt-500",outcome="error",provider="openai"}'
    )
    assert f"{error} 1.0" in text
    assert 'api="chat",model="echo",outcome="ok",provider="echo"} 1.0' in text
    assert 'api="completions",model="gpt-test",outcome="ok",provider="openai"} 1.0' in text
    assert (
        'gateway_llm_time_to_first_token_seconds_count{model="gpt-test",provider="openai"} 2.0'
        in text
    )
    tokens = 'gateway_llm_tokens_total{direction="%s",model="gpt-test",provider="openai"}'
    assert f"{tokens % 'in'} 21.0" in text and f"{tokens % 'out'} 12.0" in text
    assert 'gateway_llm_request_duration_seconds_count{model="gpt-test",provider="openai"}' in text


# -- against a real server: the SDK mid-stream, and a client that goes away -------------------


@pytest.mark.parametrize(
    ("model", "before", "codes"),
    [
        ("gpt-dies", "partial answer", {"upstream_stream_broken", "upstream_stream_incomplete"}),
        ("gpt-stall", "first", {"upstream_timeout"}),  # silent past its read timeout
    ],
)
def test_sdk_raises_mid_iteration_when_the_upstream_fails(
    openai_gateway, upstream, model, before, codes
):
    client = sdk(openai_gateway)
    stream = client.chat.completions.create(model=model, messages=USER, stream=True)
    received: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == before
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["code"] in codes


def test_sdk_errors_carry_status_and_code(openai_gateway, upstream):
    client = sdk(openai_gateway)
    with pytest.raises(openai.NotFoundError) as not_found:
        client.chat.completions.create(model="gpt-nope", messages=USER)
    assert not_found.value.code == "model_not_found"
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-429", messages=USER)
    with pytest.raises(openai.InternalServerError) as bad_gateway:
        client.completions.create(model="gpt-500", prompt="x")
    assert bad_gateway.value.status_code == 502
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="gpt-test", messages=USER, n=2)
    assert bad.value.code == "unsupported_parameter"
    assert [r.body["model"] for r in upstream.requests] == ["ratelimit", "error500"]


def test_client_disconnect_cancels_the_upstream_request(openai_gateway, upstream):
    body = {"model": "gpt-endless", "messages": USER, "stream": True}
    with (
        httpx.Client(base_url=openai_gateway.url, headers=ADMIN, timeout=10) as http,
        http.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert json.loads(first[6:])["model"] == "gpt-endless"
        assert not upstream.disconnected.is_set()
    assert upstream.disconnected.wait(10), "the upstream request kept running"
    # The gateway is still healthy and serves the next request.
    again = httpx.post(
        f"{openai_gateway.url}/v1/chat/completions",
        json={"model": "gpt-test", "messages": USER},
        headers=ADMIN,
    )
    assert again.status_code == 200
