"""OpenAI parameters the gateway passes on, maps, drops or refuses on purpose, on
/v1/chat/completions and /v1/responses (the fake upstream records every request it gets),
and messages the official SDK's parse/stream helpers give back, sent back through it."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionToolParam
from pydantic import BaseModel

from tests.conftest import ADMIN
from tests.openai_helpers import USER, assert_error, refused, sdk

TOOL: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}


async def _ok(client: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(path, json={"model": "gpt-test", **body}, headers=ADMIN)
    answer: dict[str, Any] = await response.get_json()
    assert response.status_code == 200, answer
    return answer


# -- chat completions -------------------------------------------------------------------------

PASSED_ON = {
    "logprobs": True,
    "logit_bias": {"50256": -100, "11": 5},
    "reasoning_effort": "low",
    "service_tier": "flex",
    "store": True,
    "seed": 7,
    "prediction": {"type": "content", "content": [{"type": "text", "text": "x = 1"}]},
    "verbosity": "high",
    "safety_identifier": "user-hash-1",
    "prompt_cache_key": "chat-42",
}


@pytest.mark.parametrize(("param", "value"), list(PASSED_ON.items()))
async def test_chat_parameter_reaches_the_upstream_as_given(
    app_client, fake_upstream, param, value
):
    await _ok(app_client, "/v1/chat/completions", {"messages": USER, param: value})
    assert fake_upstream.requests[-1].body[param] == value


async def test_chat_top_logprobs_with_logprobs_reach_the_upstream(app_client, fake_upstream):
    await _ok(
        app_client,
        "/v1/chat/completions",
        {"messages": USER, "logprobs": True, "top_logprobs": 20},
    )
    sent = fake_upstream.requests[-1].body
    assert sent["logprobs"] is True and sent["top_logprobs"] == 20


async def test_chat_text_modality_and_obfuscation_are_dropped(app_client, fake_upstream):
    body = {
        "messages": USER,
        "modalities": ["text"],
        "stream": True,
        "stream_options": {"include_usage": True, "include_obfuscation": False},
    }
    response = await app_client.post(
        "/v1/chat/completions", json={"model": "gpt-test", **body}, headers=ADMIN
    )
    assert response.status_code == 200
    assert (await response.get_data(as_text=True)).rstrip().endswith("data: [DONE]")
    sent = fake_upstream.requests[-1].body
    assert "modalities" not in sent
    assert sent["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"logprobs": 1}, "invalid_request_body", "logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "invalid_request_body", "top_logprobs"),
        ({"logprobs": True, "top_logprobs": -1}, "invalid_request_body", "top_logprobs"),
        ({"top_logprobs": 2}, "invalid_request_body", "top_logprobs"),
        ({"logprobs": False, "top_logprobs": 2}, "invalid_request_body", "top_logprobs"),
        ({"logit_bias": {"50256": 101}}, "invalid_request_body", "logit_bias.50256"),
        ({"logit_bias": {"50256": 1.5}}, "invalid_request_body", "logit_bias.50256"),
        ({"logit_bias": {"hello": 1}}, "invalid_request_body", "logit_bias"),
        ({"logit_bias": [1]}, "invalid_request_body", "logit_bias"),
        ({"reasoning_effort": "extreme"}, "invalid_request_body", "reasoning_effort"),
        ({"service_tier": "gold"}, "invalid_request_body", "service_tier"),
        ({"store": "yes"}, "invalid_request_body", "store"),
        ({"verbosity": "loud"}, "invalid_request_body", "verbosity"),
        ({"modalities": ["text", "audio"]}, "unsupported_parameter", "modalities"),
        ({"modalities": ["video"]}, "invalid_request_body", "modalities.0"),
        ({"prediction": {"type": "content"}}, "invalid_request_body", "prediction.content"),
        (
            {"prediction": {"type": "content", "content": [{"type": "text"}]}},
            "invalid_request_body",
            "prediction.content.0.text",
        ),
        ({"prediction": {"type": "guess", "content": "x"}}, "invalid_request_body", None),
        ({"safety_identifier": 5}, "invalid_request_body", "safety_identifier"),
        (
            {"stream_options": {"include_obfuscation": "no"}},
            "invalid_request_body",
            "stream_options.include_obfuscation",
        ),
        ({"audio": {"voice": "alloy"}}, "unsupported_parameter", "audio"),
    ],
)
async def test_chat_bad_pass_through_value_is_400_naming_the_field(
    app_client, fake_upstream, body, code, param
):
    err = await refused(
        app_client, fake_upstream, "/v1/chat/completions", {"messages": USER, **body}
    )
    assert_error(err, code, param)
    if param is None:
        assert err["error"]["param"] == "prediction.type"


@pytest.mark.parametrize("part", [{"text": "no type"}, {"type": "", "text": "empty type"}])
async def test_chat_content_part_without_type_names_its_type(app_client, fake_upstream, part):
    messages = [{"role": "user", "content": [part]}]
    err = await refused(app_client, fake_upstream, "/v1/chat/completions", {"messages": messages})
    assert_error(err, "invalid_request_body", "messages.0.content.0.type")


async def test_chat_sdk_added_keys_are_accepted_and_not_sent_on(app_client, fake_upstream):
    call = {
        "id": "c1",
        "type": "function",
        "index": 0,
        "function": {
            "name": "get_weather",
            "arguments": '{"city": "Oslo"}',
            "parsed_arguments": {"city": "Oslo"},
        },
    }
    assistant = {"role": "assistant", "content": "", "parsed": None, "tool_calls": [call]}
    messages = [*USER, assistant, {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]
    await _ok(app_client, "/v1/chat/completions", {"messages": messages, "tools": [TOOL]})
    sent = fake_upstream.requests[-1].body["messages"][1]
    assert sent == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
            }
        ],
    }


async def test_echo_model_ignores_pass_through_parameters(app_client, fake_upstream):
    body = {"messages": USER, **PASSED_ON, "model": "echo", "modalities": ["text"]}
    answer = await _ok(app_client, "/v1/chat/completions", body)
    assert answer["choices"][0]["message"]["content"] == "echo: hi"
    assert fake_upstream.requests == []


# -- chat completions through the SDK's parse/stream helpers ----------------------------------


def _answer_the_call(client: openai.OpenAI, message: Any, tools: list[Any]) -> None:
    call = message.tool_calls[0]
    result = client.chat.completions.create(
        model="gpt-test",
        messages=[*USER, message, {"role": "tool", "tool_call_id": call.id, "content": "sunny"}],
        tools=tools,
    )
    assert result.choices[0].message.content == "the tool said sunny"


def _sent_assistant(upstream: Any) -> dict[str, Any]:
    sent: dict[str, Any] = upstream.requests[-1].body["messages"][1]
    assert "parsed" not in sent
    for call in sent["tool_calls"]:
        assert set(call) == {"id", "type", "function"}
        assert set(call["function"]) == {"name", "arguments"}
    return sent


def test_sdk_stream_helper_final_message_is_accepted_back(openai_gateway, upstream):
    client = sdk(openai_gateway)
    with client.chat.completions.stream(model="gpt-test", messages=USER, tools=[TOOL]) as s:
        for _ in s:
            pass
        message = s.get_final_completion().choices[0].message
    assert message.tool_calls and message.tool_calls[0].function.parsed_arguments
    _answer_the_call(client, message, [TOOL])
    assert _sent_assistant(upstream)["tool_calls"][0]["function"]["name"] == "get_weather"


def test_sdk_parse_helper_tool_call_is_accepted_back(openai_gateway, upstream):
    class Weather(BaseModel):
        city: str

    client = sdk(openai_gateway)
    tools = [openai.pydantic_function_tool(Weather)]
    parsed = client.chat.completions.parse(model="gpt-test", messages=USER, tools=tools)
    message = parsed.choices[0].message
    assert message.tool_calls and message.tool_calls[0].function.parsed_arguments is not None
    _answer_the_call(client, message, tools)
    assert _sent_assistant(upstream)["tool_calls"][0]["function"]["name"] == "Weather"


def test_sdk_pass_through_parameters_reach_the_upstream(openai_gateway, upstream):
    result = sdk(openai_gateway).chat.completions.create(
        model="gpt-test",
        messages=USER,
        logprobs=True,
        top_logprobs=2,
        reasoning_effort="low",
        service_tier="auto",
        verbosity="low",
        modalities=["text"],
    )
    assert result.choices[0].finish_reason == "stop"
    sent = upstream.requests[-1].body
    assert sent["logprobs"] is True and sent["top_logprobs"] == 2
    assert (sent["reasoning_effort"], sent["service_tier"], sent["verbosity"]) == (
        "low",
        "auto",
        "low",
    )


# -- responses --------------------------------------------------------------------------------


async def test_responses_parameters_map_to_chat_and_are_echoed(app_client, fake_upstream):
    body = {
        "input": "hi",
        "reasoning": {"effort": "high", "summary": None},
        "include": [],
        "service_tier": "priority",
        "safety_identifier": "user-hash-1",
        "prompt_cache_key": "resp-42",
        "max_tool_calls": 3,
        "top_logprobs": 0,
    }
    resource = await _ok(app_client, "/v1/responses", body)
    sent = fake_upstream.requests[-1].body
    assert sent["reasoning_effort"] == "high"
    assert sent["service_tier"] == "priority"
    assert sent["safety_identifier"] == "user-hash-1"
    assert sent["prompt_cache_key"] == "resp-42"
    for absent in ("reasoning", "include", "max_tool_calls", "top_logprobs", "logprobs"):
        assert absent not in sent
    assert resource["reasoning"]["effort"] == "high"
    assert resource["max_tool_calls"] == 3 and resource["top_logprobs"] == 0
    assert resource["service_tier"] == "priority"
    assert resource["safety_identifier"] == "user-hash-1"
    assert resource["prompt_cache_key"] == "resp-42"


async def test_responses_stream_options_obfuscation_is_accepted(app_client, fake_upstream):
    body = {"input": "hi", "stream": True, "stream_options": {"include_obfuscation": False}}
    response = await app_client.post(
        "/v1/responses", json={"model": "gpt-test", **body}, headers=ADMIN
    )
    assert response.status_code == 200
    assert "response.completed" in await response.get_data(as_text=True)
    assert "include_obfuscation" not in str(fake_upstream.requests[-1].body)


async def test_responses_input_image_becomes_a_chat_image_part(app_client, fake_upstream):
    content = [
        {"type": "input_text", "text": "what is this?"},
        {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"},
        {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
    ]
    await _ok(app_client, "/v1/responses", {"input": [{"role": "user", "content": content}]})
    assert fake_upstream.requests[-1].body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64,AAAA", "detail": "auto"},
                },
            ],
        }
    ]


def _image(**part: Any) -> dict[str, Any]:
    return {"input": [{"role": "user", "content": [{"type": "input_image", **part}]}]}


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"include": ["message.output_text.logprobs"]}, "unsupported_parameter", "include"),
        ({"include": "all"}, "invalid_request_body", "include"),
        ({"reasoning": {"effort": "extreme"}}, "invalid_request_body", "reasoning.effort"),
        ({"reasoning": {"summary": "auto"}}, "unsupported_parameter", "reasoning.summary"),
        ({"reasoning": {"effort": "low", "x": 1}}, "unsupported_parameter", "reasoning.x"),
        ({"service_tier": "gold"}, "invalid_request_body", "service_tier"),
        ({"prompt_cache_key": 1}, "invalid_request_body", "prompt_cache_key"),
        ({"max_tool_calls": -1}, "invalid_request_body", "max_tool_calls"),
        ({"top_logprobs": 2}, "unsupported_parameter", "top_logprobs"),
        ({"top_logprobs": 21}, "invalid_request_body", "top_logprobs"),
        ({"stream_options": {"include_usage": True}}, "unsupported_parameter", None),
        (_image(file_id="file-1"), "unsupported_parameter", "input.0.content.0.file_id"),
        (_image(image_url=5), "invalid_request_body", "input.0.content.0.image_url"),
        (_image(), "invalid_request_body", "input.0.content.0"),
        (
            _image(image_url="https://x/y.png", detail="original"),
            "unsupported_parameter",
            "input.0.content.0.detail",
        ),
        (
            {
                "input": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_image", "image_url": "https://x/y.png"},
                            {"type": "input_file", "file_id": "f"},
                        ],
                    }
                ]
            },
            "unsupported_parameter",
            "input.0.content.1.type",
        ),
    ],
)
async def test_responses_bad_or_unserved_value_is_400_naming_it(
    app_client, fake_upstream, body, code, param
):
    err = await refused(app_client, fake_upstream, "/v1/responses", {"input": "hi", **body})
    assert_error(err, code, param)
    if isinstance(body.get("include"), list):
        assert "message.output_text.logprobs" in err["error"]["message"]
    if param is None:
        assert err["error"]["param"] == "stream_options.include_usage"
