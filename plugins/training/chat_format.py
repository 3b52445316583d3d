"""The OpenAI fine-tuning chat format, checked before a line is written: an export holds
only lines a fine-tuning job accepts (a rollout that does not fit is counted as skipped)."""

from __future__ import annotations

import json
import re
from typing import Any

NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
ROLES = {"system", "developer", "user", "assistant", "tool"}


def problem(line: dict[str, Any]) -> str | None:
    """What makes ``line`` unfit for fine-tuning, or None when it fits."""
    messages = line.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages must be a non-empty list"
    called: set[str] = set()
    assistants = 0
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            return f"{where}: role must be one of {sorted(ROLES)}"
        role, content = message["role"], message.get("content")
        if role == "assistant":
            assistants += 1
            calls = message.get("tool_calls")
            if calls:
                for call in calls:
                    fn = call.get("function") or {}
                    if call.get("type") != "function" or not isinstance(call.get("id"), str):
                        return f"{where}: a tool call needs an id and type function"
                    if not isinstance(fn.get("name"), str) or not NAME.match(fn["name"]):
                        return f"{where}: tool call name {fn.get('name')!r} is not a valid name"
                    try:
                        json.loads(fn.get("arguments"))  # type: ignore[arg-type]
                    except (TypeError, ValueError):
                        return f"{where}: tool call arguments must be a JSON string"
                    called.add(call["id"])
                if content is not None and not isinstance(content, str):
                    return f"{where}: content must be a string or null"
                continue
            if not isinstance(content, str):
                return f"{where}: an assistant message needs string content or tool_calls"
        elif role == "tool":
            if message.get("tool_call_id") not in called:
                return f"{where}: tool_call_id answers no earlier tool call"
            if not isinstance(content, str):
                return f"{where}: content must be a string"
        elif role == "user":
            if not isinstance(content, str | list):
                return f"{where}: content must be a string or a list of parts"
        elif not isinstance(content, str):
            return f"{where}: content must be a string"
    if not assistants:
        return "at least one assistant message is needed"
    tools = line.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            return "tools must be a list"
        for tool in tools:
            fn = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(fn, dict) or tool.get("type") != "function":
                return "each tool is {type: function, function: {...}}"
            if not NAME.match(str(fn.get("name"))):
                return f"tool name {fn.get('name')!r} is not a valid name"
    return None


def line_of(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> dict[str, Any]:
    line: dict[str, Any] = {"messages": messages}
    if tools:
        line["tools"] = tools
    return line
