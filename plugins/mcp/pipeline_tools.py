"""Each pipeline as the MCP tool ``pipeline.<id>``, through the pipelines plugin's
``PipelinesAPI`` service (with that plugin off there are none).

The input schema is the pipeline's input model's JSON schema (an object of any keys
when it has none). A call starts an ordinary run AS the caller (its owner: listed by
its ``GET /runs``, 404 to others), trigger ``{"type": "mcp", "tool", "session"}``; the
run's events are the call's progress notifications, its output the result (text, and
``structuredContent`` ``{run_id, status, output}``). A run that waits (an approval, an
input, a breakpoint) keeps the call open, with a progress notification for each event,
until it finishes or ``[mcp.server] pipeline_timeout_seconds`` passes: then the result
is an error naming the run, which goes on in the pipelines plugin. Listing and calling
need the ``allow_pipeline_run`` gate."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any

from mcp import types

from host.api import Event, GatewayContext, GatewayError, Principal, has_service, service
from plugins.mcp.contract import McpCall
from plugins.mcp.server_config import server_settings

if TYPE_CHECKING:
    from plugins.pipelines.contract import PipelinesAPI

PREFIX = "pipeline."
GATE_RUN = "allow_pipeline_run"


def _api(gateway: GatewayContext) -> PipelinesAPI | None:
    if not gateway.settings.plugin_enabled("pipelines") or not server_settings(gateway).pipelines:
        return None
    from plugins.pipelines.contract import PipelinesAPI  # only when pipelines are on

    return service(PipelinesAPI) if has_service(PipelinesAPI) else None


def _schema(pipeline: Any) -> dict[str, Any]:
    schema: dict[str, Any] = dict(pipeline.input_schema())
    schema.setdefault("type", "object")  # MCP wants an object schema at the root
    return schema


def listing(gateway: GatewayContext, principal: Principal) -> list[types.Tool]:
    api = _api(gateway)
    if api is None or not principal.has_gate(GATE_RUN):
        return []
    found = []
    for pipeline_id in api.pipeline_ids():
        pipeline = api.pipeline(pipeline_id)
        if pipeline is not None:
            found.append(
                types.Tool(
                    name=PREFIX + pipeline_id,
                    description=pipeline.description or f"Run the pipeline {pipeline_id!r}.",
                    input_schema=_schema(pipeline),
                )
            )
    return found


def visible(gateway: GatewayContext, principal: Principal, name: str) -> bool:
    api = _api(gateway)
    return (
        api is not None
        and principal.has_gate(GATE_RUN)
        and api.pipeline(name[len(PREFIX) :]) is not None
    )


def _error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=message)], is_error=True)


def _describe(event: Event) -> str:
    data = event.data if isinstance(event.data, dict) else {}
    step = data.get("step") or data.get("step_id")
    return f"{event.type} {step}" if step else event.type


async def run(
    gateway: GatewayContext,
    principal: Principal,
    name: str,
    args: dict[str, Any],
    session: str | None,
    call: McpCall,
) -> types.CallToolResult:
    api = _api(gateway)
    assert api is not None  # visible() said so
    pipeline_id = name[len(PREFIX) :]
    try:
        run_id = await api.start_run(
            pipeline_id,
            args,
            principal=principal,
            trigger={"type": "mcp", "tool": name, "session": session},
        )
    except GatewayError as exc:
        return _error(f"{exc.code}: {exc.message}")
    events = 0
    after = 0
    limit = server_settings(gateway).pipeline_timeout_seconds
    await call.progress(0, None, f"run {run_id} started")
    try:
        async with asyncio.timeout(limit):
            while True:
                async with contextlib.aclosing(api.events(run_id, after)) as stream:
                    async for event in stream:
                        after = event.seq
                        events += 1
                        await call.progress(events, None, _describe(event))
                state = await api.state(run_id)
                if state.finished:
                    break
                if gateway.lifecycle.draining:
                    return _error(
                        f"the gateway is shutting down; pipeline run {run_id} goes on after"
                        f" it restarts (GET /runs/{run_id})"
                    )
    except TimeoutError:
        state = await api.state(run_id)
        return _error(
            f"pipeline run {run_id} is still {state.status} after {limit:g} s"
            f" ({_waiting(state)}); it goes on: GET /runs/{run_id}"
        )
    if state.status == "completed":
        output = state.output
        text = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)
        return types.CallToolResult(
            content=[types.TextContent(text=text)],
            structured_content={"run_id": run_id, "status": state.status, "output": output},
        )
    if state.status == "failed":
        reason = (state.error or {}).get("message") or "no reason given"
        return _error(f"pipeline run {run_id} failed: {reason}; GET /runs/{run_id} shows it")
    return _error(f"pipeline run {run_id} was {state.status}; GET /runs/{run_id} shows it")


def _waiting(state: Any) -> str:
    waiting = state.waiting_for or {}
    if waiting.get("type") == "approval":
        return f"waiting for an approval at step {waiting.get('step')!r}"
    if waiting:
        return f"waiting for input at step {waiting.get('step')!r}"
    if state.paused_at:
        return f"paused at a breakpoint before step {state.paused_at!r}"
    return state.status
