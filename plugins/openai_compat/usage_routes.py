"""``GET /gateway/usage``: model usage per principal, model and UTC day (usage.py); the
caller's own, or with ``allow_usage_read_all`` everyone's (``?principal=``, ``?all=true``).
And ``gateway usage``, the same from the command line, over HTTP."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click
import httpx
from pydantic import BaseModel, Field
from quart import Blueprint, request
from quart_schema import document_response

from host.api import GatewayContext, GatewayError, Principal, context, current_principal
from plugins.openai_compat import usage
from plugins.openai_compat.contract import UsageAPI
from plugins.openai_compat.model_calls import USAGE_KEY

GATE_READ_ALL = "allow_usage_read_all"
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")

bp = Blueprint("openai_usage", __name__)


class UsageRow(BaseModel):
    principal: str = Field(description="the principal's key, e.g. token:ci")
    model: str = Field(description="the model that answered")
    day: str = Field(description="UTC day, YYYY-MM-DD")
    requests: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    estimated_requests: int = Field(description="requests whose tokens were estimated")
    errors: int = Field(description="requests that ended in an error")


class UsageReport(BaseModel):
    object: str = "list"
    data: list[UsageRow]


def _day(name: str) -> str | None:
    value = request.args.get(name)
    if value is not None and not _DAY.match(value):
        raise GatewayError(400, "invalid_query", f"{name} must be a day, YYYY-MM-DD", param=name)
    return value


@bp.get("/gateway/usage")
@document_response(UsageReport)
async def get_usage() -> Any:
    """Model usage per principal, model and UTC day, newest first: the caller's own; with
    ``allow_usage_read_all``, ``?principal=<key>`` or ``?all=true`` for everyone's.
    ``?since=`` and ``?until=`` bound the days (YYYY-MM-DD, inclusive)."""
    everyone = request.args.get("all", "false")
    if everyone not in ("true", "false"):
        raise GatewayError(400, "invalid_query", "all must be true or false", param="all")
    rows = await read_usage(
        context(),
        current_principal(),
        principal_key=request.args.get("principal"),
        everyone=everyone == "true",
        since=_day("since"),
        until=_day("until"),
    )
    return {"object": "list", "data": rows}


async def read_usage(
    ctx: GatewayContext,
    principal: Principal,
    *,
    principal_key: str | None = None,
    everyone: bool = False,
    since: str | None = None,
    until: str | None = None,
) -> list[dict[str, Any]]:
    """The route's report (and the ``UsageAPI`` service's): ``principal``'s own usage;
    another's or everyone's needs ``allow_usage_read_all`` (403)."""
    for name, value in (("since", since), ("until", until)):
        if value is not None and not _DAY.match(value):
            raise GatewayError(
                400, "invalid_query", f"{name} must be a day, YYYY-MM-DD", param=name
            )
    who: str | None = principal.key
    if (principal_key is not None and principal_key != principal.key) or everyone:
        if not principal.has_gate(GATE_READ_ALL):
            raise GatewayError(
                403,
                "policy_gate_denied",
                f"another principal's usage needs the gate {GATE_READ_ALL!r}",
            )
        who = None if everyone else principal_key
    await ctx.extras[USAGE_KEY].flush(ctx.store)  # this process's latest calls too
    rows: list[dict[str, Any]] = await usage.report(ctx.store, who, since, until)
    return rows


class UsageService(UsageAPI):
    def __init__(self, ctx: GatewayContext) -> None:
        self._ctx = ctx

    async def report(
        self,
        principal: Principal,
        *,
        principal_key: str | None = None,
        everyone: bool = False,
        since: str | None = None,
        until: str | None = None,
    ) -> list[dict[str, Any]]:
        return await read_usage(
            self._ctx,
            principal,
            principal_key=principal_key,
            everyone=everyone,
            since=since,
            until=until,
        )


# -- gateway usage ----------------------------------------------------------------------------

COLUMNS = ["day", "principal", "model", "requests", "input_tokens", "output_tokens", "estimated"]


def _target(url: str | None, token: str | None) -> tuple[str, str | None]:
    settings = None
    if not url or not token:
        try:
            from host.api import load_settings

            settings = load_settings()
        except Exception:
            settings = None
    if not url:
        bind = settings.server.bind if settings is not None else "127.0.0.1:8787"
        host, _, port = bind.rpartition(":")
        if host in ("0.0.0.0", "::", "[::]", ""):  # noqa: S104 - a wildcard bind: dial loopback
            host = "127.0.0.1"
        scheme = "https" if settings is not None and settings.server.certfile else "http"
        url = f"{scheme}://{host}:{port}"
    if not token and settings is not None:
        path = Path(settings.state_dir) / settings.auth.admin_token_file
        if path.is_file():
            token = path.read_text().strip()
    return url.rstrip("/"), token


@click.command("usage")
@click.option("--all", "everyone", is_flag=True, help="every principal's (allow_usage_read_all)")
@click.option("--principal", help="one principal's, by key (token:ci)")
@click.option("--since", help="first day, YYYY-MM-DD")
@click.option("--until", help="last day, YYYY-MM-DD")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.option("--token", envvar="GATEWAY_TOKEN", help="bearer token ($GATEWAY_TOKEN)")
@click.option("--url", envvar="GATEWAY_URL", help="gateway URL ($GATEWAY_URL)")
def usage_command(
    everyone: bool,
    principal: str | None,
    since: str | None,
    until: str | None,
    as_json: bool,
    token: str | None,
    url: str | None,
) -> None:
    """Model usage per day, principal and model (GET /gateway/usage of a running gateway)."""
    base, token = _target(url, token)
    params = {
        k: v
        for k, v in {
            "all": "true" if everyone else None,
            "principal": principal,
            "since": since,
            "until": until,
        }.items()
        if v is not None
    }
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.get(f"{base}/gateway/usage", params=params, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach the gateway at {base}: {exc}") from exc
    data = response.json() if response.content else {}
    if response.status_code >= 400:
        error = data.get("error", {}) if isinstance(data, dict) else {}
        raise click.ClickException(
            f"{response.status_code} {error.get('code', 'error')}: {error.get('message', '')}"
        )
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    rows = [
        [str(r.get(c if c != "estimated" else "estimated_requests")) for c in COLUMNS]
        for r in data.get("data", [])
    ]
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(COLUMNS)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(COLUMNS, widths, strict=True)))
    for r in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
