"""``gateway_record_conversation``: the seam the sessions plugin will implement. A plugin
of the test's own records what it receives; the gateway is served by Hypercorn on
loopback and called with the async openai SDK, in front of the fake upstream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionToolParam
from openai.types.responses import ResponseCompletedEvent

from host.app import create_app
from tests.conftest import ADMIN
from tests.fake_openai_upstream import KEY_ENV, NORMAL_TEXT, models_config
from tests.openai_helpers import USER, InProcessServer, assert_error, async_sdk, served
from tests.plugins_for_tests.kit import Plugin

# Stored responses and their chains: on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("store_url")

TOOLS: list[ChatCompletionToolParam] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


class Sessions:
    """What the sessions plugin would store: every record, by session key."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def plugin(self) -> Plugin:
        async def record(app: Any, record: dict[str, Any]) -> None:
            assert app is not None
            json.dumps(record)  # JSON-able, as the hook promises
            self.records.append(record)

        return Plugin(gateway_record_conversation=record)

    def keys(self) -> list[str]:
        return [r["session_key"] for r in self.records]


def _broken_plugin() -> Plugin:
    def record(record: dict[str, Any]) -> None:
        raise RuntimeError("the session store is down")

    return Plugin(gateway_record_conversation=record)


@pytest.fixture
async def gateway(
    make_settings, fake_upstream, monkeypatch
) -> AsyncIterator[tuple[InProcessServer, Sessions]]:
    monkeypatch.setenv(KEY_ENV, fake_upstream.api_key)
    sessions = Sessions()
    app = create_app(
        make_settings(models=models_config(fake_upstream)),
        # The broken one first: its failure must not keep the records from the next.
        extra_plugins=[("broken_sessions", _broken_plugin()), ("recorder", sessions.plugin())],
        load_entrypoints=False,
    )
    async with served(app) as server:
        yield server, sessions


async def test_gateway_record_conversation_gets_chat_completions_with_a_session_id(
    gateway, fake_upstream
):
    server, sessions = gateway
    async with async_sdk(server) as client:
        answer = await client.chat.completions.create(
            model="gpt-test", messages=USER, metadata={"session_id": "s-1"}, user="user-42"
        )
        assert answer.choices[0].message.content == NORMAL_TEXT
        await client.chat.completions.create(model="gpt-test", messages=USER, user="user-42")
        await client.chat.completions.create(
            model="gpt-test", messages=USER, metadata={"topic": "no session here"}
        )
    [record] = sessions.records
    assert record["session_key"] == "s-1" and record["api"] == "chat"
    assert record["model"] == "gpt-test" and record["response_id"] == answer.id
    assert record["principal"] == "admin" and record["user"] == "user-42"
    assert record["metadata"] == {"session_id": "s-1"}
    assert record["input"] == USER
    assert record["output"] == [{"role": "assistant", "content": NORMAL_TEXT}]
    assert record["usage"] == {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}
    assert record["status"] == "completed" and record["previous_response_id"] is None
    assert isinstance(record["created_ms"], int)
    # metadata is the gateway's: never sent upstream.
    assert all("metadata" not in body for body in fake_upstream.bodies())


async def test_a_streamed_chat_is_recorded_whole_before_the_stream_ends(gateway):
    server, sessions = gateway
    async with async_sdk(server) as client:
        stream = await client.chat.completions.create(
            model="gpt-test",
            messages=[{"role": "user", "content": "weather in Oslo?"}],
            tools=TOOLS,
            stream=True,
            metadata={"session_id": "s-tools"},
        )
        chunks = [chunk async for chunk in stream]
        assert all(c.usage is None for c in chunks)  # the client did not ask for usage
        [record] = sessions.records  # already there when [DONE] arrived
        text = await client.chat.completions.create(
            model="gpt-test", messages=USER, stream=True, metadata={"session_id": "s-text"}
        )
        assert "".join([c.choices[0].delta.content or "" async for c in text]) == NORMAL_TEXT
    [call] = record["output"][0]["tool_calls"]
    assert call["id"] == "call_upstream_1" and call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}
    assert record["output"][0]["content"] is None
    assert record["usage"]["total_tokens"] == 11  # asked upstream for the metrics anyway
    assert sessions.records[1]["output"] == [{"role": "assistant", "content": NORMAL_TEXT}]
    assert sessions.keys() == ["s-tools", "s-text"]


async def test_failed_calls_are_not_recorded(gateway):
    server, sessions = gateway
    async with async_sdk(server) as client:
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(
                model="gpt-500", messages=USER, metadata={"session_id": "s-fail"}
            )
    assert sessions.records == []


async def test_a_responses_chain_maps_to_one_session_key(gateway):
    server, sessions = gateway
    async with async_sdk(server) as client:
        first = await client.responses.create(model="echo", input="one", instructions="be brief")
        second = await client.responses.create(
            model="echo", input="two", previous_response_id=first.id
        )
        stream = await client.responses.create(
            model="echo", input="three", previous_response_id=second.id, stream=True
        )
        done = [event async for event in stream][-1]
        assert isinstance(done, ResponseCompletedEvent)
        third = done.response
        named = await client.responses.create(
            model="echo", input="four", metadata={"session_id": "s-named"}
        )
        follow = await client.responses.create(
            model="echo", input="five", previous_response_id=named.id
        )
    assert sessions.keys() == [first.id, first.id, first.id, "s-named", "s-named"]
    one, two, three, _, five = sessions.records
    assert one["api"] == "responses" and one["response_id"] == first.id
    assert one["previous_response_id"] is None and one["instructions"] == "be brief"
    assert one["input"] == [{"role": "user", "content": "one"}]
    assert one["output"] == [{"role": "assistant", "content": "echo: one"}]
    # A continuation carries only its own turn; the chain is in previous_response_id.
    assert two["previous_response_id"] == first.id and two["response_id"] == second.id
    assert two["input"] == [{"role": "user", "content": "two"}]
    assert two["output"] == [{"role": "assistant", "content": "echo: two"}]
    assert three["response_id"] == third.id and three["previous_response_id"] == second.id
    assert three["output"] == [{"role": "assistant", "content": "echo: three"}]
    assert three["usage"] is not None and three["status"] == "completed"
    assert five["response_id"] == follow.id and five["metadata"] == {}


async def test_chat_metadata_is_validated_like_openai(gateway):
    server, sessions = gateway
    too_many = {f"k{i}": "v" for i in range(17)}
    async with httpx.AsyncClient(base_url=server.url, headers=ADMIN) as http:
        for metadata in (too_many, {"session_id": 42}, {"session_id": "x" * 513}):
            answer = await http.post(
                "/v1/chat/completions",
                json={"model": "echo", "messages": USER, "metadata": metadata},
            )
            assert answer.status_code == 400
            error = assert_error(answer.json(), "invalid_request_body")
            assert error["param"].startswith("metadata")
    assert sessions.records == []
