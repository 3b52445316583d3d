"""Conversation records for ``gateway_record_conversation``: the seam the sessions plugin
implements to keep the exchanges of a session.

An exchange has a session key when the client names one (``metadata.session_id``, on
chat completions and Responses) or, for the Responses API, by its chain: a response
continued with ``previous_response_id`` keeps the key of the response it continues, and
a response that starts a chain is keyed by its own id. A chat completion with a ``user``
and no ``metadata.session_id`` is keyed by that user and the conversation's opening (its
system messages and first user message): one end user has many conversations, and a
chat client resends the whole history each turn, so every turn of one conversation gets
the same key (``user:<user>:<digest>``, see :func:`chat_session_key`) and another
conversation of the same user another. Nothing is built or sent unless a plugin
implements the hook, and only exchanges the model answered are recorded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from quart import Quart, current_app

from host.api import context, current_principal, now_ms, owner_key

log = logging.getLogger("gateway.openai_compat")

HOOK = "gateway_record_conversation"
SESSION_ID = "session_id"


def session_id_of(metadata: dict[str, str] | None) -> str | None:
    """The session key a client named in ``metadata.session_id`` (empty counts as none)."""
    return (metadata or {}).get(SESSION_ID) or None


_SAFE_USER = re.compile(r"[A-Za-z0-9._-]{1,64}")


def chat_session_key(
    metadata: dict[str, str] | None, user: str | None, messages: list[dict[str, Any]]
) -> str | None:
    """A chat completion's session key: ``metadata.session_id``, else, with a ``user``,
    ``user:<user>:<digest of the opening>`` (a user name outside ``A-Z a-z 0-9 . _ -`` or
    longer than 64 is itself a digest), else None (not recorded)."""
    named = session_id_of(metadata)
    if named is not None or not user:
        return named
    opening: list[Any] = []
    for message in messages:
        opening.append([message.get("role"), message.get("content")])
        if message.get("role") == "user":
            break
    digest = hashlib.sha256(
        json.dumps(opening, sort_keys=True, default=str).encode("utf-8")
    ).hexdigest()[:16]
    who = user if _SAFE_USER.fullmatch(user) else hashlib.sha256(user.encode()).hexdigest()[:16]
    return f"user:{who}:{digest}"


@dataclass
class Recorder:
    """One exchange on its way to the hook. Built in the view (the request context is gone
    by the time a stream ends); ``feed`` assembles a streamed chat answer."""

    app: Quart
    record: dict[str, Any]
    _content: list[str] = field(default_factory=list)
    _calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    _finish: str | None = None
    _usage: dict[str, Any] | None = None
    _id: str | None = None

    @classmethod
    def start(
        cls,
        api: str,
        session_key: str | None,
        *,
        model: str,
        input: list[dict[str, Any]],
        metadata: dict[str, str] | None,
        user: str | None,
        previous_response_id: str | None = None,
        instructions: str | None = None,
    ) -> Recorder | None:
        """A recorder, or None when there is no session key or nobody listens."""
        if session_key is None or not listening():
            return None
        return cls(
            current_app._get_current_object(),  # type: ignore[attr-defined]
            {
                "session_key": session_key,
                "api": api,
                "model": model,
                "response_id": None,
                "previous_response_id": previous_response_id,
                "principal": current_principal().name,
                "owner": owner_key(current_principal()),
                "user": user,
                "metadata": dict(metadata or {}),
                "instructions": instructions,
                "input": [dict(m) for m in input],
                "output": [],
                "usage": None,
                "status": "completed",
                "created_ms": now_ms(),
            },
        )

    # -- chat completions --------------------------------------------------------------

    async def chat_completed(self, result: dict[str, Any]) -> None:
        choice = (result.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        await self.send(
            response_id=result.get("id"),
            output=[message] if message else [],
            usage=result.get("usage"),
            status=_status(choice.get("finish_reason")),
        )

    def feed(self, chunk: dict[str, Any]) -> None:
        """Take one streamed ``chat.completion.chunk`` (as the client received it)."""
        self._id = self._id or chunk.get("id")
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                self._content.append(delta["content"])
            for call in delta.get("tool_calls") or []:
                into = self._calls.setdefault(
                    call.get("index", 0), {"id": None, "type": "function", "function": {}}
                )
                into["id"] = call.get("id") or into["id"]
                fn = call.get("function") or {}
                if fn.get("name"):
                    into["function"]["name"] = fn["name"]
                if fn.get("arguments"):
                    args = into["function"].get("arguments", "")
                    into["function"]["arguments"] = args + fn["arguments"]
            self._finish = choice.get("finish_reason") or self._finish

    async def chat_stream_completed(self) -> None:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self._content) or None}
        if self._calls:
            message["tool_calls"] = [self._calls[i] for i in sorted(self._calls)]
        await self.send(
            response_id=self._id, output=[message], usage=self._usage, status=_status(self._finish)
        )

    # -- both --------------------------------------------------------------------------

    async def send(self, **fields: Any) -> None:
        record = {**self.record, **fields}
        await context(self.app).plugins.call_async(
            HOOK, app=self.app, record=record, log_errors=True
        )


def listening() -> bool:
    return context().plugins.has_impls(HOOK)


def _status(finish_reason: str | None) -> str:
    return "incomplete" if finish_reason == "length" else "completed"
