"""Tools of a plugin for the ``/mcp`` tests: ``danger.delete``, which the tests put under
``[tools.approval]`` and which writes each execution as a line to the file
``$GATEWAY_TEST_DELETIONS`` (so a test counts them), and one that reports its caller
(what ``call_tool`` was given)."""

from __future__ import annotations

import os
from typing import Any

from host.api import Tool, hookimpl


def guarded(target: str) -> str:
    log = os.environ.get("GATEWAY_TEST_DELETIONS")
    if log:
        with open(log, "a", encoding="utf-8") as out:
            out.write(target + "\n")
    return f"deleted {target}"


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
        blocking=True,
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
