"""``gateway_record_conversation`` (declared by the openai_compat plugin): chat
completions with ``metadata.session_id`` and Responses chains become sessions, owned by
the caller (``owner`` in the record), their ``source`` the API (``chat``,
``responses``). A chat client resends the whole conversation each turn: only what the
session does not hold yet is appended (``SessionsStore.record_exchange``)."""

from __future__ import annotations

import json
import logging
from typing import Any

from plugins.sessions.contract import NewMessage
from plugins.sessions.records import flatten_content
from plugins.sessions.service import ROLES, SessionsStore

log = logging.getLogger("gateway.sessions")


def as_message(item: dict[str, Any]) -> NewMessage | None:
    """A chat message (or a Responses input item) as a session message; None for an item
    that is no message."""
    role = item.get("role")
    if item.get("type") == "function_call_output":
        return NewMessage("tool", str(item.get("output") or ""), {"call_id": item.get("call_id")})
    if role == "developer":
        role = "system"
    if role not in ROLES:
        return None
    metadata: dict[str, Any] = {}
    for key in ("tool_calls", "tool_call_id", "name"):
        if item.get(key) is not None:
            metadata[key] = item[key]
    return NewMessage(str(role), flatten_content(item.get("content")), metadata)


async def record(store: SessionsStore, record: dict[str, Any]) -> None:
    owner = record.get("owner") or f"token:{record.get('principal')}"
    api = str(record.get("api") or "chat")
    sent = [m for m in map(as_message, record.get("input") or []) if m is not None]
    # A chain's instructions once, where it starts (each turn may repeat them).
    first = not record.get("previous_response_id")
    if api == "responses" and record.get("instructions") and first:
        sent.insert(0, NewMessage("system", str(record["instructions"]), {"instructions": True}))
    answer = [m for m in map(as_message, record.get("output") or []) if m is not None]
    details = {
        k: record.get(k)
        for k in ("model", "response_id", "previous_response_id", "usage", "status")
        if record.get(k) is not None
    }
    for message in answer:
        message.metadata.update(details)
    json.dumps(details)  # what the hook promises; a surprise fails here, logged, not stored
    await store.record_exchange(
        owner,
        str(record["session_key"]),
        sent,
        answer,
        source=api,
        user=record.get("user"),
        resend_history=api == "chat",
        metadata={"recorded_from": api},
    )
