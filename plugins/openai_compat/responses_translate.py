"""Responses <-> chat completions: the gateway serves the Responses API over upstreams
that only speak chat completions (most local servers), by translating both ways."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from host.errors import GatewayError
from plugins.openai_compat.responses_models import ResponsesRequest


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


def _text_parts(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise GatewayError(
            400, "invalid_request_body", f"{where}: content must be text or parts", param=where
        )
    texts = []
    for i, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text"):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise GatewayError(
                400,
                "unsupported_parameter",
                f"{where}.content[{i}]: content part type {kind!r} is not supported "
                "(input_text and output_text are)",
                param=f"{where}.content",
            )
        texts.append(str(part.get("text", "")))
    return "".join(texts)


def input_to_messages(items: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Responses ``input`` items as chat messages."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise GatewayError(
                400, "invalid_request_body", f"{where}: must be an object", param="input"
            )
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "system", "developer", "assistant"):
                raise GatewayError(
                    400, "invalid_request_body", f"{where}.role: invalid role", param="input"
                )
            messages.append({"role": role, "content": _text_parts(item.get("content"), where)})
        elif kind == "function_call":
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments", "")},
            }
            if messages and messages[-1]["role"] == "assistant" and messages[-1].get("tool_calls"):
                messages[-1]["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            if not item.get("call_id"):
                raise GatewayError(
                    400, "invalid_request_body", f"{where}.call_id is required", param="input"
                )
            output = item.get("output")
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": item["call_id"],
                    "content": output if isinstance(output, str) else json.dumps(output),
                }
            )
        else:
            raise GatewayError(
                400,
                "unsupported_parameter",
                f"{where}.type: input item type {kind!r} is not supported "
                "(message, function_call, function_call_output are)",
                param="input",
            )
    return messages


def tools_to_chat(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    if not tools:
        return None
    out = []
    for i, tool in enumerate(tools):
        if tool.get("type") != "function":
            raise GatewayError(
                400,
                "unsupported_parameter",
                f"tools[{i}].type: only function tools are supported, got {tool.get('type')!r}",
                param="tools",
            )
        fn = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
        if not fn.get("name"):
            raise GatewayError(
                400, "invalid_request_body", f"tools[{i}].name is required", param="tools"
            )
        out.append({"type": "function", "function": fn})
    return out


def tool_choice_to_chat(choice: str | dict[str, Any] | None) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    return choice


def chat_body(req: ResponsesRequest, history: list[dict[str, Any]]) -> dict[str, Any]:
    """The chat-completions request for a Responses request, after ``history`` (the stored
    conversation of ``previous_response_id``)."""
    messages = []
    if req.instructions:
        messages.append({"role": "system", "content": req.instructions})
    messages += history
    messages += input_to_messages(req.input)
    body: dict[str, Any] = {"messages": messages}
    tools = tools_to_chat(req.tools)
    if tools:
        body["tools"] = tools
        if req.tool_choice is not None:
            body["tool_choice"] = tool_choice_to_chat(req.tool_choice)
        if req.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = req.parallel_tool_calls
    for src, dst in (
        ("max_output_tokens", "max_tokens"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("user", "user"),
    ):
        value = getattr(req, src)
        if value is not None:
            body[dst] = value
    return body


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": [output_text_part(text)] if status == "completed" else [],
    }


def output_text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def function_call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str = "completed"
) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def output_from_chat(message: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    text = message.get("content")
    if isinstance(text, list):
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    if text:
        items.append(message_item(new_id("msg"), text))
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        items.append(
            function_call_item(
                new_id("fc"),
                call.get("id") or new_id("call"),
                fn.get("name", ""),
                fn.get("arguments", ""),
            )
        )
    return items


def output_to_messages(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A response's output items as the assistant turn of the stored conversation."""
    text = "".join(
        part.get("text", "")
        for item in output
        if item.get("type") == "message"
        for part in item.get("content", [])
    )
    calls = [
        {
            "id": item["call_id"],
            "type": "function",
            "function": {"name": item["name"], "arguments": item["arguments"]},
        }
        for item in output
        if item.get("type") == "function_call"
    ]
    if not text and not calls:
        return []
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls
    return [message]


def usage_from_chat(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if not usage:
        return None
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": int(usage.get("total_tokens") or prompt + completion),
    }


def response_resource(
    req: ResponsesRequest,
    response_id: str,
    model: str,
    *,
    status: str,
    output: list[dict[str, Any]] | None = None,
    usage: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    incomplete_reason: str | None = None,
    created_at: int | None = None,
) -> dict[str, Any]:
    """A ``response`` object with every ResponseResource field (null where n/a)."""
    done = status in ("completed", "failed", "incomplete")
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at or int(time.time()),
        "completed_at": int(time.time()) if done else None,
        "status": status,
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "model": model,
        "previous_response_id": req.previous_response_id,
        "instructions": req.instructions,
        "output": output or [],
        "error": error,
        "tools": req.tools or [],
        "tool_choice": req.tool_choice if req.tool_choice is not None else "auto",
        "truncation": "disabled",
        "parallel_tool_calls": req.parallel_tool_calls
        if req.parallel_tool_calls is not None
        else True,
        "text": {"format": {"type": "text"}},
        "top_p": req.top_p if req.top_p is not None else 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "top_logprobs": 0,
        "temperature": req.temperature if req.temperature is not None else 1.0,
        "reasoning": None,
        "usage": usage,
        "max_output_tokens": req.max_output_tokens,
        "max_tool_calls": None,
        "store": req.store,
        "background": False,
        "service_tier": "default",
        "metadata": req.metadata or {},
        "safety_identifier": None,
        "prompt_cache_key": None,
        "user": req.user,
    }
