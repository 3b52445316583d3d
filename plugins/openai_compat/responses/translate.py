"""Responses <-> chat completions: the gateway serves the Responses API over upstreams
that only speak chat completions (most local servers), by translating both ways."""

from __future__ import annotations

import secrets
import time
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from host.api import GatewayError, validation_message
from plugins.openai_compat.responses.bodies import (
    FunctionCallInput,
    FunctionCallOutputInput,
    ResponsesRequest,
    ResponsesTool,
    has_images,
    user_parts,
)

Item = TypeVar("Item", bound=BaseModel)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


def _part_text(part: dict[str, Any], field: str, where: str) -> str:
    """A content part's text ``field``: a string, or 400 naming it (never ``"None"``)."""
    text = part.get(field)
    if not isinstance(text, str):
        got = "missing" if text is None else f"a {type(text).__name__}"
        raise GatewayError(
            400,
            "invalid_request_body",
            f"{where}.{field}: must be a string (got {got})",
            param=f"{where}.{field}",
        )
    return text


def _text_parts(content: Any, where: str, refusals: list[str] | None = None) -> str:
    """The text of ``content`` (a string or text parts; ``where`` names it, as
    ``input.0.content``). With ``refusals`` (an assistant message), ``refusal`` parts are
    accepted too and their text is added to it."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise GatewayError(
            400, "invalid_request_body", f"{where}: must be text or parts", param=where
        )
    texts = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else type(part).__name__
        if kind == "refusal" and refusals is not None:
            refusals.append(_part_text(part, "refusal", f"{where}.{i}"))
        elif kind in ("input_text", "output_text"):
            texts.append(_part_text(part, "text", f"{where}.{i}"))
        else:
            known = (
                "input_text and output_text"
                if refusals is None
                else "input_text, output_text and refusal"
            )
            raise GatewayError(
                400,
                "unsupported_parameter",
                f"{where}.{i}: content part type {kind!r} is not supported ({known} are)",
                param=where,
            )
    return "".join(texts)


def _item(model: type[Item], item: dict[str, Any], i: int) -> Item:
    try:
        return model.model_validate(item)
    except ValidationError as exc:
        message, field = validation_message(exc, prefix=f"input.{i}.", given=item)
        raise GatewayError(400, "invalid_request_body", message, param=field) from exc


def input_to_messages(
    items: str | list[dict[str, Any]], earlier: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Responses ``input`` items as chat messages. A ``function_call_output`` must answer
    a ``function_call`` before it: in ``earlier`` (the stored conversation) or the input."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    calls = {call["id"] for m in earlier or [] for call in m.get("tool_calls") or []}
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        where = f"input.{i}"
        if not isinstance(item, dict):
            raise GatewayError(
                400, "invalid_request_body", f"{where}: must be an object", param=where
            )
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "system", "developer", "assistant"):
                raise GatewayError(
                    400,
                    "invalid_request_body",
                    f"{where}.role: invalid role",
                    param=f"{where}.role",
                )
            if role == "user" and has_images(item.get("content")):  # chat content parts
                parts = user_parts(item["content"], f"{where}.content")
                messages.append({"role": role, "content": parts})
                continue
            refusals: list[str] | None = [] if role == "assistant" else None
            text = _text_parts(item.get("content"), f"{where}.content", refusals)
            if refusals:  # an assistant message given back with its refusal
                messages.append(assistant_message(text, "".join(refusals)))
            else:
                messages.append({"role": role, "content": text})
        elif kind == "function_call":
            made = _item(FunctionCallInput, item, i)
            calls.add(made.call_id)
            call = {
                "id": made.call_id,
                "type": "function",
                "function": {"name": made.name, "arguments": made.arguments},
            }
            if messages and messages[-1]["role"] == "assistant" and messages[-1].get("tool_calls"):
                messages[-1]["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            result = _item(FunctionCallOutputInput, item, i)
            if result.call_id not in calls:
                raise GatewayError(
                    400,
                    "invalid_request_body",
                    f"{where}.call_id: {result.call_id!r} answers no function_call of the "
                    "input or of the previous response",
                    param=f"{where}.call_id",
                )
            output = result.output
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": result.call_id,
                    "content": output
                    if isinstance(output, str)
                    else _text_parts(output, f"{where}.output"),
                }
            )
        else:
            raise GatewayError(
                400,
                "unsupported_parameter",
                f"{where}.type: input item type {kind!r} is not supported "
                "(message, function_call, function_call_output are)",
                param=f"{where}.type",
            )
    return messages


def tools_to_chat(tools: list[ResponsesTool] | None) -> list[dict[str, Any]] | None:
    if not tools:
        return None
    return [
        {"type": "function", "function": tool.model_dump(exclude={"type"}, exclude_none=True)}
        for tool in tools
    ]


def tool_choice_to_chat(choice: str | dict[str, Any] | None) -> Any:
    if isinstance(choice, dict):  # validated: {"type": "function", "name": ...}
        return {"type": "function", "function": {"name": choice["name"]}}
    return choice


def chat_body(req: ResponsesRequest, history: list[dict[str, Any]]) -> dict[str, Any]:
    """The chat-completions request for a Responses request, after ``history`` (the stored
    conversation of ``previous_response_id``)."""
    messages = []
    if req.instructions:
        messages.append({"role": "system", "content": req.instructions})
    messages += history
    messages += input_to_messages(req.input, history)
    body: dict[str, Any] = {"messages": messages}
    text_format = req.text.format if req.text else None
    response_format = text_format.response_format() if text_format else None
    if response_format:
        body["response_format"] = response_format.model_dump(exclude_none=True, by_alias=True)
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
    body.update(req.chat_parameters())  # reasoning_effort, service_tier...
    return body


def message_item(
    item_id: str, parts: list[dict[str, Any]], status: str = "completed"
) -> dict[str, Any]:
    """An assistant message item with its content ``parts`` (``output_text`` and
    ``refusal``, in the order the model gave them); ``in_progress`` (just added) has
    none yet, ``incomplete`` was cut off."""
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": [] if status == "in_progress" else parts,
    }


def output_text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def refusal_part(refusal: str) -> dict[str, Any]:
    return {"type": "refusal", "refusal": refusal}


def assistant_message(text: str, refusal: str = "") -> dict[str, Any]:
    """A chat assistant message; a refusal goes in its own field, as chat carries it."""
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if refusal:
        message["refusal"] = refusal
    return message


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


def output_from_chat(message: dict[str, Any], cut_off: bool = False) -> list[dict[str, Any]]:
    """A chat completion's message as output items; ``cut_off`` (the upstream stopped at
    its token limit) makes the last item ``incomplete``."""
    items: list[dict[str, Any]] = []
    text = message.get("content")
    if isinstance(text, list):
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    # Chat keeps no order between the two fields: the text, then the refusal.
    parts = [output_text_part(text)] if text else []
    if message.get("refusal"):
        parts.append(refusal_part(str(message["refusal"])))
    if parts:
        items.append(message_item(new_id("msg"), parts))
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
    if cut_off and items:
        items[-1]["status"] = "incomplete"
    return items


def output_to_messages(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A response's output items as the assistant turn of the stored conversation (its
    refusals in the chat message's ``refusal``, so a continuation replays them as such)."""
    parts = [
        part for item in output if item.get("type") == "message" for part in item.get("content", [])
    ]
    text = "".join(p.get("text", "") for p in parts if p.get("type") == "output_text")
    refusal = "".join(p.get("refusal", "") for p in parts if p.get("type") == "refusal")
    calls = [
        {
            "id": item["call_id"],
            "type": "function",
            "function": {"name": item["name"], "arguments": item["arguments"]},
        }
        for item in output
        if item.get("type") == "function_call"
    ]
    if not text and not refusal and not calls:
        return []
    message = assistant_message(text, refusal)
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


def text_format(req: ResponsesRequest) -> dict[str, Any]:
    """The ``text.format`` a response echoes: the request's, or plain text."""
    if req.text is None or req.text.format is None:
        return {"type": "text"}
    return req.text.format.model_dump(exclude_none=True, by_alias=True)


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
        # Every field of a FunctionTool, null where the request gave none (the spec
        # requires them all).
        "tools": [tool.model_dump() for tool in req.tools or []],
        "tool_choice": req.tool_choice if req.tool_choice is not None else "auto",
        "truncation": req.truncation or "disabled",
        "parallel_tool_calls": req.parallel_tool_calls
        if req.parallel_tool_calls is not None
        else True,
        "text": {"format": text_format(req)},
        "top_p": req.top_p if req.top_p is not None else 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "top_logprobs": req.top_logprobs or 0,
        "temperature": req.temperature if req.temperature is not None else 1.0,
        "reasoning": req.reasoning.model_dump() if req.reasoning else None,
        "usage": usage,
        "max_output_tokens": req.max_output_tokens,
        "max_tool_calls": req.max_tool_calls,
        "store": req.store,
        "background": False,
        "service_tier": req.service_tier or "default",
        "metadata": req.metadata or {},
        "safety_identifier": req.safety_identifier,
        "prompt_cache_key": req.prompt_cache_key,
        "user": req.user,
    }
