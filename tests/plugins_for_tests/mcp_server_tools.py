"""Tools of a plugin for the ``/mcp`` tests: one that needs a person's approval (its call
raises ``approval_required``, as the tools layer's approvals do), and one that reports
its caller (what ``call_tool`` was given)."""

from __future__ import annotations

from typing import Any

from host.api import Tool, ToolError, hookimpl


async def guarded(target: str) -> str:
    raise ToolError("approval_required", f"deleting {target!r} needs an approval")


async def whoami(caller: dict[str, Any]) -> dict[str, Any]:
    return {"kind": caller.get("kind"), "owner": caller.get("owner")}


TOOLS = {
    "danger.delete": Tool(
        "Delete a thing (needs an approval).",
        {
            "type": "object",
            "properties": {"target": {"type": "string"}},
            "required": ["target"],
            "additionalProperties": False,
        },
        guarded,
    ),
    "whoami": Tool(
        "Who calls.",
        {"type": "object", "properties": {}, "additionalProperties": False},
        whoami,
        needs_caller=True,
    ),
}


@hookimpl
def gateway_register_tools(register: Any) -> None:
    for name, tool in TOOLS.items():
        register(name, tool)
