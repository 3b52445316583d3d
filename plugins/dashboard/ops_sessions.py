"""The ops console's sessions and memory pages (``/ops/sessions``, ``/ops/memory``,
``/ops/memory-graph``) with their forms, through the sessions plugin's
``SessionsService``: the signed-in principal's own sessions and memory. A form keeps the
gate of the API it stands for (``allow_session_write``, ``allow_memory_write``), needs
the session and its CSRF token (403, nothing changed), and answers a refusal with the
page and the API's status."""

from __future__ import annotations

import math
import uuid
from typing import Any

from pydantic import ValidationError
from quart import redirect, request
from werkzeug.datastructures import MultiDict

from host.api import GatewayError, context, has_service, owner_key, public, raw_body, service
from plugins.dashboard.gates import GATE_MEMORY_WRITE, GATE_SESSION_WRITE
from plugins.dashboard.pages import bp, current_session, html, page, require_form, to_login
from plugins.dashboard.websession import WebSession
from plugins.sessions.contract import MemoryEntryRequest, MemoryQuery, NewMessage, SessionsService

MEMORY_TYPES = (
    "identity",
    "goal",
    "decision",
    "todo",
    "preference",
    "fact",
    "event",
    "observation",
)


def sessions_service() -> SessionsService | None:
    return service(SessionsService) if has_service(SessionsService) else None


async def _disabled(session: WebSession, title: str) -> Any:
    return await page(
        "disabled.html", session, code=503, section="sessions", title=title, plugin="sessions"
    )


async def _refused(session: WebSession, exc: GatewayError, back: str) -> Any:
    return await page(
        "form_result.html", session, code=exc.status, section="sessions", error=exc, back=back
    )


@bp.get("/ops/sessions")
@public
@html()
async def ops_sessions() -> Any:
    """The signed-in principal's sessions, with a form to branch one."""
    session = await current_session()
    if session is None:
        return to_login()
    svc = sessions_service()
    if svc is None:
        return await _disabled(session, "Sessions")
    listing = await svc.list_sessions(owner_key(session.principal), limit=200)
    return await page("sessions.html", session, section="sessions", listing=listing)


@bp.get("/ops/sessions/<session_key>")
@public
@html()
async def ops_session(session_key: str) -> Any:
    """One session: its message tree (the current conversation marked), reset and
    branch forms."""
    session = await current_session()
    if session is None:
        return to_login()
    svc = sessions_service()
    if svc is None:
        return await _disabled(session, "Sessions")
    try:
        detail = await svc.session(owner_key(session.principal), session_key)
    except GatewayError as exc:
        return await _refused(session, exc, "/ops/sessions")
    children: dict[str | None, list[Any]] = {}
    for message in detail.entries:
        children.setdefault(message.parent_id, []).append(message)
    return await page(
        "session.html",
        session,
        section="sessions",
        detail=detail,
        children=children,
        lineage=set(detail.lineage),
    )


@bp.post("/ops/sessions/<session_key>")
@public
@raw_body
@html()
async def ops_session_reset(session_key: str) -> Any:
    """Reset the session (form); needs ``allow_session_write``."""
    session, _form = await require_form(await current_session())
    back = f"/ops/sessions/{session_key}"
    svc = sessions_service()
    if svc is None:
        return await _disabled(session, "Sessions")
    try:
        context().auth.require_gate(session.principal, GATE_SESSION_WRITE, "resetting a session")
        await svc.reset(owner_key(session.principal), session_key)
    except GatewayError as exc:
        return await _refused(session, exc, back)
    return redirect(back, 303)


@bp.post("/ops/sessions/branch")
@public
@raw_body
@html()
async def ops_sessions_branch() -> Any:
    """Branch a session (form: ``session_key``, optional ``entry_id`` and
    ``new_session_key``); needs ``allow_session_write``."""
    session, form = await require_form(await current_session())
    key = (form.get("session_key") or "").strip()
    svc = sessions_service()
    if svc is None:
        return await _disabled(session, "Sessions")
    try:
        context().auth.require_gate(session.principal, GATE_SESSION_WRITE, "branching a session")
        if not key:
            raise GatewayError(400, "invalid_request_body", "session_key: required")
        fresh = await svc.branch_session(
            owner_key(session.principal),
            key,
            at=(form.get("entry_id") or None),
            new_key=(form.get("new_session_key") or "").strip() or None,
        )
    except GatewayError as exc:
        return await _refused(session, exc, "/ops/sessions")
    return redirect(f"/ops/sessions/{fresh.session_key}", 303)


@bp.get("/ops/memory")
@public
@html()
async def ops_memory() -> Any:
    """A session's memory entries (``?session_key=``) with create, edit and delete forms."""
    session = await current_session()
    if session is None:
        return to_login()
    svc = sessions_service()
    if svc is None:
        return await _disabled(session, "Memory")
    key = request.args.get("session_key", "").strip()
    owner = owner_key(session.principal)
    view = None
    if key:
        try:
            view = await svc.search_memory(owner, key, MemoryQuery())
        except GatewayError as exc:
            return await _refused(session, exc, "/ops/memory")
    listing = await svc.list_sessions(owner, limit=200)
    return await page(
        "memory.html",
        session,
        section="memory",
        key=key,
        view=view,
        listing=listing,
        memory_types=MEMORY_TYPES,
    )


def _entry_request(form: MultiDict[str, str]) -> MemoryEntryRequest:
    tags = [t.strip() for t in (form.get("tags") or "").split(",") if t.strip()]
    raw: dict[str, Any] = {
        "summary": form.get("summary") or "",
        "tags": tags,
        "memory_type": form.get("memory_type") or "fact",
    }
    if form.get("importance"):
        raw["importance"] = form.get("importance")
    try:
        return MemoryEntryRequest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise GatewayError(400, "invalid_request_body", f"{field}: {first['msg']}") from None


@bp.post("/ops/memory")
@public
@raw_body
@html()
async def ops_memory_write() -> Any:
    """Create or edit (``op=save``) or delete (``op=delete``) a memory entry (form:
    ``session_key``, ``entry_id``, ``summary``, ``tags``, ``memory_type``,
    ``importance``); needs ``allow_memory_write``."""
    session, form = await require_form(await current_session())
    key = (form.get("session_key") or "").strip()
    back = f"/ops/memory?session_key={key}" if key else "/ops/memory"
    svc = sessions_service()
    if svc is None:
        return await _disabled(session, "Memory")
    owner = owner_key(session.principal)
    try:
        context().auth.require_gate(session.principal, GATE_MEMORY_WRITE, "writing memory")
        if not key:
            raise GatewayError(400, "invalid_request_body", "session_key: required")
        entry_id = (form.get("entry_id") or "").strip()
        if form.get("op") == "delete":
            await svc.delete_memory(owner, key, entry_id)
        else:
            entry = _entry_request(form)
            await svc.put_memory(owner, key, entry_id or f"m-{uuid.uuid4().hex[:12]}", entry)
    except GatewayError as exc:
        return await _refused(session, exc, back)
    return redirect(back, 303)


@bp.get("/ops/memory-graph")
@public
@html()
async def ops_memory_graph() -> Any:
    """A session's memory graph (``?session_key=``) drawn as an SVG picture."""
    session = await current_session()
    if session is None:
        return to_login()
    svc = sessions_service()
    if svc is None:
        return await _disabled(session, "Memory graph")
    key = request.args.get("session_key", "").strip()
    owner = owner_key(session.principal)
    drawing = None
    if key:
        try:
            graph = await svc.memory_graph(owner, key, max_nodes=200)
        except GatewayError as exc:
            return await _refused(session, exc, "/ops/memory-graph")
        drawing = layout(graph)
    listing = await svc.list_sessions(owner, limit=200)
    return await page(
        "memory_graph.html", session, section="memory", key=key, drawing=drawing, listing=listing
    )


def layout(graph: Any, size: int = 600) -> dict[str, Any]:
    """Nodes on a circle (sized by importance), edges as lines: a picture that needs no
    script and stays readable up to the 200 nodes the graph holds."""
    centre = size / 2
    radius = size / 2 - 70 if len(graph.nodes) > 1 else 0
    points: dict[str, tuple[float, float]] = {}
    nodes = []
    for i, node in enumerate(graph.nodes):
        angle = 2 * math.pi * i / max(1, len(graph.nodes)) - math.pi / 2
        x = round(centre + radius * math.cos(angle), 1)
        y = round(centre + radius * math.sin(angle), 1)
        points[node.id] = (x, y)
        nodes.append({"node": node, "x": x, "y": y, "r": round(6 + 10 * node.importance, 1)})
    edges = [
        {
            "edge": e,
            "x1": points[e.source][0],
            "y1": points[e.source][1],
            "x2": points[e.target][0],
            "y2": points[e.target][1],
        }
        for e in graph.edges
        if e.source in points and e.target in points
    ]
    return {"size": size, "nodes": nodes, "edges": edges, "truncated": graph.truncated}


@bp.get("/ops/chat")
@public
@html()
async def ops_chat() -> Any:
    """A session's conversation (``?session_key=``) with a form to append a message, and
    a form to start a new session (``/webchat`` talks to models)."""
    session = await current_session()
    if session is None:
        return to_login()
    svc = sessions_service()
    if svc is None:
        return await _disabled(session, "Chat")
    owner = owner_key(session.principal)
    key = request.args.get("session_key", "").strip()
    conversation = None
    if key:
        try:
            conversation = await svc.conversation(owner, key)
        except GatewayError as exc:
            return await _refused(session, exc, "/ops/chat")
    listing = await svc.list_sessions(owner, limit=200)
    return await page(
        "chat.html", session, section="chat", key=key, conversation=conversation, listing=listing
    )


async def _append(session: WebSession, key: str, role: str, content: str) -> None:
    svc = sessions_service()
    if svc is None:
        raise GatewayError(503, "feature_disabled", "the sessions plugin is off")
    context().auth.require_gate(session.principal, GATE_SESSION_WRITE, "appending a message")
    if role not in ("user", "system", "assistant"):
        raise GatewayError(400, "invalid_request_body", "role: one of user, system, assistant")
    if not content.strip():
        raise GatewayError(400, "invalid_request_body", "content: required")
    await svc.append(owner_key(session.principal), key, [NewMessage(role, content)], source="ops")


@bp.post("/ops/chat/new")
@public
@raw_body
@html()
async def ops_chat_new() -> Any:
    """Start a session (form: ``session_key``, generated when empty, and its first
    ``content``, with ``role`` system or user); 409 ``session_exists`` for a key in use;
    needs ``allow_session_write``."""
    session, form = await require_form(await current_session())
    key = (form.get("session_key") or "").strip() or f"chat-{uuid.uuid4().hex[:12]}"
    svc = sessions_service()
    try:
        if svc is not None:
            try:
                await svc.session(owner_key(session.principal), key)
            except GatewayError as exc:
                if exc.status != 404:
                    raise
            else:
                raise GatewayError(409, "session_exists", f"a session {key!r} exists")
        await _append(session, key, form.get("role") or "user", form.get("content") or "")
    except GatewayError as exc:
        return await _refused(session, exc, "/ops/chat")
    return redirect(f"/ops/chat?session_key={key}", 303)


@bp.post("/ops/chat/send")
@public
@raw_body
@html()
async def ops_chat_send() -> Any:
    """Append a message to a session (form: ``session_key``, ``content``, ``role``,
    default user); needs ``allow_session_write``."""
    session, form = await require_form(await current_session())
    key = (form.get("session_key") or "").strip()
    try:
        if not key:
            raise GatewayError(400, "invalid_request_body", "session_key: required")
        await _append(session, key, form.get("role") or "user", form.get("content") or "")
    except GatewayError as exc:
        return await _refused(session, exc, f"/ops/chat?session_key={key}")
    return redirect(f"/ops/chat?session_key={key}", 303)
