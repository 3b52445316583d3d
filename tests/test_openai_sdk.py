"""/v1/models, /v1/chat/completions and /v1/completions through the official ``openai``
SDK (sync and async) against a real ``gateway serve`` in front of a real
OpenAI-compatible upstream on loopback (``tests/fake_openai_upstream.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import httpx
import openai
import pytest
from openai.types.chat import (
    ChatCompletionAssistantMessageParam,
    ChatCompletionMessageParam,
    ChatCompletionToolParam,
)

from tests.conftest import ADMIN
from tests.fake_openai_upstream import NORMAL_TEXT
from tests.openai_helpers import async_sdk, sdk

TOOLS: list[ChatCompletionToolParam] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "the weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


# -- models -----------------------------------------------------------------------------------


def test_models_list_shows_gateway_model_names(openai_gateway, upstream):
    client = sdk(openai_gateway)
    ids = {m.id for m in client.models.list()}
    assert {"gpt-test", "gpt-slow", "echo"} <= ids
    assert "normal" not in ids  # upstream names stay hidden
    one = client.models.retrieve("gpt-test")
    assert one.id == "gpt-test" and one.owned_by == "agent-gateway:openai"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    assert upstream.requests == []


# -- chat completions -------------------------------------------------------------------------


def test_chat_completion_reaches_upstream_with_its_key_and_model(openai_gateway, upstream):
    result = sdk(openai_gateway).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "hi"}]
    )
    assert result.choices[0].message.content == NORMAL_TEXT
    assert result.model == "gpt-test"
    assert result.usage is not None and result.usage.total_tokens == 11
    [seen] = upstream.requests
    assert seen.path == "/v1/chat/completions"
    assert seen.body["model"] == "normal" and seen.body["stream"] is False
    assert seen.headers["Authorization"] == f"Bearer {upstream.api_key}"


def test_upstream_key_never_reaches_the_client(openai_gateway, upstream):
    with httpx.Client(base_url=openai_gateway.url, headers=ADMIN) as http:
        answers = [
            http.get("/v1/models"),
            http.get("/v1/models/gpt-test"),
            http.post(
                "/v1/chat/completions",
                json={"model": "gpt-test", "messages": [{"role": "user", "content": "x"}]},
            ),
            http.post(
                "/v1/chat/completions",
                json={
                    "model": "gpt-test",
                    "stream": True,
                    "messages": [{"role": "user", "content": "x"}],
                },
            ),
            http.post("/v1/chat/completions", json={"model": "gpt-500", "messages": [{}]}),
            http.post(
                "/v1/chat/completions",
                json={"model": "gpt-500", "messages": [{"role": "user", "content": "x"}]},
            ),
            http.get("/gateway/config"),
        ]
    for answer in answers:
        assert upstream.api_key not in answer.text
        assert upstream.api_key not in str(answer.headers)
    assert answers[5].status_code == 502
    assert upstream.api_key not in openai_gateway.log()


def test_chat_stream_is_forwarded_with_gateway_model_name(openai_gateway, upstream):
    stream = sdk(openai_gateway).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == NORMAL_TEXT
    assert {c.model for c in chunks} == {"gpt-test"}
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)  # not asked for, not sent
    [seen] = upstream.requests
    assert seen.body["stream"] is True and seen.body["model"] == "normal"
    # Asked of the upstream anyway, for the token metrics.
    assert seen.body["stream_options"] == {"include_usage": True}


def test_stream_options_include_usage_passes_through(openai_gateway, upstream):
    stream = sdk(openai_gateway).chat.completions.create(
        model="gpt-test",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and usage[0].prompt_tokens == 7 and usage[0].completion_tokens == 4
    assert chunks[-1].choices == []
    assert upstream.requests[0].body["stream_options"] == {"include_usage": True}


def test_chat_stream_really_streams(openai_gateway, upstream):
    """The client sees the first delta while the upstream still holds its last one."""
    stream = sdk(openai_gateway).chat.completions.create(
        model="gpt-slow", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    texts: list[str] = []
    with stream:
        for chunk in stream:
            delta = chunk.choices[0].delta.content if chunk.choices else None
            if delta:
                if not texts:
                    assert upstream.last_chunk_sent is False, "the gateway buffered the stream"
                    upstream.release.set()
                texts.append(delta)
    assert "".join(texts) == "first last"
    assert upstream.last_chunk_sent is True


def test_sampling_parameters_pass_through_to_upstream(openai_gateway, upstream):
    client = sdk(openai_gateway)
    client.chat.completions.create(
        model="gpt-test",
        messages=[{"role": "system", "content": "be short"}, {"role": "user", "content": "hi"}],
        max_tokens=12,
        temperature=0.2,
        stop=["\n\n", "END"],
        user="user-42",
    )
    client.chat.completions.create(
        model="gpt-test",
        messages=[{"role": "user", "content": "hi"}],
        max_completion_tokens=34,
        stop="STOP",
    )
    first, second = upstream.bodies()
    assert first["max_tokens"] == 12 and first["temperature"] == 0.2
    assert first["stop"] == ["\n\n", "END"] and first["user"] == "user-42"
    assert first["messages"] == [
        {"role": "system", "content": "be short"},
        {"role": "user", "content": "hi"},
    ]
    assert second["max_completion_tokens"] == 34 and second["stop"] == "STOP"
    assert "max_tokens" not in second and "user" not in second and "n" not in second


def test_tool_call_round_trip(openai_gateway, upstream):
    client = sdk(openai_gateway)
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "weather in Oslo?"}]
    first = client.chat.completions.create(
        model="gpt-test", messages=messages, tools=TOOLS, tool_choice="auto"
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Oslo"}
    sent_back = choice.message.model_dump(exclude_none=True)  # the message as JSON, as given
    messages.append(cast(ChatCompletionAssistantMessageParam, sent_back))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"})
    second = client.chat.completions.create(model="gpt-test", messages=messages, tools=TOOLS)
    assert second.choices[0].message.content == "the tool said sunny, 21 C"
    sent_first, sent_second = upstream.bodies()
    assert sent_first["tools"] == TOOLS and sent_first["tool_choice"] == "auto"
    assistant = sent_second["messages"][1]
    assert assistant["role"] == "assistant"
    assert assistant["tool_calls"][0]["id"] == call.id
    assert assistant["tool_calls"][0]["function"]["name"] == "get_weather"
    assert sent_second["messages"][2] == {
        "role": "tool",
        "tool_call_id": call.id,
        "content": "sunny, 21 C",
    }


def test_streamed_tool_call_arrives_as_deltas(openai_gateway, upstream):
    stream = sdk(openai_gateway).chat.completions.create(
        model="gpt-test",
        messages=[{"role": "user", "content": "weather?"}],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        stream=True,
    )
    chunks = list(stream)
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].function is not None and calls[0].function.name == "get_weather"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert upstream.requests[0].body["tool_choice"] == {
        "type": "function",
        "function": {"name": "get_weather"},
    }


# -- completions ------------------------------------------------------------------------------


def test_completion_not_streamed(openai_gateway, upstream):
    result = sdk(openai_gateway).completions.create(
        model="gpt-test", prompt="Say hello", max_tokens=5, stop=["\n"]
    )
    assert result.choices[0].text == NORMAL_TEXT
    assert result.model == "gpt-test"
    [seen] = upstream.requests
    assert seen.path == "/v1/completions"
    assert seen.body == {
        "model": "normal",
        "prompt": "Say hello",
        "max_tokens": 5,
        "stop": ["\n"],
        "stream": False,
    }


def test_completion_streamed(openai_gateway, upstream):
    stream = sdk(openai_gateway).completions.create(
        model="gpt-test", prompt="Say hello", stream=True
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks) == NORMAL_TEXT
    assert {c.model for c in chunks} == {"gpt-test"}
    assert upstream.requests[0].body["stream"] is True


def test_completion_stream_really_streams(openai_gateway, upstream):
    stream = sdk(openai_gateway).completions.create(model="gpt-slow", prompt="x", stream=True)
    texts: list[str] = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].text:
            if not texts:
                assert upstream.last_chunk_sent is False, "the gateway buffered the stream"
                upstream.release.set()
            texts.append(chunk.choices[0].text)
    assert "".join(texts) == "first last"


# -- async client -----------------------------------------------------------------------------


async def test_async_client_chat_and_completion_streaming_and_not(openai_gateway, upstream):
    async with async_sdk(openai_gateway) as client:
        chat = await client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "hi"}]
        )
        assert chat.choices[0].message.content == NORMAL_TEXT
        stream = await client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == NORMAL_TEXT
        completion = await client.completions.create(model="gpt-test", prompt="p")
        assert completion.choices[0].text == NORMAL_TEXT
        cstream = await client.completions.create(model="gpt-test", prompt="p", stream=True)
        assert "".join([c.choices[0].text async for c in cstream]) == NORMAL_TEXT
        models = [m.id async for m in client.models.list()]
        assert "gpt-test" in models
    assert [r.body["stream"] for r in upstream.requests] == [False, True, False, True]


async def test_async_client_stream_really_streams(openai_gateway, upstream):
    async with async_sdk(openai_gateway) as client:
        stream = await client.chat.completions.create(
            model="gpt-slow", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        texts: list[str] = []
        async for chunk in stream:
            delta = chunk.choices[0].delta.content if chunk.choices else None
            if delta:
                if not texts:
                    assert upstream.last_chunk_sent is False, "the gateway buffered the stream"
                    upstream.release.set()
                texts.append(delta)
    assert "".join(texts) == "first last"


# -- the offline echo model -------------------------------------------------------------------


def test_echo_model_works_with_no_upstream(live_server, tmp_path: Path):
    server = live_server()
    client = sdk(server)
    assert [m.id for m in client.models.list()] == ["echo"]
    answer = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "ping pong"}]
    )
    assert answer.choices[0].message.content == "echo: ping pong"
    streamed = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "ping pong"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == "echo: ping pong"
    completion = client.completions.create(model="echo", prompt="hello")
    assert completion.choices[0].text == " echo: hello"
    assert "echo" in (client.models.retrieve("echo").model_extra or {}).get("description", "")
