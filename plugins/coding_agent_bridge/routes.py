"""``/gateway/external-coding-agent/...``: the bridge's routes (seed 004). Handlers parse
the request and call the API (``api.py``); an ACP agent's sessions go through
``agent_link.py``."""

from __future__ import annotations

from pydantic import BaseModel, Field
from quart import Blueprint, Response, current_app, request
from quart_schema import (
    document_request,
    document_response,
    validate_querystring,
    validate_response,
)

from host.api import (
    ErrorResponse,
    EventPage,
    GatewayError,
    context,
    current_principal,
    document_stream,
    json_body,
    requires_gate,
    scan_text,
    stream_response,
)
from plugins.coding_agent_bridge import agent_link
from plugins.coding_agent_bridge.api import END_EVENTS, BridgeAPI, stream_of
from plugins.coding_agent_bridge.config import BridgeConfig
from plugins.coding_agent_bridge.gates import GATE_WRITE
from plugins.coding_agent_bridge.models import (
    BridgeSession,
    BridgeSessionList,
    CloseRequest,
    DrainRequest,
    DrainResponse,
    FollowupQueued,
    FollowupRequest,
    OpenRequest,
    ProgressEvent,
    ProgressRequest,
    ReapRequest,
    ReapResponse,
)

PREFIX = "/gateway/external-coding-agent"
bp = Blueprint("coding_agent_bridge", __name__, url_prefix=PREFIX)


def bridge() -> BridgeAPI:
    return BridgeAPI(current_app)


class SessionQuery(BaseModel):
    state: str | None = Field(None, pattern="^(open|closed|expired)$")
    limit: int = Field(100, ge=1, le=1000)


@bp.get("/sessions")
@validate_querystring(SessionQuery)
@validate_response(BridgeSessionList)
async def list_sessions(query_args: SessionQuery) -> BridgeSessionList:
    """The caller's bridge sessions (everyone's with ``allow_bridge_read_all``), newest
    first; ``?state=open|closed|expired``."""
    found = await bridge().list_sessions(current_principal(), query_args.state, query_args.limit)
    return BridgeSessionList(sessions=found)


@bp.post("/sessions")
@requires_gate(GATE_WRITE)
@document_request(OpenRequest)
@validate_response(BridgeSession, 201)
@validate_response(BridgeSession, 200)
@document_response(ErrorResponse, 409)
@document_response(ErrorResponse, 502)
async def open_session() -> tuple[BridgeSession, int]:
    """Open a session for a workspace (201), or reuse the caller's open one for it (200,
    ``reused``); 409 ``too_many_sessions`` at the configured maximum. With ``agent`` the
    gateway starts that ACP agent: 502 ``agent_start_failed`` (and no session) if it
    cannot."""
    parsed: OpenRequest = await json_body(OpenRequest)
    principal = current_principal()
    if parsed.agent is None:
        record = await bridge().open(parsed.workspace, principal, parsed.metadata)
    else:
        record = await agent_link.open_with_agent(current_app, parsed, principal)
    return record, 200 if record.reused else 201


@bp.get("/sessions/<session_id>")
@validate_response(BridgeSession)
async def get_session(session_id: str) -> BridgeSession:
    """The session: state, workspace, queued follow-ups, its stream's last seq."""
    return await bridge().get(session_id, current_principal())


@bp.post("/sessions/<session_id>/progress")
@requires_gate(GATE_WRITE)
@document_request(ProgressRequest)
@validate_response(ProgressEvent, 201)
@document_response(ErrorResponse, 409)
async def append_progress(session_id: str) -> tuple[ProgressEvent, int]:
    """Append a progress event to the session's stream; 409 ``session_closed``."""
    parsed: ProgressRequest = await json_body(ProgressRequest)
    data = {"kind": parsed.kind, "message": parsed.message, "data": parsed.data}
    event = await bridge().progress(session_id, current_principal(), "progress", data)
    return event, 201


@bp.post("/sessions/<session_id>/followups")
@requires_gate(GATE_WRITE)
@document_request(FollowupRequest)
@validate_response(FollowupQueued, 201)
@document_response(ErrorResponse, 400)
@document_response(ErrorResponse, 409)
async def queue_followup(session_id: str) -> tuple[FollowupQueued, int]:
    """Queue an instruction for the agent (an ACP agent gets it as its next prompt); the
    text is scanned first: 400 ``content_blocked`` (nothing queued), or the redacted text
    is queued. 409 ``session_closed``."""
    parsed: FollowupRequest = await json_body(FollowupRequest)
    principal = current_principal()
    api = bridge()
    await api.readable(session_id, principal)
    scan = await scan_text(
        context(), parsed.text, "input", {"stage": "followup", "session_id": session_id}
    )
    if scan.blocked:
        reasons = "; ".join(f["reason"] for f in scan.findings if f["reason"]) or "blocked"
        raise GatewayError(400, "content_blocked", f"the follow-up was blocked: {reasons}")
    followup, waiting = await api.queue(session_id, principal, scan.text)
    agent_link.wake(current_app, session_id)
    return FollowupQueued(followup=followup, queued=waiting, redacted=scan.text != parsed.text), 201


@bp.post("/sessions/<session_id>/followups/drain")
@requires_gate(GATE_WRITE)
@document_request(DrainRequest)
@validate_response(DrainResponse)
@document_response(ErrorResponse, 409)
async def drain_followups(session_id: str) -> DrainResponse:
    """Hand the queued follow-ups to the caller, oldest first, at most ``limit``; each
    follow-up is handed out once (also to callers draining at once through several
    gateway processes). 409 ``session_closed``."""
    parsed: DrainRequest = await json_body(DrainRequest)
    principal = current_principal()
    return await bridge().drain(session_id, principal, parsed.limit, principal.name)


@bp.get("/sessions/<session_id>/stream")
@document_response(EventPage, 200)
@document_stream
async def stream(session_id: str) -> Response:
    """The session's events live: SSE with ``Last-Event-ID`` resume (stays open and
    delivers new events as they happen; ends after ``session.closed`` or
    ``session.expired``), JSONL, or a JSON page (``?after=&limit=``)."""
    await bridge().readable(session_id, current_principal())
    return await stream_response(
        context().hub, request, stream_of(session_id), until=lambda e: e.type in END_EVENTS
    )


@bp.post("/sessions/<session_id>/close")
@requires_gate(GATE_WRITE)
@document_request(CloseRequest)
@validate_response(BridgeSession)
async def close_session(session_id: str) -> BridgeSession:
    """Close the session (an ACP agent's session is closed too); a session already closed
    or expired is answered as it is."""
    parsed: CloseRequest = await json_body(CloseRequest)
    record, changed = await bridge().end(session_id, current_principal(), "closed", parsed.reason)
    if changed:
        await agent_link.stop(current_app, record, parsed.reason or "bridge session closed")
    return record


@bp.post("/reap")
@requires_gate(GATE_WRITE)
@document_request(ReapRequest)
@validate_response(ReapResponse)
async def reap() -> ReapResponse:
    """Expire the caller's open sessions (everyone's with ``allow_bridge_act_all``) idle
    for ``idle_seconds`` (default ``idle_ttl_seconds``); returns their ids."""
    parsed: ReapRequest = await json_body(ReapRequest)
    api, principal = bridge(), current_principal()
    config: BridgeConfig = api.config
    idle = parsed.idle_seconds if parsed.idle_seconds is not None else config.idle_ttl_seconds
    reaped = []
    for session_id in await api.idle_sessions(principal, idle):
        record, changed = await api.end(session_id, principal, "expired", "idle")
        if changed:
            reaped.append(session_id)
            await agent_link.stop(current_app, record, "bridge session expired")
    return ReapResponse(reaped=reaped, idle_seconds=idle)
