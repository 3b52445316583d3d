"""The ops console's usage and cortex pages, read through the openai_compat plugin's
``UsageAPI`` and the cortex plugin's ``CortexAPI`` as the signed-in principal: one's own
model usage, everyone's with ``allow_usage_read_all`` (as ``GET /gateway/usage``); the
copilot's readiness (as ``GET /cortex/status``). Each says so when its plugin is off."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from quart import request

from host.api import GatewayError, has_service, public, service
from plugins.cortex.contract import CortexAPI
from plugins.dashboard.pages import bp, current_session, html, page, to_login
from plugins.openai_compat.contract import UsageAPI

_TOTALS = ("requests", "input_tokens", "output_tokens", "total_tokens", "errors")


def _totals(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    sums: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(_TOTALS, 0))
    for row in rows:
        for name in _TOTALS:
            sums[row[key]][name] += int(row[name])
    return [{key: k, **v} for k, v in sorted(sums.items())]


@bp.get("/ops/usage")
@public
@html()
async def ops_usage() -> Any:
    """Model usage per principal, model and UTC day: one's own, or everyone's
    (``?scope=all``, needs ``allow_usage_read_all``: 403 without); ``?since=`` and
    ``?until=`` (YYYY-MM-DD); totals per model and per principal."""
    session = await current_session()
    if session is None:
        return to_login()
    if not has_service(UsageAPI):
        return await page(
            "disabled.html",
            session,
            code=503,
            section="usage",
            title="Usage",
            plugin="openai_compat",
        )
    scope = "all" if request.args.get("scope") == "all" else "mine"
    since = request.args.get("since") or None
    until = request.args.get("until") or None
    values: dict[str, Any] = {"scope": scope, "since": since or "", "until": until or ""}
    try:
        rows = await service(UsageAPI).report(
            session.principal, everyone=scope == "all", since=since, until=until
        )
    except GatewayError as exc:
        return await page(
            "usage.html", session, code=exc.status, section="usage", error=exc, **values
        )
    return await page(
        "usage.html",
        session,
        section="usage",
        rows=rows,
        by_model=_totals(rows, "model"),
        by_principal=_totals(rows, "principal"),
        **values,
    )


@bp.get("/ops/cortex")
@public
@html()
async def ops_cortex() -> Any:
    """The operator copilot's readiness: its model (configured, reachable), the tools the
    principal's chat may use and its last use; the chat itself is ``POST /cortex/chat``."""
    session = await current_session()
    if session is None:
        return to_login()
    if not has_service(CortexAPI):
        return await page(
            "disabled.html", session, code=503, section="cortex", title="Cortex", plugin="cortex"
        )
    status = await service(CortexAPI).status(session.principal)
    tools = [t.model_dump() for t in status.tools]
    return await page("cortex.html", session, section="cortex", status=status, tools=tools)
