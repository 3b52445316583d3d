"""Fields that accept several types (``stop``, ``prompt``, Responses ``input``...) are
named in a 400's ``param`` as the client sent them: the field itself, with the types it
takes, or the element inside it that is wrong; never pydantic's tag for a member of the
union (``stop.str``, ``input.list[dict[str,any]].0``). Nothing reaches the upstream."""

from __future__ import annotations

from typing import Any

import pytest

from tests.openai_helpers import USER, assert_error, refused

CHAT = ("/v1/chat/completions", {"messages": USER})
COMPLETIONS = ("/v1/completions", {"prompt": "x"})
RESPONSES = ("/v1/responses", {"input": "hi"})


async def _refused(
    client: Any, upstream: Any, route: tuple[str, dict[str, Any]], **body: Any
) -> dict[str, Any]:
    path, base = route
    return await refused(client, upstream, path, {**base, **body})


@pytest.mark.parametrize(
    ("route", "body", "param", "says"),
    [
        (CHAT, {"stop": 5}, "stop", "must be a string or a list of strings, not an integer"),
        (COMPLETIONS, {"stop": 5}, "stop", "must be a string or a list of strings"),
        (COMPLETIONS, {"prompt": 5}, "prompt", "must be a string or a list of strings"),
        (COMPLETIONS, {"prompt": {"text": "x"}}, "prompt", "not an object"),
        (RESPONSES, {"input": 5}, "input", "must be a string or a list of objects"),
        (RESPONSES, {"input": True}, "input", "not a boolean"),
    ],
)
async def test_a_value_of_no_accepted_type_names_the_field_and_its_types(
    app_client, fake_upstream, route, body, param, says
):
    err = await _refused(app_client, fake_upstream, route, **body)
    detail = assert_error(err, "invalid_request_body", param)
    assert detail["message"].startswith(f"{param}: ") and says in detail["message"]


@pytest.mark.parametrize(
    ("route", "body", "param"),
    [
        (RESPONSES, {"input": [5]}, "input.0"),
        (RESPONSES, {"input": [{"role": "user", "content": "hi"}, "x"]}, "input.1"),
        (CHAT, {"stop": ["end", 5]}, "stop.1"),
        (COMPLETIONS, {"prompt": ["a", "b", None]}, "prompt.2"),
        (
            RESPONSES,
            {"input": [{"type": "function_call_output", "call_id": "c", "output": 5}]},
            "input.0.output",
        ),
        (
            RESPONSES,
            {"input": [{"type": "function_call_output", "call_id": "c", "output": [7]}]},
            "input.0.output.0",
        ),
    ],
)
async def test_a_list_with_a_wrong_element_names_that_element(
    app_client, fake_upstream, route, body, param
):
    err = await _refused(app_client, fake_upstream, route, **body)
    detail = assert_error(err, "invalid_request_body", param)
    assert "[" not in detail["message"] and ".str" not in detail["message"]


async def test_other_errors_are_still_counted_after_a_union_field(app_client, fake_upstream):
    err = await _refused(app_client, fake_upstream, CHAT, stop=5, user=1)
    detail = assert_error(err, "invalid_request_body", "stop")
    assert detail["message"].endswith("(and 1 more)")
