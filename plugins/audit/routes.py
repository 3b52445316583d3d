"""``/gateway/audit/*``: the log, its summary, its export and its verification; and the
hook that records each request before its response is sent."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from quart import Blueprint, Response
from quart_schema import document_response, validate_querystring, validate_response

from host.api import (
    context,
    document_media_type,
    live_response,
    requires_gate,
)
from plugins.audit import queries
from plugins.audit.capture import REQUEST_ID_HEADER, request_record, websocket_record
from plugins.audit.chain import verify
from plugins.audit.config import AuditConfig
from plugins.audit.models import (
    AuditFilter,
    AuditLogPage,
    AuditLogQuery,
    AuditRecordModel,
    AuditSummary,
    AuditSummaryQuery,
    AuditVerification,
)
from plugins.audit.writer import AuditWriter

log = logging.getLogger("gateway.audit")

GATE_READ = "allow_audit_read"
STATE_KEY = "audit"
JSONL = "application/x-ndjson"

bp = Blueprint("audit", __name__)


@dataclass
class AuditState:
    """The plugin's per-app state (``context().extras["audit"]``)."""

    writer: AuditWriter
    config: AuditConfig


def state() -> AuditState | None:
    found: AuditState | None = context().extras.get(STATE_KEY)
    return found


@bp.after_app_request
async def record_request(response: Response) -> Response:
    """Store the request's record before the response leaves (mutating requests and
    auth failures; see ``capture.request_record``)."""
    audit = state()
    if audit is None:
        return response
    try:
        record = await request_record(response, audit.config)
        if record is not None:
            response.headers[REQUEST_ID_HEADER] = record.request_id or ""
            await audit.writer.write(record)
    except Exception:
        # The action already happened: its answer still goes out; the failure is
        # logged and counted (the writer's ``failures`` in the status).
        log.exception("could not record the request in the audit log")
    return response


@bp.after_app_websocket
async def record_websocket(response: Any) -> Any:
    """Store the record of a WebSocket upgrade refused for want of credentials."""
    audit = state()
    if audit is None:
        return response
    try:
        record = websocket_record(response)
        if record is not None:
            await audit.writer.write(record)
    except Exception:
        log.exception("could not record the refused WebSocket in the audit log")
    return response


@bp.get("/gateway/audit/log")
@requires_gate(GATE_READ)
@validate_querystring(AuditLogQuery)
@validate_response(AuditLogPage)
async def audit_log(query_args: AuditLogQuery) -> AuditLogPage:
    """Audit records, newest first; filter by source, action, actor, reason code,
    outcome and time window; page with ``?cursor=`` (the previous page's ``next_cursor``)."""
    found, cursor = await queries.page(
        context().store, query_args, query_args.limit, query_args.cursor
    )
    return AuditLogPage(
        records=[AuditRecordModel(**r.as_dict()) for r in found], next_cursor=cursor
    )


@bp.get("/gateway/audit/summary")
@requires_gate(GATE_READ)
@validate_querystring(AuditSummaryQuery)
@validate_response(AuditSummary)
async def audit_summary(query_args: AuditSummaryQuery) -> AuditSummary:
    """Counts of records by source, action, actor, reason code and outcome in a time
    window (``since_ms``, ``until_ms``; all time by default)."""
    report = await queries.summary(context().store, query_args.since_ms, query_args.until_ms)
    return AuditSummary(**report)


@bp.get("/gateway/audit/export")
@requires_gate(GATE_READ)
@validate_querystring(AuditFilter)
@document_response(AuditRecordModel, 200)
@document_media_type(JSONL)
async def audit_export(query_args: AuditFilter) -> Response:
    """Every matching record, oldest first, as JSON lines (with their hashes, so a copy
    can be checked elsewhere); the same filters as the log."""
    store = context().store

    async def lines() -> AsyncIterator[bytes]:
        async for record in queries.export(store, query_args):
            yield (json.dumps(record.as_dict(), separators=(",", ":")) + "\n").encode()

    return live_response(lines(), JSONL)


@bp.get("/gateway/audit/verify")
@requires_gate(GATE_READ)
@validate_response(AuditVerification)
async def audit_verify() -> AuditVerification:
    """Check the hash chain: ``ok``, or the first broken link (a record altered, removed
    or relinked; records removed with no retention record accounting for them)."""
    report = await verify(context().store)
    return AuditVerification(**report.as_dict())
