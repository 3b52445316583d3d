"""/v1/responses where the OpenResponses specification speaks: a stream that fails
(``error`` event, the cut-off item ``incomplete``, ``response.failed``), a response cut
off at the token limit (``incomplete``), the SSE headers, the specification's error
types on every Responses route, and the latency metric of failed calls.

Through HTTP against a real loopback upstream (``tests/fake_openai_upstream.py``):
``gpt-dies`` breaks its stream after two chunks, ``gpt-length`` ends with
``finish_reason: "length"``."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.conftest import ADMIN, running_app
from tests.fake_openai_upstream import NORMAL_TEXT
from tests.openai_helpers import SAFETY_OFF, USER, sdk
from tests.openresponses_schema import assert_event
from tests.test_safety_scanners import SafetyPlugin

BROKEN = {"upstream_stream_broken", "upstream_stream_incomplete"}


def sse_events(raw: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The events of a Responses stream (each ``event:`` line checked against the
    ``type`` of its ``data:``, each event against the OpenResponses schema), and the
    trailing lines that are not events."""
    lines = [line for line in raw.splitlines() if line and not line.startswith(":")]
    events: list[dict[str, Any]] = []
    while len(lines) >= 2 and lines[0].startswith("event: "):
        name, data = lines.pop(0)[len("event: ") :], lines.pop(0)
        assert data.startswith("data: ")
        event = json.loads(data[len("data: ") :])
        assert event["type"] == name
        assert_event(event)  # valid against the OpenResponses schema of its type
        events.append(event)
    numbers = [e["sequence_number"] for e in events]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers
    return events, lines


async def stream(client: Any, body: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    response = await client.post("/v1/responses", json={**body, "stream": True}, headers=ADMIN)
    assert response.status_code == 200
    return sse_events(await response.get_data(as_text=True))


def assert_failed_after(events: list[dict[str, Any]], code: str, error_type: str) -> None:
    """The tail the specification asks of a stream that fails while a message is open."""
    assert [e["type"] for e in events[-5:]] == [
        "error",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.failed",
    ]
    error = events[-5]["error"]
    assert set(error) == {"type", "code", "message", "param"}
    assert error["type"] == error_type and error["code"] == code and error["param"] is None
    item = events[-2]["item"]
    assert item["type"] == "message" and item["status"] == "incomplete"
    failed = events[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": code, "message": error["message"]}
    assert failed["output"] == [item]


async def test_a_stream_that_dies_sends_error_then_the_incomplete_item_then_failed(
    app_client, fake_upstream
):
    events, rest = await stream(app_client, {"model": "gpt-dies", "input": "hi"})
    assert rest == ["data: [DONE]"]
    assert [e["type"] for e in events[:6]] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
    ]
    assert len(events) == 11
    code = events[-5]["error"]["code"]
    assert code in BROKEN
    assert_failed_after(events, code, "model_error")
    assert events[-2]["item"]["content"][0]["text"] == "partial answer"
    assert events[-4]["text"] == "partial answer"


async def test_a_safety_block_mid_stream_fails_the_response_the_same_way(make_settings):
    async with running_app(
        # The word scanner alone (its 64-character hold-back), the safety plugin off.
        make_settings(models={"m": {"provider": "counting"}}, plugins=SAFETY_OFF),
        extra_plugins=[("safety_test", SafetyPlugin())],
    ) as (_, client):
        # Long enough that the safe words go out before the blocked ones.
        text = "safe " + "words " * 20 + "then danger"
        events, rest = await stream(client, {"model": "m", "input": text})
    assert rest == ["data: [DONE]"]
    assert_failed_after(events, "content_blocked", "invalid_request")
    assert "danger" not in events[-2]["item"]["content"][0]["text"]


def test_the_sdk_raises_at_the_error_event_of_a_dying_stream(openai_gateway, upstream):
    stream = sdk(openai_gateway).responses.create(model="gpt-dies", input="hi", stream=True)
    seen: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        for event in stream:
            seen.append(event.type)
    assert seen[:2] == ["response.created", "response.in_progress"]
    assert "response.completed" not in seen
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] in BROKEN
    assert caught.value.body["type"] == "model_error"


def test_a_response_cut_at_the_token_limit_is_incomplete(openai_gateway, upstream):
    response = sdk(openai_gateway).responses.create(model="gpt-length", input="hi")
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    message = response.output[-1]
    assert message.type == "message" and message.status == "incomplete"
    assert response.output_text == NORMAL_TEXT


async def test_a_streamed_response_cut_at_the_token_limit_is_incomplete(app_client, fake_upstream):
    events, rest = await stream(app_client, {"model": "gpt-length", "input": "hi"})
    assert rest == ["data: [DONE]"]
    assert [e["type"] for e in events[-2:]] == ["response.output_item.done", "response.incomplete"]
    assert events[-2]["item"]["status"] == "incomplete"
    assert events[-2]["item"]["content"][0]["text"] == NORMAL_TEXT
    final = events[-1]["response"]
    assert final["status"] == "incomplete"
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["output"] == [events[-2]["item"]]
    stored = await app_client.get(f"/v1/responses/{final['id']}", headers=ADMIN)
    assert (await stored.get_json())["output"][-1]["status"] == "incomplete"


async def test_echo_cut_at_max_tokens_reports_length_streamed_and_not(app_client):
    """The offline echo provider says ``length`` when it cut its reply, ``stop`` when not;
    a Responses call on it with a small ``max_output_tokens`` is ``incomplete``."""
    chat = {"model": "echo", "messages": [{"role": "user", "content": "one two three"}]}
    completion = {"model": "echo", "prompt": "one two three"}
    for path, body in (("/v1/chat/completions", chat), ("/v1/completions", completion)):
        for limit, finish in ((2, "length"), (50, "stop")):
            answer = await app_client.post(path, json={**body, "max_tokens": limit}, headers=ADMIN)
            assert (await answer.get_json())["choices"][0]["finish_reason"] == finish
            streamed = await app_client.post(
                path, json={**body, "max_tokens": limit, "stream": True}, headers=ADMIN
            )
            raw = await streamed.get_data(as_text=True)
            chunks = [json.loads(line[6:]) for line in raw.splitlines() if line[6:7] == "{"]
            reasons = [c["finish_reason"] for chunk in chunks for c in chunk["choices"]]
            assert [r for r in reasons if r] == [finish], (path, limit)
    plain = await app_client.post(
        "/v1/responses",
        json={"model": "echo", "input": "one two three", "max_output_tokens": 2},
        headers=ADMIN,
    )
    resource = await plain.get_json()
    assert resource["status"] == "incomplete"
    assert resource["incomplete_details"] == {"reason": "max_output_tokens"}
    assert resource["output"][-1]["content"][0]["text"] == "echo: one"
    events, _ = await stream(
        app_client, {"model": "echo", "input": "one two three", "max_output_tokens": 2}
    )
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


async def test_a_completed_stream_still_ends_its_items_completed(app_client, fake_upstream):
    events, _ = await stream(app_client, {"model": "gpt-test", "input": "hi"})
    assert events[-1]["type"] == "response.completed"
    assert events[-2]["item"]["status"] == "completed"
    assert events[-1]["response"]["incomplete_details"] is None


@pytest.mark.parametrize("path", ["/v1/responses", "/v1/chat/completions"])
async def test_event_streams_are_not_buffered_by_proxies(app_client, fake_upstream, path):
    body = {"model": "gpt-test", "input": "hi", "messages": USER, "stream": True}
    body.pop("messages" if path == "/v1/responses" else "input")
    response = await app_client.post(path, json=body, headers=ADMIN)
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["X-Accel-Buffering"] == "no"
    assert response.headers["Cache-Control"] == "no-cache"
    await response.get_data()


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error_type"),
    [
        ("POST", "/v1/responses", {"model": "gpt-test", "input": 5}, 400, "invalid_request"),
        ("POST", "/v1/responses", {"model": "gpt-nope", "input": "x"}, 404, "not_found"),
        ("POST", "/v1/responses", {"model": "gpt-429", "input": "x"}, 429, "too_many_requests"),
        ("POST", "/v1/responses", {"model": "gpt-500", "input": "x"}, 502, "model_error"),
        (
            "POST",
            "/v1/responses",
            {"model": "gpt-500", "input": "x", "stream": True},
            502,
            "model_error",
        ),
        ("POST", "/v1/responses", {"model": "gpt-sleepy", "input": "x"}, 504, "model_error"),
        (
            "POST",
            "/v1/responses",
            {"model": "gpt-test", "input": "x", "previous_response_id": "resp_gone"},
            404,
            "not_found",
        ),
        ("GET", "/v1/responses/resp_gone", None, 404, "not_found"),
        ("DELETE", "/v1/responses/resp_gone", None, 404, "not_found"),
    ],
)
async def test_responses_routes_answer_with_the_specification_error_types(
    app_client, fake_upstream, method, path, body, status, error_type
):
    response = await app_client.open(path, method=method, json=body, headers=ADMIN)
    assert response.status_code == status
    error = (await response.get_json())["error"]
    assert error["type"] == error_type, error
    assert error["code"] and error["message"]


async def test_responses_auth_errors_keep_the_gateways_types(app_client, fake_upstream):
    # The specification has no type for them; every route answers auth alike.
    response = await app_client.get("/v1/responses/resp_gone")
    assert response.status_code == 401
    error = (await response.get_json())["error"]
    assert error["type"] == "authentication_error" and error["code"] == "unauthorized"


async def test_chat_completions_keep_the_openai_error_types(app_client, fake_upstream):
    cases = [
        ({"model": "gpt-nope", "messages": USER}, "invalid_request_error"),  # as OpenAI's
        ({"model": "gpt-test", "messages": "hi"}, "invalid_request_error"),
        ({"model": "gpt-429", "messages": USER}, "rate_limit_error"),
        ({"model": "gpt-500", "messages": USER}, "server_error"),
    ]
    for body, error_type in cases:
        response = await app_client.post("/v1/chat/completions", json=body, headers=ADMIN)
        assert (await response.get_json())["error"]["type"] == error_type, body
    missing = await app_client.get("/v1/models/gpt-nope", headers=ADMIN)
    assert (await missing.get_json())["error"]["type"] == "invalid_request_error"
    nowhere = await app_client.get("/v1/nowhere", headers=ADMIN)
    assert (await nowhere.get_json())["error"]["type"] == "not_found_error"


async def test_failed_calls_that_are_not_streamed_are_timed(app_client, fake_upstream):
    for path, body in [
        ("/v1/chat/completions", {"model": "gpt-500", "messages": USER}),
        ("/v1/completions", {"model": "gpt-500", "prompt": "x"}),
        ("/v1/responses", {"model": "gpt-500", "input": "x"}),
        ("/v1/responses", {"model": "gpt-500", "input": "x", "stream": True}),
    ]:
        response = await app_client.post(path, json=body, headers=ADMIN)
        assert response.status_code == 502
    text = (await (await app_client.get("/metrics", headers=ADMIN)).get_data()).decode()
    count = 'gateway_llm_request_duration_seconds_count{model="gpt-500",provider="openai"}'
    assert f"{count} 4.0" in text
    errors = 'gateway_llm_requests_total{api="responses",model="gpt-500",outcome="error",'
    assert f'{errors}provider="openai"}} 2.0' in text
