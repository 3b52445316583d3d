"""``/sessions``: agent (ACP) sessions (seed 000), plus opening one and prompting it.
Handlers parse the request and call the session service (``service.py``)."""

from __future__ import annotations

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
    owner_key,
    requires_gate,
    scan_text,
    stream_response,
)
from plugins.agents.gates import GATE_WRITE
from plugins.agents.models import (
    AgentSession,
    AgentSessionList,
    OpenRequest,
    PromptAccepted,
    PromptRequest,
    PruneRequest,
    PruneResponse,
    SessionQuery,
)
from plugins.agents.service import END_EVENTS, AgentSessions, stream_of

bp = Blueprint("agents", __name__)
SERVICE_KEY = "agents.service"


def agent_sessions() -> AgentSessions:
    found: AgentSessions | None = context(current_app).extras.get(SERVICE_KEY)
    if found is None:
        raise GatewayError(503, "agents_not_ready", "the agents plugin has not started")
    return found


@bp.get("/sessions")
@validate_querystring(SessionQuery)
@validate_response(AgentSessionList)
async def list_sessions(query_args: SessionQuery) -> AgentSessionList:
    """The caller's agent sessions (everyone's with ``allow_agent_read_all``), newest
    first; filter by ``state`` and ``agent``."""
    found = await agent_sessions().list_sessions(
        current_principal(), query_args.state, query_args.agent, query_args.limit
    )
    return AgentSessionList(sessions=found)


@bp.post("/sessions")
@requires_gate(GATE_WRITE)
@document_request(OpenRequest)
@validate_response(AgentSession, 201)
@document_response(ErrorResponse, 404)
@document_response(ErrorResponse, 409)
@document_response(ErrorResponse, 502)
async def open_session() -> tuple[AgentSession, int]:
    """Start a configured agent and open an ACP session in a workspace. 404
    ``agent_not_found``, 409 ``too_many_sessions``, 502 ``agent_start_failed`` (nothing
    is kept: no session, no process)."""
    body: OpenRequest = await json_body(OpenRequest)
    principal = current_principal()
    record = await agent_sessions().open(
        body.agent,
        owner=owner_key(principal),
        created_by=principal.name,
        workspace=body.workspace,
        metadata=body.metadata,
    )
    return record, 201


@bp.post("/sessions/prune")
@requires_gate(GATE_WRITE)
@document_request(PruneRequest)
@validate_response(PruneResponse)
async def prune_sessions() -> PruneResponse:
    """Expire idle sessions past their agent's TTL, then remove closed and expired ones
    (last active ``older_than_seconds`` ago, if given) with their events: the caller's,
    everyone's with ``allow_agent_act_all``."""
    body: PruneRequest = await json_body(PruneRequest)
    removed, expired = await agent_sessions().prune(current_principal(), body.older_than_seconds)
    return PruneResponse(removed=removed, expired=expired)


@bp.get("/sessions/<session_id>")
@validate_response(AgentSession)
async def get_session(session_id: str) -> AgentSession:
    """One session: agent, workspace, state, whether its agent process runs here."""
    return await agent_sessions().get(session_id, current_principal())


@bp.get("/sessions/<session_id>/events")
@document_response(EventPage, 200)
@document_stream
async def session_events(session_id: str) -> Response:
    """The session's events (the agent's ``session/update`` notifications, prompts,
    permission requests, files, exits): SSE with ``Last-Event-ID`` resume, JSONL, or a
    JSON page; the stream ends after ``session.closed`` or ``session.expired``."""
    await agent_sessions().get(session_id, current_principal())
    return await stream_response(
        context().hub, request, stream_of(session_id), until=lambda e: e.type in END_EVENTS
    )


@bp.post("/sessions/<session_id>/prompt")
@requires_gate(GATE_WRITE)
@document_request(PromptRequest)
@validate_response(PromptAccepted, 202)
@validate_response(PromptAccepted, 200)
@document_response(ErrorResponse, 400)
@document_response(ErrorResponse, 409)
@document_response(ErrorResponse, 502)
async def prompt_session(session_id: str) -> tuple[PromptAccepted, int]:
    """Send the agent a prompt (202: its updates follow on the session's events; with
    ``wait``, 200 when its turn ended). The text is scanned first (400
    ``content_blocked``). 409 ``session_closed`` or ``prompt_in_progress``; a session
    whose agent is gone is resumed first (502 ``agent_start_failed``)."""
    body: PromptRequest = await json_body(PromptRequest)
    principal = current_principal()
    sessions = agent_sessions()
    await sessions.get(session_id, principal)
    scan = await scan_text(
        context(), body.text, "input", {"stage": "agent_prompt", "session_id": session_id}
    )
    if scan.blocked:
        reasons = "; ".join(f["reason"] for f in scan.findings if f["reason"]) or "blocked"
        raise GatewayError(400, "content_blocked", f"the prompt was blocked: {reasons}")
    task, position = await sessions.start_prompt(session_id, scan.text, principal)
    stop_reason = await task if body.wait else None
    record = await sessions.get(session_id)
    accepted = PromptAccepted(session=record, stop_reason=stop_reason, events_after=position)
    return accepted, 200 if body.wait else 202


@bp.post("/sessions/<session_id>/resume")
@requires_gate(GATE_WRITE)
@validate_response(AgentSession)
@document_response(ErrorResponse, 409)
@document_response(ErrorResponse, 502)
async def resume_session(session_id: str) -> AgentSession:
    """Re-attach: start the session's agent again if its process is gone, loading the
    session (``session/load``) when the agent offers it; 409 ``session_closed``."""
    return await agent_sessions().resume(session_id, current_principal())


@bp.delete("/sessions/<session_id>")
@requires_gate(GATE_WRITE)
@validate_response(AgentSession)
async def delete_session(session_id: str) -> AgentSession:
    """Stop the agent process and close the session (its pending permission requests are
    withdrawn); a closed session is answered as it is. ``prune`` removes it."""
    return await agent_sessions().close(session_id, current_principal(), "closed by request")
