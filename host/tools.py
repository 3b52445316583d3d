"""Tools: what a plugin registers with ``gateway_register_tools`` and the one way to call
them, :func:`call_tool`, used by pipelines' ``tool`` steps and by agents alike.

A registered tool is a :class:`Tool` (description, JSON schema of its arguments, the
function), or, as before this module, any callable or object with ``run(**args)``: its
description and schema are then read from its docstring and signature. Every call through
:func:`call_tool` is admitted by ``gateway_before_tool_call`` (a plugin may refuse it),
checked against the schema, timed, its result scanned by the safety scanners (direction
``output``, stage ``tool_output``), and reported to ``gateway_on_tool_call`` observers,
failed calls included."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from host.context import GatewayContext
from host.safety import scan_text
from host.storage import now_ms

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list, tuple),
    "null": (type(None),),
}
_PY_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object"}


@dataclass(frozen=True)
class Tool:
    """A tool as its plugin describes it. ``fn(**args)`` may be sync or async; a sync
    function that blocks (I/O) sets ``blocking`` and runs in a worker thread. With
    ``needs_gateway`` it is also passed ``gateway=`` (the :class:`GatewayContext`); with
    ``needs_caller`` also ``caller=`` (the dict ``call_tool`` was given: who calls, so a
    tool can apply that caller's ownership). ``approval = "always"`` holds every call for a
    person's approval (``gateway_tool_approval``; the MCP plugin marks a server's tools so
    from ``[mcp.servers.<name>] approval``)."""

    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Any]
    blocking: bool = False
    needs_gateway: bool = False
    needs_caller: bool = False
    approval: str | None = None


@dataclass(frozen=True)
class ToolInfo:
    """A registered tool as listed: its name, description, argument schema and plugin."""

    name: str
    description: str
    parameters: dict[str, Any]
    plugin: str


@dataclass(frozen=True)
class ToolCall:
    """One finished call, as ``gateway_on_tool_call`` observers see it. ``error`` is the
    code of a refused or failed call (``tool_failed`` when the tool itself raised)."""

    tool: str
    caller: dict[str, Any]
    started_ms: int
    duration_ms: float
    ok: bool
    error: str | None = None
    message: str | None = None


@dataclass
class ToolError(Exception):
    """A call that did not run or whose result was withheld: ``tool_not_found``,
    ``tool_refused`` (by ``gateway_before_tool_call``), ``invalid_tool_args`` (naming the
    argument), ``tool_output_blocked`` (by a safety scanner), and the ``approval_*`` codes
    of ``gateway_tool_approval``: ``approval_required`` carries the id of the approval it
    created in ``details["approval_id"]`` (also :attr:`approval_id`)."""

    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    @property
    def approval_id(self) -> str | None:
        """The approval this error is about (``approval_required`` and the refusals of a
        caller's ``approval_id``), else None."""
        found = self.details.get("approval_id")
        return found if isinstance(found, str) else None


def args_digest(args: dict[str, Any]) -> str:
    """The SHA-256 (hex) of the canonical JSON of ``args``: keys sorted, no whitespace,
    UTF-8. What an approval of a tool call is bound to. ``invalid_tool_args`` when the
    arguments are not JSON."""
    try:
        text = json.dumps(
            args, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise ToolError("invalid_tool_args", f"arguments are not JSON: {exc}") from None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# Which of the tool hooks have implementations, per plugin host (fixed once the app is
# built): asked on every call.
_HOOKED: weakref.WeakKeyDictionary[Any, tuple[bool, bool, bool]] = weakref.WeakKeyDictionary()


def _hooked(ctx: GatewayContext) -> tuple[bool, bool, bool]:
    found = _HOOKED.get(ctx.plugins)
    if found is None:
        found = _HOOKED[ctx.plugins] = (
            ctx.plugins.has_impls("gateway_before_tool_call"),
            ctx.plugins.has_impls("gateway_on_tool_call"),
            ctx.plugins.has_impls("gateway_tool_approval"),
        )
    return found


def _as_tool(obj: Any) -> Tool:
    if isinstance(obj, Tool):
        return obj
    fn = obj if callable(obj) else getattr(obj, "run", None)
    if fn is None:
        raise ToolError("tool_invalid", f"{obj!r} is neither a Tool, a callable nor has run()")
    doc = inspect.getdoc(fn) or inspect.getdoc(obj) or ""
    return Tool(doc.split("\n\n")[0].strip(), _schema_of(fn), fn)


def _schema_of(fn: Callable[..., Any]) -> dict[str, Any]:
    """A JSON schema from a signature: typed parameters get their JSON type, those
    without a default are required; ``**kwargs`` admits any other argument."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    extra = False
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return {"type": "object"}
    for param in params:
        if param.kind is param.VAR_KEYWORD:
            extra = True
            continue
        if param.kind is param.VAR_POSITIONAL:
            continue
        kind = _PY_TYPES.get(param.annotation) if isinstance(param.annotation, type) else None
        if isinstance(param.annotation, str):
            kind = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(
                param.annotation
            )
        properties[param.name] = {"type": kind} if kind else {}
        if param.default is param.empty:
            required.append(param.name)
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    if not extra:
        schema["additionalProperties"] = False
    return schema


def describe_tools(ctx: GatewayContext) -> list[ToolInfo]:
    """Every registered tool, by name."""
    registry = ctx.registry("tools")
    found = []
    for name in sorted(registry):
        tool = _as_tool(registry[name])
        found.append(ToolInfo(name, tool.description, tool.parameters, registry.owners[name]))
    return found


def replace_tools(ctx: GatewayContext, owner: str, prefix: str, tools: dict[str, Tool]) -> None:
    """Swap, at runtime, the tools ``owner`` registered whose names start with ``prefix``
    for ``tools`` (each name must start with ``prefix``). For tools that come and go after
    start-up (an MCP server's, announced by ``tools/list_changed``); ``gateway_register_tools``
    stays the start-up registry. A name another plugin owns is refused, not replaced."""
    registry = ctx.registry("tools")
    for name in tools:
        if not name.startswith(prefix):
            raise ToolError("tool_invalid", f"tool {name!r} does not start with {prefix!r}")
        if name in registry and registry.owners[name] != owner:
            raise ToolError(
                "tool_invalid", f"tool {name!r} is already registered by {registry.owners[name]!r}"
            )
    for name in [n for n in registry if n.startswith(prefix) and registry.owners[n] == owner]:
        registry.remove(name)
    for name, tool in tools.items():
        registry.add(owner, name, tool)


def check_args(schema: dict[str, Any], args: dict[str, Any]) -> None:
    """The top-level checks of an object schema: required names, unknown names when
    ``additionalProperties`` is false, and each property's JSON ``type``."""
    properties: dict[str, Any] = schema.get("properties") or {}
    for name in schema.get("required") or []:
        if name not in args:
            raise ToolError("invalid_tool_args", f"args.{name}: required", {"param": name})
    for name, value in args.items():
        spec = properties.get(name)
        if spec is None:
            if schema.get("additionalProperties") is False:
                raise ToolError("invalid_tool_args", f"args.{name}: unknown", {"param": name})
            continue
        wanted = spec.get("type")
        kinds = wanted if isinstance(wanted, list) else [wanted] if wanted else []
        if kinds and not any(_is(value, k) for k in kinds):
            message = f"args.{name}: must be {' or '.join(kinds)}"
            raise ToolError("invalid_tool_args", message, {"param": name})
        if "enum" in spec and value not in spec["enum"]:
            message = f"args.{name}: must be one of {spec['enum']}"
            raise ToolError("invalid_tool_args", message, {"param": name})


def _is(value: Any, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _JSON_TYPES.get(kind, (object,)))


async def call_tool(
    ctx: GatewayContext, name: str, args: dict[str, Any], *, caller: dict[str, Any]
) -> Any:
    """Call the tool ``name`` with ``args`` for ``caller`` (who calls: ``{"kind":
    "pipeline", "run_id": ..., "owner": ...}``); returns its result, redacted by the safety
    scanners if they say so. Raises :class:`ToolError` for a call that is refused, has
    bad arguments, waits for a person's approval (``approval_required``: call again with
    ``caller["approval_id"]`` once approved) or whose output is blocked; the tool's own
    exception propagates. Every outcome is reported to ``gateway_on_tool_call``."""
    started = now_ms()
    clock = time.perf_counter()
    ok = False
    error: str | None = "tool_failed"
    message: str | None = None
    try:
        registered = ctx.registry("tools").get(name)
        if registered is None:
            raise ToolError("tool_not_found", f"tool {name!r} is not registered")
        tool = _as_tool(registered)
        if _hooked(ctx)[0]:
            await ctx.plugins.call_async(
                "gateway_before_tool_call", gateway=ctx, name=name, args=args, caller=caller
            )
        check_args(tool.parameters, args)
        if _hooked(ctx)[2]:
            # Last, once the call is known to be admissible: an approval is asked for (or
            # spent) only for a call that would run.
            await ctx.plugins.call_async(
                "gateway_tool_approval", gateway=ctx, name=name, args=args, caller=caller, tool=tool
            )
        kwargs = {**args, "gateway": ctx} if tool.needs_gateway else dict(args)
        if tool.needs_caller:
            kwargs["caller"] = caller
        if tool.blocking:
            result = await asyncio.to_thread(tool.fn, **kwargs)
        else:
            result = tool.fn(**kwargs)
            if inspect.isawaitable(result):
                result = await result
        result = await _scanned(ctx, name, result, caller)
        ok, error = True, None
        return result
    except ToolError as exc:
        error, message = exc.code, exc.message
        raise
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        call = ToolCall(
            name, caller, started, (time.perf_counter() - clock) * 1000, ok, error, message
        )
        if _hooked(ctx)[1]:
            await ctx.plugins.call_async(
                "gateway_on_tool_call", log_errors=True, gateway=ctx, call=call
            )


async def _scanned(ctx: GatewayContext, name: str, result: Any, caller: dict[str, Any]) -> Any:
    if not len(ctx.registry("safety_scanners")):
        return result
    text = result if isinstance(result, str) else json.dumps(result, default=str)
    # The caller's ids (run_id, step...) go on the safety event, so audit and dashboards
    # can link a decision to the run that called the tool.
    info = {k: v for k, v in caller.items() if k not in ("stage", "tool")}
    scan = await scan_text(ctx, text, "output", {**info, "stage": "tool_output", "tool": name})
    if scan.blocked:
        reasons = "; ".join(f["reason"] for f in scan.findings if f["reason"])
        raise ToolError(
            "tool_output_blocked",
            f"tool {name!r}: its output was blocked by the gateway's safety policy"
            f" ({reasons or 'no reason given'})",
        )
    if scan.text == text:
        return result
    if isinstance(result, str):
        return scan.text
    try:
        return json.loads(scan.text)
    except ValueError:
        return scan.text
