"""The built-in tools: an HTTP fetch limited to configured hosts, and read-only views of
the gateway's pipelines and runs (for agents such as the cortex)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx

from host.api import (
    GatewayContext,
    GatewayError,
    Tool,
    ToolError,
    has_service,
    scan_text,
    service,
)
from plugins.tools.config import config_of


async def http_fetch(url: str, gateway: GatewayContext, max_bytes: int | None = None) -> Any:
    """GET ``url`` (http or https) from a host in ``[plugins.tools.http_fetch]
    allowed_hosts``; no redirects are followed; the body is cut at ``max_bytes``."""
    limits = config_of(gateway).http_fetch
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise ToolError(
            "invalid_tool_args", "args.url: must be an http or https URL", {"param": "url"}
        )
    if host not in limits.allowed_hosts:
        raise ToolError(
            "tool_refused",
            f"host {host!r} is not in plugins.tools.http_fetch.allowed_hosts",
        )
    if max_bytes is not None and max_bytes < 1:
        raise ToolError(
            "invalid_tool_args", "args.max_bytes: must be at least 1", {"param": "max_bytes"}
        )
    url = await _outbound(gateway, url, host)
    cap = min(max_bytes or limits.max_bytes, limits.max_bytes)
    body = bytearray()
    timeout = httpx.Timeout(limits.timeout_seconds)
    async with httpx.AsyncClient(
        timeout=timeout, follow_redirects=False, trust_env=False
    ) as client:
        async with client.stream("GET", url) as response:
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > cap:
                    break
            truncated = len(body) > cap
            return {
                "status": response.status_code,
                "content_type": response.headers.get("content-type"),
                "location": response.headers.get("location"),
                "text": bytes(body[:cap]).decode("utf-8", errors="replace"),
                "truncated": truncated,
            }


async def _outbound(gateway: GatewayContext, url: str, host: str) -> str:
    """The URL as it may leave the gateway (safety stage ``outbound_http``: its path and
    query can carry data): redacted when the policy redacts, refused when it blocks or
    when a redaction would change the host."""
    scan = await scan_text(gateway, url, "output", {"stage": "outbound_http", "tool": "http_fetch"})
    if not scan.blocked and (scan.text == url or urlsplit(scan.text).hostname == host):
        return scan.text
    reasons = "; ".join(str(f.get("reason") or "") for f in scan.findings if f.get("reason"))
    raise ToolError(
        "outbound_blocked",
        "the request was blocked by the gateway's safety policy (stage outbound_http"
        f"{': ' + reasons if reasons else ''}); nothing was sent",
    )


def _pipelines_api(gateway: GatewayContext) -> Any:
    if not gateway.settings.plugin_enabled("pipelines"):
        raise ToolError("tool_unavailable", "the pipelines plugin is off")
    from plugins.pipelines.contract import PipelinesAPI  # only when a tool asks for it

    if not has_service(PipelinesAPI):
        raise ToolError("tool_unavailable", "the pipelines plugin is not running")
    return service(PipelinesAPI)


async def list_pipelines(gateway: GatewayContext) -> Any:
    """The pipelines this gateway runs: id, description, version, steps."""
    api = _pipelines_api(gateway)
    found = []
    for pipeline_id in api.pipeline_ids():
        pipeline = api.pipeline(pipeline_id)
        if pipeline is not None:
            steps = [s.id for s in pipeline.steps]
            found.append(
                {
                    "id": pipeline.id,
                    "description": pipeline.description,
                    "version": pipeline.version,
                    "steps": steps,
                }
            )
    return {"pipelines": found}


async def _owner_of(api: Any, caller: dict[str, Any]) -> str | None:
    """Whose runs ``caller`` may see: its ``owner`` (an owner key), or the owner of the
    run whose step calls (a pipeline's tool step names its ``run_id``)."""
    if "owner" in caller:
        owner: str | None = caller["owner"]
        return owner
    if caller.get("run_id"):
        calling = await api.record(str(caller["run_id"]))
        return calling.owner
    raise ToolError("tool_refused", "gateway_run_status needs a caller with an owner or a run_id")


async def run_status(run_id: str, gateway: GatewayContext, caller: dict[str, Any]) -> Any:
    """Where a pipeline run stands: its status, pipeline, and what it waits for (never
    its input or output). Only a run of the caller's own owner: another's is
    ``run_not_found``, as the API answers it."""
    api = _pipelines_api(gateway)
    missing = ToolError("run_not_found", f"no run {run_id!r}", {"param": "run_id"})
    try:
        owner = await _owner_of(api, caller)
        if (await api.record(run_id)).owner != owner:
            raise missing
        state = await api.state(run_id)
    except GatewayError as exc:
        raise ToolError(exc.code, exc.message, {"param": "run_id"}) from None
    return {
        "run_id": state.run_id,
        "pipeline_id": state.pipeline_id,
        "status": state.status,
        "waiting_for": (state.waiting_for or {}).get("type"),
        "paused_at": state.paused_at,
    }


BUILTIN_TOOLS: dict[str, Tool] = {
    "http_fetch": Tool(
        "Fetch a URL (GET) from a host the operator allowed; returns status, content type "
        "and text (cut at the configured size).",
        {
            "type": "object",
            "properties": {
                "url": {"type": "string", "description": "http or https URL"},
                "max_bytes": {"type": "integer", "description": "cut the body here"},
            },
            "required": ["url"],
            "additionalProperties": False,
        },
        http_fetch,
        needs_gateway=True,
    ),
    "gateway_pipelines": Tool(
        "List the pipelines this gateway runs.",
        {"type": "object", "properties": {}, "additionalProperties": False},
        list_pipelines,
        needs_gateway=True,
    ),
    "gateway_run_status": Tool(
        "Status of a pipeline run of the caller's own owner by id (no input or output).",
        {
            "type": "object",
            "properties": {"run_id": {"type": "string"}},
            "required": ["run_id"],
            "additionalProperties": False,
        },
        run_status,
        needs_gateway=True,
        needs_caller=True,
    ),
}
