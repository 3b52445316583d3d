"""``/cortex``: the operator copilot's chat (SSE) and its readiness."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from quart import Blueprint, Response, current_app, request
from quart_schema import document_request, document_response, validate_response

from host.api import (
    ErrorResponse,
    GatewayError,
    Principal,
    context,
    current_principal,
    document_media_type,
    has_service,
    live_response,
    requires_gate,
    service,
    stream_slot,
    validation_message,
    with_ticks,
)
from plugins.cortex.chat import SYSTEM, Chat, Readiness
from plugins.cortex.config import CortexConfig, configured
from plugins.cortex.contract import CortexAPI
from plugins.cortex.gates import GATE_CHAT
from plugins.cortex.models import (
    ChatEvent,
    ChatRequest,
    CortexStatus,
    LastUse,
    ModelReadiness,
    ToolInfo,
)
from plugins.cortex.tables import chats
from plugins.cortex.tools import Caller, available

bp = Blueprint("cortex", __name__)
READINESS_KEY = "cortex.readiness"
CONFIG_KEY = "cortex.config"


def config() -> CortexConfig:
    found: CortexConfig | None = context().extras.get(CONFIG_KEY)
    return found if found is not None else configured(context().settings)


def readiness() -> Readiness:
    found: Readiness = context().extras.setdefault(READINESS_KEY, Readiness())
    return found


def catalog() -> Any:
    from plugins.openai_compat.contract import ModelCatalog  # the cortex asks its models

    if not has_service(ModelCatalog):
        raise GatewayError(
            503, "model_catalog_unavailable", "the cortex needs the openai_compat plugin"
        )
    return service(ModelCatalog)


def caller() -> Caller:
    keep = (b"host", b"authorization")
    headers = [(k.lower().encode(), v.encode()) for k, v in request.headers.items()]
    scope = request.scope
    return Caller(
        principal=current_principal(),
        headers=[(k, v) for k, v in headers if k in keep],
        client=scope.get("client"),
        server=scope.get("server"),
        scheme=scope.get("scheme", "http"),
    )


@bp.post("/cortex/chat")
@requires_gate(GATE_CHAT)
@document_request(ChatRequest)
@document_response(ChatEvent, 200)
@document_media_type("text/event-stream")
@document_response(ErrorResponse, 404)
@document_response(ErrorResponse, 503)
async def cortex_chat() -> Response:
    """Ask the operator copilot: an SSE stream of typed events (``cortex.started``,
    ``message.delta``, ``tool.call``, ``tool.result``, ``message.completed``), ending with
    ``done`` or ``error``. The model may call read-only tools over the gateway (status,
    runs and their events, approvals, jobs, audit), each run as the caller, so the answer
    shows only what the caller could read through the API. A client that disconnects
    cancels the model call. 404 ``model_not_found``; 503 without a model catalog."""
    raw = await request.get_data()
    data: Any = await request.get_json() if raw.strip() else {}
    if not isinstance(data, dict):
        raise GatewayError(400, "invalid_request_body", "the request body must be a JSON object")
    data.pop("policy_gate", None)
    try:
        body = ChatRequest.model_validate(data)
    except ValidationError as exc:
        message, param = validation_message(exc)
        raise GatewayError(400, "invalid_request_body", message, details={"param": param}) from None
    settings = config()
    models = catalog()
    model = body.model or settings.model
    models.resolve(model)  # 404 model_not_found before the stream opens
    slot = stream_slot()
    who = caller()
    chat = Chat(
        app=current_app._get_current_object(),  # type: ignore[attr-defined]
        caller=who,
        catalog=models,
        model=model,
        config=settings,
        tools=available(current_app, who.principal),
        readiness=readiness(),
        messages=[
            {"role": "system", "content": settings.system_prompt or SYSTEM},
            *(t.model_dump() for t in body.history),
            {"role": "user", "content": body.message},
        ],
    )
    every = context().settings.events.heartbeat_seconds
    return live_response(_with_keepalive(chat.events(), every), "text/event-stream", slot)


async def _with_keepalive(events: AsyncIterator[bytes], every: float) -> AsyncIterator[bytes]:
    """A comment line each time nothing was sent for ``every`` seconds (a slow model, a
    slow tool), so proxies keep the stream open; closing the stream cancels the chat."""
    async with contextlib.aclosing(with_ticks(events, lambda: every, _TICK)) as ticking:
        async for item in ticking:
            yield b": keep-alive\n\n" if item is _TICK else item


_TICK = object()


@bp.get("/cortex/status")
@validate_response(CortexStatus)
async def cortex_status() -> CortexStatus:
    """Readiness: the configured model (in the catalog, reachable at the last call or
    ``?probe=true`` now), the tools the caller's chat may use, and the caller's last use
    (with when anyone last used it)."""
    return await status_of(current_principal(), request.args.get("probe") == "true")


async def status_of(principal: Principal, probe: bool = False) -> CortexStatus:
    """The readiness as ``principal`` sees it (the route's, and the ``CortexAPI``
    service's); ``probe``: call the model now."""
    settings = config()
    seen = readiness()
    model = ModelReadiness(name=settings.model, configured=False)
    from plugins.openai_compat.contract import ModelCatalog

    if has_service(ModelCatalog):
        models = service(ModelCatalog)
        route = models.models.get(settings.model)
        if route is not None:
            model.configured, model.provider = True, route.provider
            if probe:
                await _probe(models, settings.model, seen)
    model.reachable, model.checked_ms, model.error = seen.reachable, seen.checked_ms, seen.error
    t = chats
    async with context().store.read() as conn:
        mine = (
            await conn.execute(
                sa.select(t).where(t.c.owner == principal.key).order_by(t.c.n.desc()).limit(1)
            )
        ).first()
        anyone = (await conn.execute(sa.select(sa.func.max(t.c.finished_ms)))).scalar()
    last = None
    if mine is not None:
        last = LastUse(
            at_ms=mine.finished_ms,
            outcome=mine.outcome,
            model=mine.model,
            tool_calls=mine.tool_calls,
            error_code=mine.error_code,
        )
    tools = available(current_app, principal)
    return CortexStatus(
        ready=model.configured and model.reachable is not False,
        model=model,
        tools=[ToolInfo(name=x.name, description=x.description) for x in tools],
        last_use=last,
        last_use_any_ms=anyone,
    )


class CortexService(CortexAPI):
    async def status(self, principal: Principal, probe: bool = False) -> CortexStatus:
        return await status_of(principal, probe)


async def _probe(models: Any, model: str, seen: Readiness) -> None:
    """A one-token call: the model answers, or why not."""
    from plugins.openai_compat.contract import ProviderError

    body = {"messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
    try:
        await models.chat(model, body)
    except ProviderError as exc:
        seen.saw(False, f"{exc.code}: {exc.message}")
        return
    seen.saw(True)
