"""The gateway as an MCP server: the SDK's low-level ``Server`` (tools and logging) behind
its ``StreamableHTTPSessionManager`` (sessions, SSE streams, ``DELETE`` termination),
served by the ``/mcp`` view (``routes.py``) through ``bridge.py``.

Who calls: the view puts the authenticated principal in the ASGI scope of each request
(``gateway.principal``) and an SDK ``AuthenticatedUser`` keyed by the principal, so the
session manager binds a session to the principal that opened it (another principal's
``Mcp-Session-Id`` is 404, as an unknown one) and every handler reads the principal of
the very request that carried its message (a reload that changes its gates or
allow-list applies to the next message).

Tools: the tool registry (built-in, plugin and MCP-client tools), through ``call_tool``
like every caller, and the pipelines as ``pipeline.<id>`` (``pipeline_tools.py``), each
filtered by the caller's gates and ``tools = [...]`` allow-list (``access.py``); a tool
the caller may not use is answered as unknown. Every call is audited (an event on the
``mcp`` stream with an ``audit`` block)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import time
import warnings
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from mcp import types
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS

from host.api import (
    GATEWAY_VERSION,
    GatewayContext,
    Principal,
    ToolError,
    call_tool,
    describe_tools,
    owner_key,
)
from plugins.mcp import contract, pipeline_tools
from plugins.mcp.access import allow_list
from plugins.mcp.contract import MCP_STREAM
from plugins.mcp.server_config import ServerSettings, server_settings
from plugins.tools.contract import ToolApprovalProgress, wait_for_tool_approval

log = logging.getLogger(__name__)
PRINCIPAL_SCOPE_KEY = "gateway.principal"
SESSION_HEADER = "mcp-session-id"
LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
DEFAULT_LEVEL = "info"


def scope_for(principal: Principal) -> dict[str, Any]:
    """What the view adds to the ASGI scope of a request to ``/mcp``."""
    token = AccessToken(token="", client_id=owner_key(principal), scopes=[])
    return {PRINCIPAL_SCOPE_KEY: principal, "user": AuthenticatedUser(token)}


def unknown_tool(name: str) -> MCPError:
    # The one answer for a tool that does not exist and one the caller may not use.
    return MCPError(INVALID_PARAMS, f"Unknown tool: {name}")


class GatewayMcpServer:
    """One per app: started by the first request to ``/mcp`` (the SDK costs half a
    second of start-up to import, which a gateway nobody reaches over MCP need not pay),
    stopped with the gateway."""

    def __init__(self, gateway: GatewayContext, config: ServerSettings) -> None:
        self.gateway = gateway
        self.levels: dict[str, str] = {}  # session id -> logging/setLevel
        with warnings.catch_warnings():
            # logging/setLevel is deprecated by the 2026-07-28 revision only; the
            # handshake revisions clients speak today still have it.
            warnings.simplefilter("ignore")
            self.server: Server[Any] = Server(
                "agent-gateway",
                version=GATEWAY_VERSION,
                instructions="The agent gateway's tools and pipelines (pipeline.<id>).",
                on_list_tools=self.list_tools,
                on_call_tool=self.call_tool,
                on_set_logging_level=self.set_level,
            )
        self.manager = StreamableHTTPSessionManager(
            self.server,
            # The host's guard has checked Host and Origin (DNS rebinding) already.
            security_settings=None,
            session_idle_timeout=config.session_idle_seconds,
            max_sessions=config.max_sessions,
        )
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.ready = asyncio.Event()
        # Audit events are written by one task, in call order, off the call's path: a
        # store commit per call would be most of a call's latency (tens of ms on SQLite).
        self._audits: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._auditor: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, app_context: Callable[[], AbstractAsyncContextManager[Any]]) -> None:
        """Start the session manager. It is started by the first request to ``/mcp``: its
        tasks begin in a context of their own with only the app context in it, never the
        request's that happened to start it."""
        loop = asyncio.get_running_loop()
        # The manager's task group is entered and left in this one task, as anyio wants.
        self._task = loop.create_task(
            self._run(app_context), name="mcp-server", context=contextvars.Context()
        )
        self._auditor = loop.create_task(
            self._write_audits(), name="mcp-audit", context=contextvars.Context()
        )

    async def _run(self, app_context: Callable[[], AbstractAsyncContextManager[Any]]) -> None:
        async with app_context(), self.manager.run():
            self.ready.set()
            await self._stop.wait()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 10)
        if self._auditor is not None:
            # Before the store closes: the last calls' events are written, not lost.
            self._audits.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._auditor, 10)

    async def _write_audits(self) -> None:
        while (data := await self._audits.get()) is not None:
            try:
                await self.gateway.hub.publish(MCP_STREAM, "mcp.tool_call", data)
            except Exception:
                log.exception("could not record the MCP call of %r", data.get("tool"))

    @property
    def sessions(self) -> int:
        return len(self.manager._server_instances)

    # -- handlers -------------------------------------------------------------------------

    def _principal(self, ctx: ServerRequestContext[Any]) -> Principal:
        request = ctx.request
        principal = request.scope.get(PRINCIPAL_SCOPE_KEY) if request is not None else None
        if not isinstance(principal, Principal):
            raise MCPError(INVALID_PARAMS, "this request carries no authenticated caller")
        return principal

    @staticmethod
    def _session_id(ctx: ServerRequestContext[Any]) -> str | None:
        request = ctx.request
        found = request.headers.get(SESSION_HEADER) if request is not None else None
        return str(found) if found else None

    async def list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        principal = self._principal(ctx)
        allowed = allow_list(self.gateway, principal)
        tools = [
            types.Tool(name=t.name, description=t.description, input_schema=t.parameters)
            for t in describe_tools(self.gateway)
            if allowed.allows(t.name)
        ]
        if server_settings(self.gateway).pipelines:
            tools += [
                tool
                for tool in pipeline_tools.listing(self.gateway, principal)
                if allowed.allows(tool.name)
            ]
        return types.ListToolsResult(tools=tools)

    async def set_level(
        self, ctx: ServerRequestContext[Any], params: types.SetLevelRequestParams
    ) -> types.EmptyResult:
        session = self._session_id(ctx)
        if session is not None:
            if len(self.levels) > 4 * max(self.sessions, 1):
                self.levels = {k: v for k, v in self.levels.items() if k in self._live()}
            self.levels[session] = params.level
        return types.EmptyResult()

    def _live(self) -> set[str]:
        return set(self.manager._server_instances)

    async def call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        principal = self._principal(ctx)
        name = params.name
        args = dict(params.arguments or {})
        session = self._session_id(ctx)
        started = time.perf_counter()
        is_pipeline = name.startswith(pipeline_tools.PREFIX)
        known = (
            pipeline_tools.visible(self.gateway, principal, name)
            if is_pipeline
            else name in self.gateway.registry("tools")
        )
        if not known or not allow_list(self.gateway, principal).allows(name):
            self._audit(principal, session, name, "refused", "tool_not_found", started)
            raise unknown_tool(name)
        call = contract.McpCall(
            tool=name,
            session_id=session,
            progress=self._progress(ctx),
            log=self._logger(ctx, session),
        )
        token = contract.bind(call)
        outcome, reason = "succeeded", None
        try:
            if is_pipeline:
                result = await pipeline_tools.run(
                    self.gateway, principal, name, args, session, call
                )
            else:
                caller = {
                    "kind": "mcp",
                    "owner": owner_key(principal),
                    "principal": principal.name,
                    "gates": sorted(principal.gates),
                    "session": session,
                }
                result = as_result(await self._call_registry_tool(name, args, caller, call))
        except ToolError as exc:
            outcome, reason = "failed", exc.code
            result = error_result(f"{exc.code}: {exc.message}")
        except Exception as exc:
            outcome, reason = "failed", "tool_failed"
            result = error_result(f"tool_failed: {type(exc).__name__}: {exc}")
        finally:
            contract.unbind(token)
        if result.is_error and outcome == "succeeded":
            outcome, reason = "failed", reason or "tool_error"
        self._audit(principal, session, name, outcome, reason, started)
        return result

    async def _call_registry_tool(
        self, name: str, args: dict[str, Any], caller: dict[str, Any], call: contract.McpCall
    ) -> Any:
        """``call_tool``; a call held for approval stays open, with a progress notification
        every few seconds, until a person decides in the approvals queue (or
        ``pipeline_timeout_seconds`` pass), then runs once if approved: the approval is
        bound to this tool, these arguments and this caller."""
        try:
            return await call_tool(self.gateway, name, args, caller=caller)
        except ToolError as exc:
            approval_id = exc.approval_id
            if exc.code != "approval_required" or approval_id is None:
                raise
        limit = server_settings(self.gateway).pipeline_timeout_seconds
        waiting = f"waiting for approval {approval_id} (GET /approvals)"
        await call.progress(0, None, waiting)

        async def progress(update: ToolApprovalProgress) -> None:
            await call.progress(update.elapsed_seconds, update.timeout_seconds, waiting)

        decision = await wait_for_tool_approval(
            self.gateway, approval_id, timeout=limit, on_progress=progress
        )
        if decision.status == "pending":
            raise ToolError(
                "approval_pending",
                f"approval {approval_id} was not decided within {limit:g} s; the call did not run",
                {"approval_id": approval_id},
            )
        # Decided: the call again with the approval, which runs it once if approved and
        # otherwise says why not (denied, expired, ...).
        return await call_tool(
            self.gateway, name, args, caller={**caller, "approval_id": approval_id}
        )

    def _progress(self, ctx: ServerRequestContext[Any]) -> Any:
        async def progress(value: float, total: float | None, message: str | None) -> None:
            await ctx.session.report_progress(value, total, message)

        return progress

    def _logger(self, ctx: ServerRequestContext[Any], session: str | None) -> Any:
        async def log_message(level: str, data: Any) -> None:
            if level not in LEVELS:
                level = "info"
            wanted = self.levels.get(session or "", DEFAULT_LEVEL)
            if LEVELS.index(level) < LEVELS.index(wanted):
                return
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                await ctx.session.send_log_message(
                    level,  # type: ignore[arg-type]
                    data,
                    logger="agent-gateway",
                    related_request_id=ctx.request_id,
                )

        return log_message

    def _audit(
        self,
        principal: Principal,
        session: str | None,
        tool: str,
        outcome: str,
        reason: str | None,
        started: float,
    ) -> None:
        data = {
            "tool": tool,
            "principal": principal.name,
            "owner": owner_key(principal),
            "session": session,
            "outcome": outcome,
            "error": reason,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            "audit": {
                "action": "mcp.tool_call",
                "target": tool,
                "outcome": outcome,
                "reason_code": reason,
                "actor": owner_key(principal),
            },
        }
        self._audits.put_nowait(data)


def error_result(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=message)], is_error=True)


def as_result(value: Any) -> types.CallToolResult:
    """A tool's return value as an MCP result (see ``contract.py``)."""
    if isinstance(value, contract.Content):
        return types.CallToolResult.model_validate(
            {
                "content": value.blocks,
                "structuredContent": value.structured,
                "isError": value.is_error,
            }
        )
    if isinstance(value, str):
        return types.CallToolResult(content=[types.TextContent(text=value)])
    text = json.dumps(value, ensure_ascii=False, default=str)
    structured = value if isinstance(value, dict) else None
    return types.CallToolResult(
        content=[types.TextContent(text=text)], structured_content=structured
    )
