"""``echo``: a deterministic offline provider for the demo and for tests.

It answers with the text of the last user message, prefixed ``echo: ``, streamed word by
word and cut at ``max_tokens`` words (``finish_reason: "length"`` when it was cut). With
tools offered and a user message last, it calls the first tool with
``{"input": <the message>}``; after a tool result it reports what the tool returned.
Token counts are word counts. It is named as an echo model in ``/v1/models``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from plugins.openai_compat.providers.base import ModelRoute, Provider


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict)
        ).strip()
    return ""


def _words(text: str) -> int:
    return len(text.split())


class EchoProvider(Provider):
    name = "echo"
    description = "deterministic offline echo model (for demos and tests; not a language model)"

    def _reply(self, body: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]], str]:
        """The reply text, its tool calls, and its finish reason."""
        messages = body.get("messages") or []
        last = messages[-1] if messages else {}
        tools = body.get("tools") or []
        if last.get("role") == "tool":
            name = next(
                (
                    call["function"]["name"]
                    for m in reversed(messages)
                    for call in (m.get("tool_calls") or [])
                    if call.get("id") == last.get("tool_call_id")
                ),
                "tool",
            )
            return f"echo: {name} returned {_text_of(last.get('content'))}", [], "stop"
        text = _text_of(last.get("content"))
        if tools and body.get("tool_choice") != "none" and last.get("role") == "user":
            fn = tools[0].get("function", {})
            call = {
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {
                    "name": fn.get("name", "tool"),
                    "arguments": json.dumps({"input": text}),
                },
            }
            return None, [call], "tool_calls"
        reply = f"echo: {text}" if text else "echo:"
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        reply, finish = _cut(reply, max_tokens, body.get("stop"))
        return reply, [], finish

    def _usage(self, body: dict[str, Any], reply: str | None) -> dict[str, int]:
        prompt = sum(_words(_text_of(m.get("content"))) for m in body.get("messages") or [])
        completion = _words(reply or "")
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    async def chat(self, route: ModelRoute, body: dict[str, Any]) -> dict[str, Any]:
        reply, calls, finish = self._reply(body)
        message: dict[str, Any] = {"role": "assistant", "content": reply}
        if calls:
            message["tool_calls"] = calls
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", route.upstream_model),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": finish,
                }
            ],
            "usage": self._usage(body, reply),
        }

    async def chat_stream(
        self, route: ModelRoute, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        reply, calls, finish = self._reply(body)
        base = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model", route.upstream_model),
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        yield chunk({"role": "assistant", "content": ""})
        if calls:
            for i, call in enumerate(calls):
                yield chunk({"tool_calls": [{"index": i, **call}]})
        else:
            words = (reply or "").split(" ")
            for i, word in enumerate(words):
                yield chunk({"content": word if i == 0 else " " + word})
        yield chunk({}, finish)
        if (body.get("stream_options") or {}).get("include_usage"):
            yield {**base, "choices": [], "usage": self._usage(body, reply)}

    async def completion(self, route: ModelRoute, body: dict[str, Any]) -> dict[str, Any]:
        text, finish = self._completion_text(body)
        prompt_words = _words(_prompt_text(body.get("prompt")))
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.get("model", route.upstream_model),
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
            "usage": {
                "prompt_tokens": prompt_words,
                "completion_tokens": _words(text),
                "total_tokens": prompt_words + _words(text),
            },
        }

    async def completion_stream(
        self, route: ModelRoute, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        text, finish = self._completion_text(body)
        base = {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.get("model", route.upstream_model),
        }
        words = text.split(" ")
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            yield {**base, "choices": [{"index": 0, "text": piece, "finish_reason": None}]}
        yield {**base, "choices": [{"index": 0, "text": "", "finish_reason": finish}]}

    def _completion_text(self, body: dict[str, Any]) -> tuple[str, str]:
        text = f" echo: {_prompt_text(body.get('prompt'))}".rstrip()
        return _cut(text, body.get("max_tokens"), body.get("stop"), lead=" ")


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, list):
        return " ".join(str(p) for p in prompt)
    return str(prompt or "")


def _cut(reply: str, max_tokens: Any, stop: Any, lead: str = "") -> tuple[str, str]:
    """``reply`` cut at ``max_tokens`` words (finish reason ``length``: it was cut), then
    at the first stop sequence (``stop``), and its finish reason."""
    finish = "stop"
    if max_tokens:
        words = reply.split()
        finish = "length" if len(words) > int(max_tokens) else finish
        reply = lead + " ".join(words[: int(max_tokens)])
    for sequence in _stops(stop):
        if sequence and sequence in reply:
            reply, finish = reply[: reply.index(sequence)], "stop"
    return reply, finish


def _stops(stop: Any) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else [str(s) for s in stop]
