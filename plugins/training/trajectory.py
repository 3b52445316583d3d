"""Trajectories in the OpenAI chat fine-tuning shape: ``messages`` (system, user,
assistant with ``tool_calls``, tool) and the ``tools`` they call.

A pipeline run becomes: the run's input as the user message, each finished step as an
assistant tool call (named after the step) answered by a tool message holding the step's
output (or error), and the run's output (or its error) as the final assistant message. A
conversation keeps its messages as the model saw them, turn after turn.
"""

from __future__ import annotations

import json
import re
from typing import Any

_NAME = re.compile(r"[^a-zA-Z0-9_-]")
REDACTED = "[REDACTED]"
ROLES = {"system", "developer", "user", "assistant", "tool"}


def tool_name(step_id: str) -> str:
    """A function name the fine-tuning format accepts (``^[a-zA-Z0-9_-]{1,64}$``):
    nested step paths (``review.approve``, ``count[2].tick``) lose their separators."""
    return (_NAME.sub("_", step_id) or "step")[:64]


def dumps(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def mask_keys(value: Any, keys: set[str]) -> tuple[Any, int]:
    """``value`` with the values of ``keys`` (any depth, case-insensitive) replaced by
    ``[REDACTED]``, and how many were replaced."""
    if not keys:
        return value, 0
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        count = 0
        for k, v in value.items():
            if isinstance(k, str) and k.lower() in keys:
                out[k] = REDACTED
                count += 1
            else:
                out[k], n = mask_keys(v, keys)
                count += n
        return out, count
    if isinstance(value, list):
        items = [mask_keys(v, keys) for v in value]
        return [v for v, _ in items], sum(n for _, n in items)
    return value, 0


def run_messages(
    record: dict[str, Any], kinds: dict[str, str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The messages and tools of a finished run (``record``: the run's record as
    ``GET /runs/{id}`` shows it; ``kinds``: step path -> step kind)."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": f"You run the pipeline {record['pipeline_id']}."},
        {"role": "user", "content": dumps(record.get("input") or {})},
    ]
    tools: dict[str, dict[str, Any]] = {}
    for i, step in enumerate(record.get("steps") or []):
        if step.get("status") == "skipped":
            continue
        name = tool_name(step["step_id"])
        call_id = f"call_{i}"
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": "{}"},
                    }
                ],
            }
        )
        result = (
            step.get("output")
            if step.get("status") == "completed"
            else {"error": step.get("error")}
        )
        messages.append({"role": "tool", "tool_call_id": call_id, "content": dumps(result)})
        tools.setdefault(
            name,
            {
                "type": "function",
                "function": {
                    "name": name,
                    "description": f"{kinds.get(step['step_id'], 'pipeline')} step "
                    f"{step['step_id']}",
                    "parameters": {"type": "object", "properties": {}},
                },
            },
        )
    status = record.get("status")
    if status == "completed":
        final = dumps(record.get("output"))
    elif status == "failed":
        error = record.get("error") or {}
        final = f"The run failed: {error.get('message') or dumps(error)}"
    else:
        final = f"The run was {status}."
    messages.append({"role": "assistant", "content": final})
    return messages, list(tools.values())


def _text(content: Any) -> Any:
    """Content parts that are all text become one string (what fine-tuning accepts
    everywhere); other parts stay as they are."""
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") in ("text", "input_text", "output_text")
        for p in content
    ):
        return "".join(str(p.get("text", "")) for p in content)
    return content


def chat_message(message: dict[str, Any]) -> dict[str, Any] | None:
    """One message in the fine-tuning shape, or None for what it cannot hold."""
    role = message.get("role")
    if role not in ROLES:
        return None
    out: dict[str, Any] = {"role": role, "content": _text(message.get("content"))}
    if role == "assistant" and message.get("tool_calls"):
        out["tool_calls"] = [
            {
                "id": call.get("id"),
                "type": "function",
                "function": {
                    "name": (call.get("function") or {}).get("name"),
                    "arguments": (call.get("function") or {}).get("arguments") or "{}",
                },
            }
            for call in message["tool_calls"]
        ]
    if role == "tool":
        out["tool_call_id"] = message.get("tool_call_id")
    if message.get("name") and role in ("user", "assistant", "system"):
        out["name"] = message["name"]
    return out


def conversation_turn(record: dict[str, Any], first: bool) -> list[dict[str, Any]]:
    """The messages one exchange adds: the instructions (first turn only), the new input
    and the model's answer."""
    messages: list[dict[str, Any]] = []
    if first and record.get("instructions"):
        messages.append({"role": "system", "content": str(record["instructions"])})
    for message in [*(record.get("input") or []), *(record.get("output") or [])]:
        if isinstance(message, dict):
            converted = chat_message(message)
            if converted is not None:
                messages.append(converted)
    return messages


def tools_called(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Function definitions for the tools the assistant called (a conversation's record
    carries the calls, not the definitions the client sent)."""
    names: list[str] = []
    for message in messages:
        for call in message.get("tool_calls") or []:
            name = (call.get("function") or {}).get("name")
            if isinstance(name, str) and name not in names:
                names.append(name)
    return [
        {
            "type": "function",
            "function": {"name": n, "parameters": {"type": "object", "properties": {}}},
        }
        for n in names
    ]
