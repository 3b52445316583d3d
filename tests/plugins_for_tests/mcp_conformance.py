"""The tools the MCP conformance suite calls (``@modelcontextprotocol/conformance server``),
registered as any plugin registers tools, using the MCP plugin's contract for progress,
logging and rich content: what a third-party plugin would write."""

from __future__ import annotations

import asyncio
from typing import Any

from host.api import Tool, hookimpl
from plugins.mcp.contract import Content, log_message, report_progress

# A 1x1 PNG and a short WAV header: the suite checks only that data and type are there.
PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAA"
    "AABJRU5ErkJggg=="
)
WAV = "UklGRiQAAABXQVZFZm10IBAAAAABAAEARKwAAIhYAQACABAAZGF0YQAAAAA="
NO_ARGS: dict[str, Any] = {"type": "object", "properties": {}}


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


async def simple_text() -> str:
    return "This is a simple text response for testing."


async def image() -> Content:
    return Content([{"type": "image", "data": PNG, "mimeType": "image/png"}])


async def audio() -> Content:
    return Content([{"type": "audio", "data": WAV, "mimeType": "audio/wav"}])


RESOURCE = {
    "type": "resource",
    "resource": {
        "uri": "test://embedded-resource",
        "mimeType": "text/plain",
        "text": "This is an embedded resource content.",
    },
}


async def embedded() -> Content:
    return Content([RESOURCE])


async def mixed() -> Content:
    return Content(
        [
            _text("Multiple content types test:"),
            {"type": "image", "data": PNG, "mimeType": "image/png"},
            RESOURCE,
        ]
    )


async def with_logging() -> str:
    await log_message("info", "Tool execution started")
    await asyncio.sleep(0.05)
    await log_message("info", "Tool processing data")
    await asyncio.sleep(0.05)
    await log_message("info", "Tool execution completed")
    return "Tool with logging executed successfully"


async def with_progress() -> str:
    for step in (0, 50, 100):
        await report_progress(step, 100)
        if step < 100:
            await asyncio.sleep(0.05)
    return "Tool with progress executed successfully"


async def error() -> str:
    raise RuntimeError("This tool intentionally returns an error for testing")


async def schema_2020_12(**_args: Any) -> str:
    return "ok"


SCHEMA_2020_12 = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
    "additionalProperties": False,
}

TOOLS = {
    "test_simple_text": Tool("Returns simple text.", NO_ARGS, simple_text),
    "test_image_content": Tool("Returns an image.", NO_ARGS, image),
    "test_audio_content": Tool("Returns audio.", NO_ARGS, audio),
    "test_embedded_resource": Tool("Returns an embedded resource.", NO_ARGS, embedded),
    "test_multiple_content_types": Tool("Returns text, an image and a resource.", NO_ARGS, mixed),
    "test_tool_with_logging": Tool("Logs three messages.", NO_ARGS, with_logging),
    "test_tool_with_progress": Tool("Reports progress three times.", NO_ARGS, with_progress),
    "test_error_handling": Tool("Always fails.", NO_ARGS, error),
    "json_schema_2020_12_tool": Tool(
        "Tool with JSON Schema 2020-12 features", SCHEMA_2020_12, schema_2020_12
    ),
}


@hookimpl
def gateway_register_tools(register: Any) -> None:
    for name, tool in TOOLS.items():
        register(name, tool)
