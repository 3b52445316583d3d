"""The gateway as an MCP client: one supervisor per ``[mcp.servers.<name>]``.

A supervisor task owns the SDK ``Client`` (its transport is entered and left in that one
task, as anyio wants): it connects (a stdio server is started as a subprocess), lists the
server's tools into the gateway's tool registry as ``<server>.<tool>``, relists them when
the server sends ``notifications/tools/list_changed``, pings it, and when the connection
breaks marks the server down and reconnects with exponential back-off until shutdown.
The server's tools stay registered while it is down: a call then fails with
``mcp_server_down`` naming the server, and is counted as a failed call."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from typing import Any

from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CONNECTION_CLOSED

from host.api import GatewayContext, Tool, ToolError, now_ms, replace_tools
from plugins.mcp.config import ServerConfig

log = logging.getLogger(__name__)
PLUGIN = "mcp"
LIST_CHANGED = "notifications/tools/list_changed"
_FIRST_BACKOFF = 0.2


class ServerDown(ToolError):
    pass


class Supervisor:
    """Keeps one MCP server connected and its tools registered."""

    def __init__(self, ctx: GatewayContext, config: ServerConfig) -> None:
        self.ctx = ctx
        self.config = config
        self.name = config.name
        self.client: Client | None = None
        self.state = "starting"
        self.last_error: str | None = None
        self.connected_ms: int | None = None
        self.connects = 0
        self.tool_names: list[str] = []
        self._broken = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()  # set after each first listing (tests wait on it)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"mcp-server-{self.name}")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        replace_tools(self.ctx, PLUGIN, f"{self.name}.", {})

    def _transport(self) -> Any:
        cfg = self.config
        if cfg.command:
            return StdioServerParameters(
                command=cfg.command[0], args=list(cfg.command[1:]), env=cfg.env or None, cwd=cfg.cwd
            )
        assert cfg.url is not None
        headers = {k: v.get() for k, v in cfg.headers.items()}
        return streamable_http_client(cfg.url, http_client=create_mcp_http_client(headers=headers))

    async def _run(self) -> None:
        delay = _FIRST_BACKOFF
        while not self._stopping.is_set():
            try:
                async with Client(
                    self._transport(),
                    message_handler=self._on_message,
                    # The handshake era: what most servers speak, and where a server's
                    # tools/list_changed arrives without a subscription.
                    mode="legacy",
                    read_timeout_seconds=self.config.timeout_seconds,
                ) as client:
                    self._broken.clear()
                    await self._list(client)
                    self.client = client
                    self.state, self.last_error = "up", None
                    self.connected_ms = now_ms()
                    self.connects += 1
                    delay = _FIRST_BACKOFF
                    self.ready.set()
                    await self._watch(client)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # anyio wraps transport failures in groups
                self.last_error = _describe(exc)
                log.warning("MCP server %r: %s", self.name, self.last_error)
            finally:
                self.client = None
            if self._stopping.is_set():
                return
            self.state = "down"
            self.ready.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(delay * 2, self.config.max_backoff_seconds)

    async def _watch(self, client: Client) -> None:
        """Returns when the connection is found broken (a failed ping or call)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._broken.wait(), self.config.ping_seconds)
            if self._broken.is_set():
                self.last_error = self.last_error or "the connection broke"
                return
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ping is deprecated for 2026 servers only
                await asyncio.wait_for(client.send_ping(), self.config.timeout_seconds)

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, Exception):
            return
        method = getattr(getattr(message, "root", message), "method", None)
        if method == LIST_CHANGED and self.client is not None:
            # Relisted in a task of its own: the handler runs in the SDK's receive loop,
            # which must stay free to read the listing's answer.
            task = asyncio.create_task(self._relist(self.client))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _relist(self, client: Client) -> None:
        try:
            await self._list(client)
        except Exception as exc:
            self._broke(exc)

    async def _list(self, client: Client) -> None:
        tools: dict[str, Tool] = {}
        cursor: str | None = None
        while True:
            page = await client.list_tools(cursor=cursor, cache_mode="refresh")
            for tool in page.tools:
                tools[f"{self.name}.{tool.name}"] = Tool(
                    tool.description or f"{tool.name} (MCP server {self.name})",
                    dict(tool.input_schema or {"type": "object"}),
                    self._caller(tool.name),
                    approval="always" if self.config.approval == "always" else None,
                )
            cursor = page.next_cursor
            if cursor is None:
                break
        replace_tools(self.ctx, PLUGIN, f"{self.name}.", tools)
        self.tool_names = sorted(tools)

    # -- calls ----------------------------------------------------------------------------

    def _caller(self, tool: str) -> Any:
        async def call(**args: Any) -> Any:
            return await self.call(tool, args)

        call.__doc__ = f"{tool} on MCP server {self.name}"
        return call

    async def call(self, tool: str, args: dict[str, Any]) -> Any:
        client = self.client
        if client is None:
            raise self._down()
        try:
            result = await asyncio.wait_for(
                client.call_tool(tool, args), self.config.timeout_seconds
            )
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED:
                self._broke(exc)
                raise self._down() from exc
            raise ToolError(
                "mcp_tool_error", f"MCP server {self.name!r}, tool {tool!r}: {exc}"
            ) from exc
        except TimeoutError as exc:
            raise ToolError(
                "mcp_timeout",
                f"MCP server {self.name!r}, tool {tool!r}: no answer in"
                f" {self.config.timeout_seconds:g} s",
            ) from exc
        except Exception as exc:
            self._broke(exc)
            raise self._down() from exc
        if result.is_error:
            raise ToolError(
                "mcp_tool_error",
                f"MCP server {self.name!r}, tool {tool!r}: {_text(result.content) or 'failed'}",
            )
        if result.structured_content is not None:
            return result.structured_content
        return _text(result.content)

    def _broke(self, exc: BaseException) -> None:
        self.last_error = _describe(exc)
        self.state = "down"
        self._broken.set()

    def _down(self) -> ServerDown:
        return ServerDown(
            "mcp_server_down",
            f"MCP server {self.name!r} is down ({self.last_error or 'not connected yet'})",
            {"server": self.name},
        )

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "transport": self.config.transport,
            "state": self.state,
            "last_error": self.last_error,
            "connected_ms": self.connected_ms,
            "connects": self.connects,
            "tools": self.tool_names,
        }


def _text(content: list[Any]) -> str:
    return "\n".join(str(getattr(c, "text", "")) for c in content if getattr(c, "text", None))


def _describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"[:300] if str(exc) else type(exc).__name__
