"""Every Responses object and every streamed event the gateway sends is valid against the
OpenResponses OpenAPI document (the JSON schemas shipped in ``openresponses-py``; see
``tests/openresponses_schema.py``): plain, streamed, tool-calling, refused, cut off at
the token limit, failed mid-stream and stored. Through HTTP, in front of the fake
upstream (what it does is its model name: ``tests/fake_openai_upstream.py``)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ADMIN
from tests.openresponses_schema import assert_event, assert_response
from tests.test_openai_responses_spec import sse_events

TOOL = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
CASES: dict[str, dict[str, Any]] = {
    "plain": {"model": "gpt-test", "input": "hi"},
    "instructions": {"model": "gpt-test", "input": "hi", "instructions": "be brief"},
    "tool call": {"model": "gpt-test", "input": "weather?", "tools": [TOOL]},
    "strict tool": {"model": "gpt-test", "input": "weather?", "tools": [{**TOOL, "strict": True}]},
    "refusal": {"model": "gpt-refuses", "input": "hi"},
    "token limit": {"model": "gpt-length", "input": "hi"},
}


@pytest.mark.parametrize("case", list(CASES))
async def test_every_response_object_is_a_valid_response_resource(app_client, case):
    answer = await app_client.post("/v1/responses", json=CASES[case], headers=ADMIN)
    assert answer.status_code == 200
    created = await answer.get_json()
    assert_response(created)
    stored = await app_client.get(f"/v1/responses/{created['id']}", headers=ADMIN)
    assert_response(await stored.get_json())
    if "tools" in CASES[case]:
        tool = created["tools"][0]
        assert tool["strict"] is CASES[case]["tools"][0].get("strict")
        assert tool["description"] is None


@pytest.mark.parametrize("case", [*CASES, "dies", "stall"])
async def test_every_streamed_event_is_a_valid_openresponses_event(app_client, case):
    body: dict[str, Any] = CASES.get(case) or {"model": f"gpt-{case}", "input": "hi"}
    answer = await app_client.post("/v1/responses", json={**body, "stream": True}, headers=ADMIN)
    assert answer.status_code == 200
    events, rest = sse_events(await answer.get_data(as_text=True))
    assert rest == ["data: [DONE]"]
    for event in events:
        assert_event(event)
    last = events[-1]["type"]
    expected = {"dies": "response.failed", "stall": "response.failed"}
    assert last == expected.get(
        case, "response.incomplete" if case == "token limit" else "response.completed"
    )
