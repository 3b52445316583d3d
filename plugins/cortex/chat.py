"""One cortex answer: the model is asked with the caller's read-only tools, tool calls are
run as the caller and their results handed back, until the model answers in text. Every
step is a typed SSE event; the stream always ends with ``done`` or ``error``, unless the
client left (the model call is then cancelled with the stream)."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from quart import Quart

from host.api import GatewayError, ToolError, call_tool, context, now_ms
from plugins.cortex.config import CortexConfig
from plugins.cortex.tables import chats
from plugins.cortex.tools import ASKING, BY_NAME, Caller, CortexTool, checked_args

log = logging.getLogger("gateway.cortex")

SYSTEM = (
    "You are the cortex, the operator copilot of an agent gateway. Answer questions about "
    "the gateway's state (its status, pipeline runs and their steps, approvals, jobs, the "
    "audit log) from the tools you are given, which read the gateway as the person asking. "
    "Call a tool rather than guess; quote ids, statuses and error messages exactly as the "
    "tools return them. If a tool answers 404 or 403, say the object does not exist or is "
    "not visible to them. Be brief."
)


def sse(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, default=str)}\n\n".encode()


@dataclass
class Readiness:
    """The model's reachability as this process last saw it."""

    reachable: bool | None = None
    checked_ms: int | None = None
    error: str | None = None

    def saw(self, ok: bool, error: str | None = None) -> None:
        self.reachable, self.checked_ms, self.error = ok, now_ms(), error


@dataclass
class Chat:
    app: Quart
    caller: Caller
    catalog: Any  # openai_compat's ModelCatalog
    model: str
    config: CortexConfig
    tools: list[CortexTool]
    readiness: Readiness
    messages: list[dict[str, Any]] = field(default_factory=list)
    chat_id: str = field(default_factory=lambda: f"cx_{uuid.uuid4().hex[:24]}")
    tool_calls: int = 0
    started_ms: int = field(default_factory=now_ms)

    async def events(self) -> AsyncIterator[bytes]:
        outcome, code = "cancelled", None
        try:
            yield sse(
                "cortex.started",
                {
                    "chat_id": self.chat_id,
                    "model": self.model,
                    "tools": [t.name for t in self.tools],
                },
            )
            try:
                async with asyncio.timeout(self.config.timeout_seconds):
                    async for event in self._rounds():
                        yield event
                outcome = "done"
                yield sse("done", {"chat_id": self.chat_id, "tool_calls": self.tool_calls})
            except TimeoutError:
                outcome, code = "error", "cortex_timeout"
                message = f"no answer within {self.config.timeout_seconds:g} s"
                yield sse("error", {"code": code, "message": message})
            except _Failed as exc:
                outcome, code = "error", exc.code
                yield sse("error", {"code": exc.code, "message": exc.message})
            except Exception as exc:  # the stream must still end with a typed event
                log.exception("cortex chat %s failed", self.chat_id)
                outcome, code = "error", "cortex_failed"
                yield sse("error", {"code": code, "message": f"{type(exc).__name__}: {exc}"})
        finally:
            self._keep(outcome, code)

    async def _rounds(self) -> AsyncIterator[bytes]:
        specs = [t.spec() for t in self.tools]
        for round_no in range(self.config.max_tool_rounds + 1):
            body: dict[str, Any] = {"model": self.model, "messages": self.messages, "stream": True}
            if specs and round_no < self.config.max_tool_rounds:
                body["tools"] = specs
            text: list[str] = []
            calls: dict[int, dict[str, Any]] = {}
            async for chunk in self._stream(body):
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if delta.get("content"):
                        text.append(delta["content"])
                        yield sse("message.delta", {"text": delta["content"]})
                    for part in delta.get("tool_calls") or []:
                        into = calls.setdefault(
                            part.get("index", 0), {"id": None, "name": "", "arguments": ""}
                        )
                        fn = part.get("function") or {}
                        into["id"] = part.get("id") or into["id"]
                        into["name"] += fn.get("name") or ""
                        into["arguments"] += fn.get("arguments") or ""
            if not calls:
                yield sse("message.completed", {"text": "".join(text)})
                return
            ordered = [calls[i] for i in sorted(calls)]
            for i, call in enumerate(ordered):
                call["id"] = call["id"] or f"call_{round_no}_{i}"
            self.messages.append(
                {
                    "role": "assistant",
                    "content": "".join(text) or None,
                    "tool_calls": [
                        {
                            "id": c["id"],
                            "type": "function",
                            "function": {"name": c["name"], "arguments": c["arguments"] or "{}"},
                        }
                        for c in ordered
                    ],
                }
            )
            for call in ordered:
                self.tool_calls += 1
                yield sse(
                    "tool.call",
                    {"id": call["id"], "name": call["name"], "arguments": call["arguments"]},
                )
                status, result = await self._run_tool(call)
                content = json.dumps({"status": status, "body": result}, default=str)
                cut = content[: self.config.max_tool_result_chars]
                yield sse(
                    "tool.result",
                    {
                        "id": call["id"],
                        "name": call["name"],
                        "status": status,
                        "ok": 200 <= status < 300,
                        "truncated": len(cut) < len(content),
                    },
                )
                self.messages.append({"role": "tool", "tool_call_id": call["id"], "content": cut})
        raise _Failed(
            "max_tool_rounds",
            f"the model kept calling tools for {self.config.max_tool_rounds} rounds",
        )

    async def _stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        from plugins.openai_compat.contract import ProviderError

        try:
            async for chunk in self.catalog.chat_stream(self.model, body):
                yield chunk
        except ProviderError as exc:
            self.readiness.saw(False, f"{exc.code}: {exc.message}")
            raise _Failed(exc.code, exc.message) from None
        except GatewayError as exc:
            raise _Failed(exc.code, exc.message) from None
        self.readiness.saw(True)

    async def _run_tool(self, call: dict[str, Any]) -> tuple[int, Any]:
        tool = BY_NAME.get(call["name"])
        if tool is None or tool not in self.tools:
            return 404, {"error": f"no tool {call['name']!r} is available to you"}
        args = checked_args(tool, call["arguments"])
        if isinstance(args, str):
            return 400, {"error": args}
        caller = {
            "kind": "cortex",
            "principal": self.caller.principal.key,
            "chat_id": self.chat_id,
        }
        token = ASKING.set((self.app, self.caller))
        try:
            result = await call_tool(context(self.app), tool.name, args, caller=caller)
        except ToolError as exc:
            return (404 if exc.code == "tool_not_found" else 400), {"error": exc.message}
        finally:
            ASKING.reset(token)
        return int(result["status"]), result["body"]

    def _keep(self, outcome: str, code: str | None) -> None:
        """Record the chat for the status's last use, in a task of its own: a stream
        cancelled by its client cannot await anything more."""
        values = {
            "id": self.chat_id,
            "owner": self.caller.principal.key,
            "model": self.model,
            "outcome": outcome,
            "error_code": code,
            "tool_calls": self.tool_calls,
            "started_ms": self.started_ms,
            "finished_ms": now_ms(),
        }

        async def write() -> None:
            try:
                async with context(self.app).store.write() as conn:
                    await conn.execute(chats.insert().values(**values))
            except Exception:
                log.exception("could not record cortex chat %s", self.chat_id)

        pending: set[asyncio.Task[None]] = context(self.app).extras.setdefault(
            "cortex.writes", set()
        )
        task = asyncio.get_running_loop().create_task(write())
        pending.add(task)
        task.add_done_callback(pending.discard)


class _Failed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
