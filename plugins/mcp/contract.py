"""What a tool author imports from the MCP plugin: nothing else of it is public.

A tool in the gateway's registry (``gateway_register_tools``) is an MCP tool on ``/mcp``.
While it runs for an MCP caller it may report progress and log to that caller; outside
an MCP call (a pipeline's ``tool`` step, an agent) both are no-ops, so one tool serves
every caller. A tool whose answer is more than text or JSON (an image, audio, an
embedded resource) returns :class:`Content`; any other result becomes text (a string as
it is, anything else as JSON, an object also as ``structuredContent``).
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MCP_STREAM", "Content", "McpCall", "current_call", "log_message", "report_progress"]

# The event stream of the MCP server's calls (``mcp.tool_call``, each with an audit block).
MCP_STREAM = "mcp"


@dataclass(frozen=True)
class Content:
    """A tool result as MCP content blocks, each a dict as the MCP specification writes
    it (``{"type": "image", "data": "<base64>", "mimeType": "image/png"}``), with
    ``structured`` as its ``structuredContent`` and ``is_error`` as ``isError``. Other
    callers than ``/mcp`` see the object itself."""

    blocks: list[dict[str, Any]]
    structured: dict[str, Any] | None = None
    is_error: bool = False


@dataclass(frozen=True)
class McpCall:
    """The ``tools/call`` a tool runs for: its caller's session and its back-channel."""

    tool: str
    session_id: str | None
    progress: Callable[[float, float | None, str | None], Awaitable[None]]
    log: Callable[[str, Any], Awaitable[None]]
    meta: dict[str, Any] = field(default_factory=dict)


_CURRENT: contextvars.ContextVar[McpCall | None] = contextvars.ContextVar(
    "gateway_mcp_call", default=None
)


def current_call() -> McpCall | None:
    """The MCP call the running tool serves, or None outside one."""
    return _CURRENT.get()


async def report_progress(
    progress: float, total: float | None = None, message: str | None = None
) -> None:
    """A ``notifications/progress`` to the MCP caller (when it asked for progress with a
    ``progressToken``); progress must grow from one report to the next."""
    call = _CURRENT.get()
    if call is not None:
        await call.progress(progress, total, message)


async def log_message(level: str, data: Any) -> None:
    """A ``notifications/message`` (``debug`` ... ``emergency``) to the MCP caller, at or
    above the level it set with ``logging/setLevel`` (``info`` until it sets one)."""
    call = _CURRENT.get()
    if call is not None:
        await call.log(level, data)


def bind(call: McpCall) -> contextvars.Token[McpCall | None]:
    """For the MCP plugin: make ``call`` current while a tool runs."""
    return _CURRENT.set(call)


def unbind(token: contextvars.Token[McpCall | None]) -> None:
    _CURRENT.reset(token)
