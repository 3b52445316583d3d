"""``reverse``: a model provider that answers with the words of the last user message in
reverse order. Offline and deterministic, like the built-in ``echo``; a model uses it
with ``[models.<name>] provider = "reverse"``."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from plugins.openai_compat.contract import ModelRoute, Provider, ProviderError

NAME = "reverse"


def reversed_words(body: dict[str, Any]) -> str:
    """The last user message's words, last first; 400 when there is no text to turn."""
    users = [m for m in body.get("messages") or [] if m.get("role") == "user"]
    content = users[-1].get("content") if users else None
    if not isinstance(content, str) or not content.strip():
        raise ProviderError(400, "invalid_request", "the reverse model needs a user message")
    return " ".join(reversed(content.split()))


def _usage(body: dict[str, Any], reply: str) -> dict[str, int]:
    prompt = sum(len(str(m.get("content") or "").split()) for m in body.get("messages") or [])
    completion = len(reply.split())
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


class ReverseProvider(Provider):
    name = NAME
    description = "answers with the words of the last user message, last word first"
    supports_tools = False

    async def chat(self, route: ModelRoute, body: dict[str, Any]) -> dict[str, Any]:
        reply = reversed_words(body)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", route.upstream_model),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply},
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage(body, reply),
        }

    async def chat_stream(
        self, route: ModelRoute, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        reply = reversed_words(body)
        base = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model", route.upstream_model),
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        yield chunk({"role": "assistant", "content": ""})
        for i, word in enumerate(reply.split(" ")):
            yield chunk({"content": word if i == 0 else " " + word})
        yield chunk({}, "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            yield {**base, "choices": [], "usage": _usage(body, reply)}
