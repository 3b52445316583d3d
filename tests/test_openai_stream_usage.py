"""``stream_options`` towards the upstream and the client, through the openai SDK against a
real ``gateway serve`` in front of the fake upstream: ``gpt-strict`` sits on an upstream
that refuses ``stream_options`` with 400, ``gpt-strict-quiet`` is the same upstream with
``stream_usage = false``."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import ADMIN
from tests.fake_openai_upstream import NORMAL_TEXT
from tests.openai_helpers import USER, sdk


def test_an_upstream_refusing_stream_options_breaks_streams_unless_stream_usage_is_off(
    openai_gateway, upstream
):
    client = sdk(openai_gateway)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="gpt-strict", messages=USER, stream=True)
    assert refused.value.code == "unsupported_parameter"  # the upstream's code, passed on
    chunks = list(
        client.chat.completions.create(model="gpt-strict-quiet", messages=USER, stream=True)
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == NORMAL_TEXT
    assert all(c.usage is None for c in chunks)
    refused_body, quiet_body = upstream.bodies()
    assert refused_body["stream_options"] == {"include_usage": True}
    assert "stream_options" not in quiet_body and quiet_body["stream"] is True


def test_usage_asked_for_but_unknown_comes_as_a_null_usage_chunk(openai_gateway, upstream):
    chunks = list(
        sdk(openai_gateway).chat.completions.create(
            model="gpt-strict-quiet",
            messages=USER,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    *content, last = chunks
    assert "".join(c.choices[0].delta.content or "" for c in content) == NORMAL_TEXT
    assert last.choices == [] and last.usage is None and last.model == "gpt-strict-quiet"
    assert last.id == content[0].id
    assert "stream_options" not in upstream.bodies()[0]


def test_stream_options_of_a_non_streamed_call_are_not_sent_upstream(openai_gateway, upstream):
    answer = httpx.post(
        f"{openai_gateway.url}/v1/chat/completions",
        json={"model": "gpt-strict", "messages": USER, "stream_options": {"include_usage": True}},
        headers=ADMIN,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == NORMAL_TEXT
    assert "stream_options" not in upstream.bodies()[0]


def test_completions_accept_stream_options_include_usage(openai_gateway, upstream):
    client = sdk(openai_gateway)
    chunks = list(
        client.completions.create(
            model="gpt-test", prompt="x", stream=True, stream_options={"include_usage": True}
        )
    )
    *content, last = chunks
    assert "".join(c.choices[0].text for c in content) == NORMAL_TEXT
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (7, 4)
    quiet = list(client.completions.create(model="gpt-test", prompt="x", stream=True))
    assert all(c.usage is None for c in quiet) and all(c.choices for c in quiet)
    unknown = list(
        client.completions.create(
            model="gpt-strict-quiet",
            prompt="x",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert unknown[-1].choices == [] and unknown[-1].usage is None
    asked, not_asked, off = upstream.bodies()
    assert asked["stream_options"] == not_asked["stream_options"] == {"include_usage": True}
    assert "stream_options" not in off


def test_completions_refuse_unknown_stream_options(openai_gateway, upstream):
    answer = httpx.post(
        f"{openai_gateway.url}/v1/completions",
        json={"model": "gpt-test", "prompt": "x", "stream": True, "stream_options": {"x": 1}},
        headers=ADMIN,
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "unsupported_parameter"
    assert answer.json()["error"]["param"] == "stream_options.x"
    assert upstream.requests == []


def test_responses_stream_without_stream_options_when_stream_usage_is_off(openai_gateway, upstream):
    client = sdk(openai_gateway)
    events = list(client.responses.create(model="gpt-strict-quiet", input="hi", stream=True))
    done = events[-1]
    assert done.type == "response.completed"
    assert done.response.output_text == NORMAL_TEXT
    assert done.response.usage is None
    assert "stream_options" not in upstream.bodies()[0]
