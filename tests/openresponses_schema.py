"""The OpenResponses OpenAPI document shipped in the ``openresponses-py`` package, and
checks of the gateway's Responses objects and streamed events against its JSON schemas
(``ResponseResource``; each event by its ``type``, ``ErrorStreamingEvent`` for ``error``)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator


@cache
def document() -> dict[str, Any]:
    """The newest OpenAPI document in the package (its files are named by date)."""
    folder = resources.files("openresponses").joinpath("openapi")
    newest = sorted(p.name for p in folder.iterdir() if p.name.endswith(".json"))[-1]
    found: dict[str, Any] = json.loads(folder.joinpath(newest).read_text())
    return found


@cache
def validator(schema: str) -> Draft202012Validator:
    components = document()["components"]
    return Draft202012Validator(
        {"$ref": f"#/components/schemas/{schema}", "components": components}
    )


@cache
def event_schemas() -> dict[str, str]:
    """Event ``type`` -> the name of its schema."""
    out = {}
    for name, schema in document()["components"]["schemas"].items():
        if name.endswith("StreamingEvent"):
            for kind in schema.get("properties", {}).get("type", {}).get("enum", []):
                out[kind] = name
    return out


def problems(obj: Any, schema: str) -> list[str]:
    return [
        f"{'/'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in validator(schema).iter_errors(obj)
    ]


def assert_response(obj: Any) -> None:
    """``obj`` is a valid ``ResponseResource``: every required field there, each right."""
    found = problems(obj, "ResponseResource")
    assert not found, found


def assert_event(event: Any) -> None:
    schema = event_schemas().get(event.get("type"))
    assert schema is not None, f"no OpenResponses event has the type {event.get('type')!r}"
    found = problems(event, schema)
    assert not found, (event["type"], found)
