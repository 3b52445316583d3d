"""The cortex's read-only tools over gateway state, each run as the caller.

A tool is a GET of the gateway's own HTTP API, made in-process (an ASGI call into the
app) with the caller's own credentials, address and host: authentication, policy gates,
rate limits and ownership apply exactly as they would to the caller's own request, so
the cortex never shows a principal what it could not read through the API. A tool is
offered only when its route is served (its plugin is loaded) and the caller holds the
route's gate.

They are registered in the host's tool registry (``gateway_register_tools``: listed by
``GET /gateway/tools``, counted in ``/gateway/tools/stats``) and the cortex calls them
through ``host.api.call_tool`` with ``caller={"kind": "cortex", "principal": <key>, ...}``.
The caller's credentials never go into that dict (it reaches hooks and safety events):
they stay in a context variable the cortex sets for its own call, and a tool refuses to
run when they are missing or belong to another principal than ``caller`` names, so a
pipeline or another plugin cannot call them as someone else.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from quart import Quart

from host.api import Principal, Tool, ToolError, context

RUN_STATES = ["pending", "running", "waiting", "paused", "completed", "failed", "cancelled"]


@dataclass(frozen=True)
class Caller:
    """Who asks, and what its own request carried (for the in-process requests)."""

    principal: Principal
    headers: list[tuple[bytes, bytes]]  # Host and Authorization, as the caller sent them
    client: tuple[str, int] | None
    server: tuple[str, int | None] | None
    scheme: str


@dataclass(frozen=True)
class CortexTool:
    name: str
    description: str
    parameters: dict[str, Any]
    rule: str  # the GET route it reads (Quart rule syntax)
    path: Callable[[dict[str, Any]], str]

    def spec(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


def _query(path: str, args: dict[str, Any], names: tuple[str, ...]) -> str:
    chosen = {n: args[n] for n in names if args.get(n) not in (None, "")}
    return f"{path}?{urlencode(chosen)}" if chosen else path


def _obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


TOOLS: tuple[CortexTool, ...] = (
    CortexTool(
        "gateway_status",
        "The gateway's state (running or paused), version and, for operators, plugins and store.",
        _obj({}),
        "/gateway/status",
        lambda a: "/gateway/status",
    ),
    CortexTool(
        "get_run",
        "One pipeline run by id: status, input, output, error, and each step's result and error.",
        _obj({"run_id": {"type": "string"}}, ["run_id"]),
        "/runs/<run_id>",
        lambda a: f"/runs/{quote(str(a['run_id']), safe='')}",
    ),
    CortexTool(
        "run_events",
        "A pipeline run's events in order (step started, failed, retried, approvals...).",
        _obj({"run_id": {"type": "string"}}, ["run_id"]),
        "/runs/<run_id>/events",
        lambda a: f"/runs/{quote(str(a['run_id']), safe='')}/events?after=0&limit=200",
    ),
    CortexTool(
        "list_runs",
        "Pipeline runs, newest first; filter by status and pipeline.",
        _obj(
            {
                "status": {"type": "string", "enum": RUN_STATES},
                "pipeline": {"type": "string"},
                "limit": {"type": "integer"},
            }
        ),
        "/runs",
        lambda a: _query("/runs", {"limit": 20, **a}, ("status", "pipeline", "limit")),
    ),
    CortexTool(
        "list_approvals",
        "Approvals runs wait for (pending by default; status all for every one).",
        _obj(
            {
                "status": {
                    "type": "string",
                    "enum": ["pending", "approved", "denied", "timed_out", "cancelled", "all"],
                }
            }
        ),
        "/approvals",
        lambda a: _query("/approvals", a, ("status",)),
    ),
    CortexTool(
        "list_jobs",
        "Background jobs (runs, schedule fires), newest first; status active, finished or one.",
        _obj({"status": {"type": "string"}, "limit": {"type": "integer"}}),
        "/gateway/jobs",
        lambda a: _query("/gateway/jobs", {"limit": 20, **a}, ("status", "limit")),
    ),
    CortexTool(
        "audit_log",
        "The audit log, newest first: who did what to which target, and the outcome.",
        _obj({"limit": {"type": "integer"}}),
        "/gateway/audit/log",
        lambda a: _query("/gateway/audit/log", {"limit": 50, **a}, ("limit",)),
    ),
)
BY_NAME = {tool.name: tool for tool in TOOLS}


# The app and the credentials of the cortex chat calling a tool now (see the module doc).
ASKING: ContextVar[tuple[Quart, Caller] | None] = ContextVar("cortex_asking", default=None)


def _runner(tool: CortexTool) -> Callable[..., Awaitable[dict[str, Any]]]:
    async def run(caller: dict[str, Any], **args: Any) -> dict[str, Any]:
        asking = ASKING.get()
        if asking is None or asking[1].principal.key != caller.get("principal"):
            raise ToolError(
                "tool_unavailable",
                f"tool {tool.name!r} runs only in a cortex chat, as the principal asking",
            )
        app, who = asking
        status, body = await get_as(app, who, tool.path(args))
        return {"status": status, "body": body}

    return run


def registered() -> dict[str, Tool]:
    """The cortex's tools as the host's tool registry takes them."""
    return {t.name: Tool(t.description, t.parameters, _runner(t), needs_caller=True) for t in TOOLS}


def available(app: Quart, principal: Principal) -> list[CortexTool]:
    """The tools whose route this gateway serves and whose gate ``principal`` holds."""
    routes = {r.rule: r for r in context(app).routes if "GET" in r.methods}
    found = []
    for tool in TOOLS:
        route = routes.get(tool.rule)
        if route is None or (route.gate is not None and not principal.has_gate(route.gate)):
            continue
        found.append(tool)
    return found


def checked_args(tool: CortexTool, raw: str) -> dict[str, Any] | str:
    """The call's arguments, or what is wrong with them (told to the model). Arguments
    the tool does not take are left out: models add some."""
    try:
        args = json.loads(raw or "{}")
    except ValueError:
        return "arguments are not JSON"
    if not isinstance(args, dict):
        return "arguments must be a JSON object"
    properties: dict[str, Any] = tool.parameters.get("properties", {})
    args = {k: v for k, v in args.items() if k in properties}
    for name in tool.parameters.get("required", []):
        if not isinstance(args.get(name), str) or not args[name]:
            return f"{name} is required (a string)"
    for name, value in args.items():
        spec = properties[name]
        if spec.get("type") == "integer" and (
            not isinstance(value, int) or isinstance(value, bool)
        ):
            return f"{name} must be an integer"
        if spec.get("type") == "string" and not isinstance(value, str):
            return f"{name} must be a string"
        if "enum" in spec and value not in spec["enum"]:
            return f"{name} must be one of {spec['enum']}"
    return args


async def get_as(app: Quart, caller: Caller, path: str) -> tuple[int, Any]:
    """``GET path`` through the whole app as ``caller``: (status, JSON body)."""
    target, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": caller.scheme,
        "path": target,
        "raw_path": target.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [*caller.headers, (b"accept", b"application/json")],
        "client": caller.client,
        "server": caller.server,
        "extensions": {},
    }
    sent: list[dict[str, Any]] = []
    hold = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if not sent and not hold.is_set():
            hold.set()
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # no disconnect: the app ends the exchange
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)  # type: ignore[arg-type]
    status = next((m["status"] for m in sent if m["type"] == "http.response.start"), 500)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    try:
        return status, json.loads(body) if body else None
    except ValueError:
        return status, body.decode("utf-8", errors="replace")
