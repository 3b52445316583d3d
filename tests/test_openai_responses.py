"""The Responses API through the official openai SDK against a real ``gateway serve``,
on the offline echo provider (a chat-completions-only provider: everything here is
translated, nothing needs an upstream Responses API)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import ResponseCompletedEvent

from tests.conftest import ADMIN, ADMIN_TOKEN, LiveServer, start_server
from tests.openai_helpers import sdk

RESOURCE_FIELDS = {
    "id", "object", "created_at", "completed_at", "status", "incomplete_details", "model",
    "previous_response_id", "instructions", "output", "error", "tools", "tool_choice",
    "truncation", "parallel_tool_calls", "text", "top_p", "presence_penalty",
    "frequency_penalty", "top_logprobs", "temperature", "reasoning", "usage",
    "max_output_tokens", "max_tool_calls", "store", "background", "service_tier", "metadata",
    "safety_identifier", "prompt_cache_key", "user",
}  # fmt: skip

# No ``strict``: optional on the wire, though the SDK's ``FunctionToolParam`` requires it.
TOOLS: Any = [
    {
        "type": "function",
        "name": "lookup",
        "description": "look a word up",
        "parameters": {"type": "object", "properties": {"input": {"type": "string"}}},
    }
]


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, module_store: dict[str, Any]
) -> Iterator[LiveServer]:
    # One server for the module per store: each test makes its own responses (fresh
    # ids), and a server start is most of a test's cost.
    server = start_server(tmp_path_factory.mktemp("responses"), config=module_store)
    yield server
    server.stop()


def test_a_plain_response_has_every_resource_field_and_the_text(gateway):
    response = sdk(gateway).responses.create(
        model="echo", input="hello there", instructions="be brief", metadata={"k": "v"}
    )
    assert response.status == "completed"
    assert response.output_text == "echo: hello there"
    assert response.model == "echo"
    assert response.instructions == "be brief"
    assert response.metadata == {"k": "v"}
    assert response.usage is not None and response.usage.output_tokens == 3
    raw = httpx.get(f"{gateway.url}/v1/responses/{response.id}", headers=ADMIN).json()
    assert set(raw) >= RESOURCE_FIELDS
    assert raw["error"] is None and raw["incomplete_details"] is None


def test_input_items_with_input_text_parts_are_understood(gateway):
    response = sdk(gateway).responses.create(
        model="echo",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "from parts"}]}],
    )
    assert response.output_text == "echo: from parts"


def test_function_call_round_trip_with_previous_response_id(gateway):
    client = sdk(gateway)
    first = client.responses.create(model="echo", input="weather in Oslo", tools=TOOLS)
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "lookup"
    assert json.loads(calls[0].arguments) == {"input": "weather in Oslo"}
    second = client.responses.create(
        model="echo",
        previous_response_id=first.id,
        tools=TOOLS,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"}],
    )
    assert second.previous_response_id == first.id
    assert second.output_text == "echo: lookup returned sunny"


async def test_streaming_emits_the_typed_events_in_order(gateway):
    client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=ADMIN_TOKEN, max_retries=0)
    stream = await client.responses.create(model="echo", input="one two three", stream=True)
    events = [event async for event in stream]
    types = [e.type for e in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == "echo: one two three"
    numbers = [e.sequence_number for e in events]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    completed = events[-1]
    assert isinstance(completed, ResponseCompletedEvent)
    assert completed.response.output_text == "echo: one two three"
    await client.close()


def test_the_raw_stream_names_each_event_and_ends_with_done(gateway):
    body = {"model": "echo", "input": "raw", "stream": True}
    with httpx.stream("POST", f"{gateway.url}/v1/responses", json=body, headers=ADMIN) as r:
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    pairs = list(zip(lines[0:-1:2], lines[1:-1:2], strict=True))
    for event_line, data_line in pairs:
        assert event_line.startswith("event: ")
        assert json.loads(data_line[len("data: ") :])["type"] == event_line[len("event: ") :]


def test_a_streamed_function_call_has_argument_events(gateway):
    body = {"model": "echo", "input": "call", "stream": True, "tools": TOOLS}
    with httpx.stream("POST", f"{gateway.url}/v1/responses", json=body, headers=ADMIN) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    types = [e["type"] for e in events]
    assert "response.function_call_arguments.delta" in types
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert json.loads(done["arguments"]) == {"input": "call"}
    assert events[-1]["response"]["output"][0]["type"] == "function_call"


def test_a_stored_conversation_continues_after_a_restart(live_server, tmp_path, store_url):
    state = tmp_path / "shared-state"
    first_server = live_server(config={"state_dir": str(state)})
    first = sdk(first_server).responses.create(model="echo", input="remember me")
    assert first_server.stop() == 0
    second_server = live_server(config={"state_dir": str(state)})
    again = sdk(second_server).responses.retrieve(first.id)
    assert again.output_text == "echo: remember me"
    follow = sdk(second_server).responses.create(
        model="echo", input="and now", previous_response_id=first.id
    )
    assert follow.output_text == "echo: and now"


def test_store_false_is_not_kept_and_delete_removes(gateway):
    client = sdk(gateway)
    unsaved = client.responses.create(model="echo", input="x", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unsaved.id)
    kept = client.responses.create(model="echo", input="y")
    client.responses.delete(kept.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(kept.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="echo", input="z", previous_response_id=kept.id)


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"model": "nope", "input": "x"}, "model_not_found", "model"),
        ({"model": "echo"}, "invalid_request_body", "input"),
        ({"model": "echo", "input": 5}, "invalid_request_body", "input"),
        (
            {"model": "echo", "input": "x", "reasoning": {"summary": "auto"}},
            "unsupported_parameter",
            "reasoning",
        ),
        (
            {"model": "echo", "input": "x", "tools": [{"type": "web_search"}]},
            "unsupported_parameter",
            "tools",
        ),
        (
            {"model": "echo", "input": [{"type": "image", "url": "x"}]},
            "unsupported_parameter",
            "input",
        ),
        ({"model": "echo", "input": "x", "max_output_tokens": 0}, "invalid_request_body", None),
    ],
)
def test_bad_responses_requests_are_refused_with_a_named_field(gateway, body, code, param):
    r = httpx.post(f"{gateway.url}/v1/responses", json=body, headers=ADMIN)
    assert r.status_code in (400, 404)
    error = r.json()["error"]
    assert error["code"] == code
    if param:
        assert error["param"] == param or param in error["message"]
