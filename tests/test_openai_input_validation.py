"""Malformed tools, tool calls, tool results and parameters on /v1/chat/completions and
/v1/responses are 400 naming the field, and never reach the provider (the fake upstream
records every request it gets); well-formed ones still pass through as given."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ADMIN
from tests.openai_helpers import USER, assert_error, refused

CHAT_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "the weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
RESPONSES_TOOLS = [{"type": "function", **CHAT_TOOLS[0]["function"]}]
CALL = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}


# -- chat completions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"tools": [{"foo": 1}]}, "invalid_request_body", "tools.0.type"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]},
            "invalid_request_body",
            "tools.0.function.parameters",
        ),
        ({"tools": [{"type": "function", "function": {}}]}, "invalid_request_body", None),
        ({"tools": [{"type": "web_search"}]}, "unsupported_parameter", "tools.0"),
        ({"tool_choice": "sometimes", "tools": CHAT_TOOLS}, "invalid_request_body", "tool_choice"),
        ({"tool_choice": "required"}, "invalid_request_body", "tool_choice"),
        (
            {
                "tool_choice": {"type": "function", "function": {"name": "nope"}},
                "tools": CHAT_TOOLS,
            },
            "invalid_request_body",
            "tool_choice",
        ),
        (
            {"tool_choice": {"type": "function", "name": "get_weather"}, "tools": CHAT_TOOLS},
            "invalid_request_body",
            "tool_choice",
        ),
        ({"temperature": True}, "invalid_request_body", "temperature"),
        ({"top_p": False}, "invalid_request_body", "top_p"),
        ({"max_tokens": 5.0}, "invalid_request_body", "max_tokens"),
        ({"seed": True}, "invalid_request_body", "seed"),
        ({"stream": 1}, "invalid_request_body", "stream"),
        ({"parallel_tool_calls": "yes"}, "invalid_request_body", "parallel_tool_calls"),
        ({"parallel_tool_calls": True}, "invalid_request_body", "parallel_tool_calls"),
        (
            {"parallel_tool_calls": False, "tools": []},
            "invalid_request_body",
            "parallel_tool_calls",
        ),
        ({"response_format": "json"}, "invalid_request_body", "response_format"),
        ({"response_format": {"type": "xml"}}, "invalid_request_body", "response_format.type"),
        ({"response_format": {}}, "invalid_request_body", "response_format.type"),
        (
            {"response_format": {"type": "json_schema"}},
            "invalid_request_body",
            "response_format.json_schema",
        ),
        (
            {"response_format": {"type": "json_object", "json_schema": {"name": "x"}}},
            "invalid_request_body",
            "response_format.json_schema",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
            "invalid_request_body",
            "response_format.json_schema.name",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "a b"}}},
            "invalid_request_body",
            "response_format.json_schema.name",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x" * 65}}},
            "invalid_request_body",
            "response_format.json_schema.name",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": 1}}},
            "invalid_request_body",
            "response_format.json_schema.schema",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": 1}}},
            "invalid_request_body",
            "response_format.json_schema.strict",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "y": 1}}},
            "unsupported_parameter",
            "response_format.json_schema.y",
        ),
        (
            {"response_format": {"type": "text", "extra": 1}},
            "unsupported_parameter",
            "response_format.extra",
        ),
        (
            {"stream_options": {"include_usage": True, "extra": 1}},
            "unsupported_parameter",
            "stream_options.extra",
        ),
    ],
)
async def test_chat_bad_parameters_are_400_naming_the_field(
    app_client, fake_upstream, body, code, param
):
    err = await refused(
        app_client, fake_upstream, "/v1/chat/completions", {"messages": USER, **body}
    )
    assert_error(err, code, param)
    if param is None:
        assert err["error"]["param"].startswith("tools.0.function")


@pytest.mark.parametrize(
    ("messages", "code", "param"),
    [
        ([{"role": "tool", "content": "x"}], "invalid_request_body", "messages.0.tool_call_id"),
        (
            [*USER, {"role": "tool", "tool_call_id": "c9", "content": "x"}],
            "invalid_request_body",
            "messages.1.tool_call_id",
        ),
        (
            [{"role": "user", "content": "x", "tool_call_id": "c1"}],
            "invalid_request_body",
            "messages.0.tool_call_id",
        ),
        (
            [{"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": "f"}}]}],
            "invalid_request_body",
            "messages.0.tool_calls.0.type",
        ),
        (
            [{"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "f"}}]}],
            "invalid_request_body",
            "messages.0.tool_calls.0.function.arguments",
        ),
        (
            [
                {
                    "role": "assistant",
                    "tool_calls": [{**CALL, "function": {"name": "f", "arguments": {}}}],
                }
            ],
            "invalid_request_body",
            "messages.0.tool_calls.0.function.arguments",
        ),
        (
            [{"role": "user", "content": "x", "tool_calls": [CALL]}],
            "invalid_request_body",
            "messages.0.tool_calls",
        ),
        ([{"role": "user"}], "invalid_request_body", "messages.0.content"),
        (
            [{"role": "user", "content": "hi", "bogus_field": 1}],
            "unsupported_parameter",
            "messages.0.bogus_field",
        ),
        (
            [{"role": "user", "content": [{"text": "no type"}]}],
            "invalid_request_body",
            "messages.0.content.0.type",
        ),
        ([{"role": "user", "content": 5}], "invalid_request_body", "messages.0.content"),
    ],
)
async def test_chat_bad_messages_are_400_naming_the_field(
    app_client, fake_upstream, messages, code, param
):
    err = await refused(app_client, fake_upstream, "/v1/chat/completions", {"messages": messages})
    assert_error(err, code, param)


async def test_chat_well_formed_tool_round_trip_passes_through_as_given(app_client, fake_upstream):
    messages = [
        {"role": "system", "content": "be brief", "name": "ops"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "weather here?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        },
        # an assistant turn as the SDK gives it back (model_dump() without exclude_none)
        {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "annotations": [],
            "audio": None,
            "function_call": None,
            "tool_calls": [CALL],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    body = {
        "model": "gpt-test",
        "messages": messages,
        "tools": CHAT_TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "temperature": 1,
    }
    response = await app_client.post("/v1/chat/completions", json=body, headers=ADMIN)
    assert response.status_code == 200, await response.get_json()
    assert (await response.get_json())["choices"][0]["message"]["content"] == "the tool said sunny"
    [seen] = fake_upstream.bodies()
    assert seen["tools"] == CHAT_TOOLS and seen["tool_choice"] == body["tool_choice"]
    assert seen["parallel_tool_calls"] is False and seen["temperature"] == 1
    assert seen["messages"][:2] == messages[:2]
    assert seen["messages"][2] == {"role": "assistant", "tool_calls": [CALL]}
    assert seen["messages"][3] == messages[3]


# -- responses --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        (
            {"input": [{"type": "function_call"}, {"role": "user", "content": "x"}]},
            "invalid_request_body",
            "input.0.call_id",
        ),
        (
            {"input": [{"type": "function_call", "call_id": "c1", "arguments": "{}"}]},
            "invalid_request_body",
            "input.0.name",
        ),
        (
            {"input": [{"type": "function_call_output", "call_id": "c1", "output": "x"}]},
            "invalid_request_body",
            "input.0.call_id",
        ),
        (
            {"input": [{"type": "function_call_output", "output": "x"}]},
            "invalid_request_body",
            "input.0.call_id",
        ),
        (
            {"tools": [{"type": "function", "name": "f", "parameters": "not-an-object"}]},
            "invalid_request_body",
            "tools.0.parameters",
        ),
        ({"tools": [{"type": "function"}]}, "invalid_request_body", "tools.0.name"),
        ({"tools": [{"type": "web_search"}]}, "unsupported_parameter", "tools.0"),
        ({"tool_choice": "sometimes"}, "invalid_request_body", "tool_choice"),
        (
            {"tool_choice": {"type": "function", "name": "nope"}, "tools": RESPONSES_TOOLS},
            "invalid_request_body",
            "tool_choice",
        ),
        ({"truncation": "auto"}, "unsupported_parameter", "truncation"),
        ({"truncation": "sometimes"}, "invalid_request_body", "truncation"),
        ({"text": {"format": {"type": "json_schema"}}}, "invalid_request_body", "text.format.name"),
        (
            {"text": {"format": {"type": "json_schema", "name": "x"}}},
            "invalid_request_body",
            "text.format",
        ),
        ({"text": {"format": {"type": "xml"}}}, "invalid_request_body", "text.format.type"),
        (
            {"text": {"format": {"type": "json_schema", "name": "a.b", "schema": {}}}},
            "invalid_request_body",
            "text.format.name",
        ),
        ({"parallel_tool_calls": False}, "invalid_request_body", "parallel_tool_calls"),
        ({"text": {"verbosity": "low"}}, "unsupported_parameter", "text.verbosity"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "invalid_request_body", "metadata"),
        ({"metadata": {"k" * 65: "v"}}, "invalid_request_body", "metadata"),
        ({"metadata": {"a": 1}}, "invalid_request_body", "metadata.a"),
        ({"temperature": True}, "invalid_request_body", "temperature"),
        ({"max_output_tokens": 5.0}, "invalid_request_body", "max_output_tokens"),
        ({"store": 0}, "invalid_request_body", "store"),
    ],
)
async def test_responses_bad_input_is_400_naming_the_field(
    app_client, fake_upstream, body, code, param
):
    err = await refused(app_client, fake_upstream, "/v1/responses", {"input": "hi", **body})
    assert_error(err, code, param)


def _said(role: str, part: dict[str, Any]) -> dict[str, Any]:
    return {"input": [{"role": role, "content": [{"type": "input_text", "text": "ok"}, part]}]}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (_said("user", {"type": "input_text", "text": None}), "input.0.content.1.text"),
        (_said("user", {"type": "input_text"}), "input.0.content.1.text"),
        (_said("system", {"type": "output_text", "text": 7}), "input.0.content.1.text"),
        (_said("assistant", {"type": "refusal"}), "input.0.content.1.refusal"),
        (_said("assistant", {"type": "refusal", "refusal": None}), "input.0.content.1.refusal"),
        (
            {
                "input": [
                    {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                    {
                        "type": "function_call_output",
                        "call_id": "c1",
                        "output": [{"type": "input_text", "text": ["x"]}],
                    },
                ]
            },
            "input.1.output.0.text",
        ),
    ],
)
async def test_responses_content_parts_without_their_text_are_400_naming_it(
    app_client, fake_upstream, body, param
):
    """Never sent upstream as the string "None" (or "7")."""
    err = await refused(app_client, fake_upstream, "/v1/responses", body)
    assert_error(err, "invalid_request_body", param)
    assert "must be a string" in err["error"]["message"]


async def test_responses_tool_round_trip_answers_a_call_of_the_previous_response(
    app_client, fake_upstream
):
    body = {"model": "gpt-test", "input": "weather?", "tools": RESPONSES_TOOLS}
    first = await (await app_client.post("/v1/responses", json=body, headers=ADMIN)).get_json()
    [call] = [item for item in first["output"] if item["type"] == "function_call"]
    # Echoed with every FunctionTool field the OpenResponses schema requires.
    assert first["tools"] == [
        {"description": None, "strict": None, "parameters": None, **t} for t in RESPONSES_TOOLS
    ]
    follow = {
        "model": "gpt-test",
        "previous_response_id": first["id"],
        "tools": RESPONSES_TOOLS,
        "tool_choice": {"type": "function", "name": "get_weather"},
        "input": [{"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}],
    }
    second = await app_client.post("/v1/responses", json=follow, headers=ADMIN)
    assert second.status_code == 200, await second.get_json()
    sent = fake_upstream.bodies()[1]
    assert sent["tools"] == CHAT_TOOLS
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["messages"][-1] == {
        "role": "tool",
        "tool_call_id": call["call_id"],
        "content": "sunny",
    }


async def test_responses_call_and_its_output_in_one_input(app_client, fake_upstream):
    body = {
        "model": "gpt-test",
        "input": [
            {"role": "user", "content": "weather?"},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
            {
                "type": "function_call_output",
                "call_id": "c1",
                "output": [{"type": "input_text", "text": "sunny"}],
            },
        ],
    }
    response = await app_client.post("/v1/responses", json=body, headers=ADMIN)
    assert response.status_code == 200, await response.get_json()
    [sent] = fake_upstream.bodies()
    assert sent["messages"][1:] == [
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]


@pytest.mark.parametrize(
    ("text_format", "response_format"),
    [
        (
            {"type": "json_schema", "name": "city", "schema": {"type": "object"}, "strict": True},
            {
                "type": "json_schema",
                "json_schema": {"name": "city", "schema": {"type": "object"}, "strict": True},
            },
        ),
        ({"type": "json_object"}, {"type": "json_object"}),
        ({"type": "text"}, None),
    ],
)
async def test_responses_text_format_becomes_response_format_and_is_echoed(
    app_client, fake_upstream, text_format, response_format
):
    body = {
        "model": "gpt-test",
        "input": "hi",
        "text": {"format": text_format},
        "truncation": "disabled",
    }
    response = await app_client.post("/v1/responses", json=body, headers=ADMIN)
    assert response.status_code == 200, await response.get_json()
    resource = await response.get_json()
    assert resource["text"] == {"format": text_format}
    assert resource["truncation"] == "disabled"
    [sent] = fake_upstream.bodies()
    assert sent.get("response_format") == response_format


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "text"},
        {"type": "json_object"},
        {"type": "json_schema", "json_schema": {"name": "city"}},
        {
            "type": "json_schema",
            "json_schema": {
                "name": "City_2-x",
                "description": "a city",
                "schema": {"type": "object", "properties": {"n": {"default": None}}},
                "strict": True,
            },
        },
    ],
)
async def test_chat_response_format_passes_through_as_given(
    app_client, fake_upstream, response_format
):
    body = {"model": "gpt-test", "messages": USER, "response_format": response_format}
    response = await app_client.post("/v1/chat/completions", json=body, headers=ADMIN)
    assert response.status_code == 200, await response.get_json()
    [sent] = fake_upstream.bodies()
    assert sent["response_format"] == response_format
