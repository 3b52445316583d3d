"""The session and memory routes of seed 004 (``/gateway/sessions``, ``/gateway/memory``,
``/gateway/memory-graph``, ``/api/memories/graph``), plus branch and restore. Handlers
parse the request, decide whose session it means (``access.py``) and call the store
(``service.py``, ``memory.py``)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ValidationError
from quart import Blueprint, current_app, request
from quart_schema import (
    document_request,
    document_response,
    validate_querystring,
    validate_response,
)

from host.api import (
    ErrorResponse,
    GatewayError,
    context,
    current_principal,
    owned_by,
    owner_key,
    requires_gate,
    validation_message,
)
from plugins.sessions.access import resolve
from plugins.sessions.contract import NewMessage
from plugins.sessions.gates import GATE_MEMORY_WRITE, GATE_READ_ALL, GATE_SESSION_WRITE
from plugins.sessions.models import (
    AllGraphQuery,
    AppendRequest,
    AppendResponse,
    BranchRequest,
    Deleted,
    EntryQuery,
    GraphQuery,
    MemoryDocumentRequest,
    MemoryEntryRecord,
    MemoryEntryRequest,
    MemoryGraph,
    MemoryQuery,
    MemoryView,
    OwnerQuery,
    SessionDetail,
    SessionList,
    SessionListQuery,
    SessionQuery,
    SessionSummary,
)
from plugins.sessions.service import SessionsStore, check_key
from plugins.sessions.tables import sessions

bp = Blueprint("sessions", __name__)
STORE_KEY = "sessions.store"


def store() -> SessionsStore:
    found: SessionsStore = context(current_app).extras[STORE_KEY]
    return found


async def body_of(model: type[BaseModel]) -> Any:
    """The JSON body as ``model``; an empty body is ``{}``. 400 naming the field."""
    raw = await request.get_data()
    data: Any = {}
    if raw.strip():
        if not request.is_json:
            raise GatewayError(
                415, "unsupported_media_type", "send the request body as application/json"
            )
        data = await request.get_json()
    if not isinstance(data, dict):
        raise GatewayError(400, "invalid_request_body", "the request body must be a JSON object")
    data.pop("policy_gate", None)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        message, param = validation_message(exc)
        raise GatewayError(400, "invalid_request_body", message, param=param) from None


# -- sessions ----------------------------------------------------------------------------


@bp.get("/gateway/sessions")
@validate_querystring(SessionListQuery)
@validate_response(SessionList)
async def list_sessions(query_args: SessionListQuery) -> SessionList:
    """The caller's sessions (everyone's with ``allow_session_read_all``), by last activity
    (``?sort=created``, ``?order=asc``), with message counts; ``?source=``, ``?user=``;
    paged with ``?limit=&offset=``."""
    visible = owned_by(sessions.c.owner, current_principal(), GATE_READ_ALL)
    return await store().list(visible, query_args)


@bp.get("/gateway/sessions/<session_key>")
@validate_querystring(SessionQuery)
@validate_response(SessionDetail)
async def get_session(session_key: str, query_args: SessionQuery) -> SessionDetail:
    """The session: its head, its lineage (the current conversation, root to head) and
    every stored message by ``seq`` (paged with ``?after_seq=&limit=``); 404
    ``session_not_found``."""
    owner = await resolve(store(), current_principal(), session_key, query_args.owner)
    return await store().detail(owner, session_key, query_args.after_seq, query_args.limit)


@bp.post("/gateway/sessions/<session_key>/append")
@requires_gate(GATE_SESSION_WRITE)
@validate_querystring(OwnerQuery)
@document_request(AppendRequest)
@validate_response(AppendResponse, 201)
@document_response(ErrorResponse, 413)
async def append_message(session_key: str, query_args: OwnerQuery) -> Any:
    """Append a message under the head (or ``parent_id``), creating the session; 201.
    Safety scanners see the text first: 400 ``content_blocked`` writes nothing, a
    redaction is stored redacted. 413 ``content_too_large`` above ``max_content_chars``."""
    principal = current_principal()
    check_key(session_key)
    body: AppendRequest = await body_of(AppendRequest)
    owner = await resolve(store(), principal, session_key, query_args.owner, act=True, creates=True)
    item = NewMessage(body.role, body.content, body.metadata)
    stored, summary = await store().append(owner, session_key, [item], parent_id=body.parent_id)
    return AppendResponse(message=stored[0], session=summary), 201


@bp.post("/gateway/sessions/<session_key>/reset")
@requires_gate(GATE_SESSION_WRITE)
@validate_querystring(OwnerQuery)
@validate_response(SessionSummary)
async def reset_session(session_key: str, query_args: OwnerQuery) -> SessionSummary:
    """Start the conversation afresh: the head goes, the messages stay stored (an earlier
    branch, listed in the detail's ``entries``); 404 ``session_not_found``."""
    owner = await resolve(store(), current_principal(), session_key, query_args.owner, act=True)
    return await store().reset(owner, session_key)


@bp.post("/gateway/sessions/<session_key>/branch")
@requires_gate(GATE_SESSION_WRITE)
@validate_querystring(OwnerQuery)
@document_request(BranchRequest)
@validate_response(SessionDetail, 201)
@document_response(ErrorResponse, 409)
async def branch_session(session_key: str, query_args: OwnerQuery) -> Any:
    """Copy the conversation up to ``entry_id`` (default: the head) into a new session of
    the caller's (``new_session_key``, or a generated key); 201 with the new session;
    404 for an unknown session or message; 409 ``session_exists``."""
    principal = current_principal()
    check_key(session_key)
    body: BranchRequest = await body_of(BranchRequest)
    owner = await resolve(store(), principal, session_key, query_args.owner)
    detail = await store().branch(
        owner, session_key, body.entry_id, owner_key(principal), body.new_session_key
    )
    return detail, 201


# -- memory ------------------------------------------------------------------------------


@bp.get("/gateway/memory/<session_key>")
@validate_querystring(MemoryQuery)
@validate_response(MemoryView)
async def read_memory(session_key: str, query_args: MemoryQuery) -> MemoryView:
    """The session's memory document and entries: the latest first, or ranked by
    ``?query=`` (full-text rank blended with importance and recency); filters
    ``memory_type``, ``workspace_id``, ``channel_id``, ``actor_id``, ``tags`` (all of
    them), ``limit``; ``?deleted=true`` lists the deleted entries."""
    owner = await resolve(store(), current_principal(), session_key, query_args.owner)
    return await store().memory.view(owner, session_key, query_args)


@bp.put("/gateway/memory/<session_key>")
@requires_gate(GATE_MEMORY_WRITE)
@validate_querystring(OwnerQuery)
@document_request(MemoryDocumentRequest)
@validate_response(MemoryView)
@document_response(ErrorResponse, 413)
async def write_memory_document(session_key: str, query_args: OwnerQuery) -> MemoryView:
    """Replace the session's free-text memory document (creating the session); 413 above
    ``max_document_chars``."""
    check_key(session_key)
    body: MemoryDocumentRequest = await body_of(MemoryDocumentRequest)
    owner = await resolve(
        store(), current_principal(), session_key, query_args.owner, act=True, creates=True
    )
    return await store().memory.put_document(owner, session_key, body.document)


@bp.get("/gateway/memory/<session_key>/<entry_id>")
@validate_querystring(EntryQuery)
@validate_response(MemoryEntryRecord)
async def read_memory_entry(
    session_key: str, entry_id: str, query_args: EntryQuery
) -> MemoryEntryRecord:
    """One memory entry; a read counts as an access (``access_count``,
    ``last_accessed_ms``); 404 ``memory_entry_not_found`` (a deleted one needs
    ``?deleted=true``)."""
    owner = await resolve(store(), current_principal(), session_key, query_args.owner)
    check_key(entry_id, "entry_id")
    return await store().memory.get_entry(owner, session_key, entry_id, deleted=query_args.deleted)


@bp.put("/gateway/memory/<session_key>/<entry_id>")
@requires_gate(GATE_MEMORY_WRITE)
@validate_querystring(OwnerQuery)
@document_request(MemoryEntryRequest)
@validate_response(MemoryEntryRecord, 201)
@validate_response(MemoryEntryRecord, 200)
@document_response(ErrorResponse, 413)
async def write_memory_entry(session_key: str, entry_id: str, query_args: OwnerQuery) -> Any:
    """Create (201) or replace (200) a memory entry (a deleted one is replaced and
    restored); creates the session; 413 above ``max_content_chars``."""
    check_key(session_key)
    check_key(entry_id, "entry_id")
    body: MemoryEntryRequest = await body_of(MemoryEntryRequest)
    owner = await resolve(
        store(), current_principal(), session_key, query_args.owner, act=True, creates=True
    )
    record, created = await store().memory.put_entry(owner, session_key, entry_id, body)
    return record, 201 if created else 200


@bp.delete("/gateway/memory/<session_key>/<entry_id>")
@requires_gate(GATE_MEMORY_WRITE)
@validate_querystring(OwnerQuery)
@validate_response(Deleted)
async def delete_memory_entry(session_key: str, entry_id: str, query_args: OwnerQuery) -> Deleted:
    """Soft-delete an entry (listed with ``?deleted=true``, restorable); 404 for an
    unknown or already deleted one."""
    owner = await resolve(store(), current_principal(), session_key, query_args.owner, act=True)
    check_key(entry_id, "entry_id")
    await store().memory.delete_entry(owner, session_key, entry_id)
    return Deleted(deleted=entry_id, session_key=session_key)


@bp.post("/gateway/memory/<session_key>/<entry_id>/restore")
@requires_gate(GATE_MEMORY_WRITE)
@validate_querystring(OwnerQuery)
@validate_response(MemoryEntryRecord)
async def restore_memory_entry(
    session_key: str, entry_id: str, query_args: OwnerQuery
) -> MemoryEntryRecord:
    """Restore a deleted entry; 404 for an unknown or live one."""
    owner = await resolve(store(), current_principal(), session_key, query_args.owner, act=True)
    check_key(entry_id, "entry_id")
    return await store().memory.restore_entry(owner, session_key, entry_id)


@bp.get("/gateway/memory-graph/<session_key>")
@validate_querystring(GraphQuery)
@validate_response(MemoryGraph)
async def session_memory_graph(session_key: str, query_args: GraphQuery) -> MemoryGraph:
    """The session's entries as nodes and their relations as edges: ``max_nodes`` (the
    most important first), ``min_edge_weight``, ``relation_types`` and the memory type
    and scope filters."""
    owner = await resolve(store(), current_principal(), session_key, query_args.owner)
    summary = await store().summary(owner, session_key)
    return await store().memory.graph([summary.session_id], query_args, qualified=False)


@bp.get("/api/memories/graph")
@validate_querystring(AllGraphQuery)
@validate_response(MemoryGraph)
async def memories_graph(query_args: AllGraphQuery) -> MemoryGraph:
    """The graph over every session the caller sees (everyone's with
    ``allow_session_read_all``; ``?owner=``, ``?session_key=`` narrow it); node ids are
    ``<session_id>/<entry_id>``."""
    principal = current_principal()
    where = [owned_by(sessions.c.owner, principal, GATE_READ_ALL)]
    if query_args.owner is not None:
        where.append(sessions.c.owner == query_args.owner)
    if query_args.session_key is not None:
        where.append(sessions.c.key == query_args.session_key)
    scope = sa.select(sessions.c.id).where(*where)
    return await store().memory.graph(scope, query_args, qualified=True)
