"""``/approvals``: the approval gates runs wait at and the approvals other plugins ask
for (an agent's permission request), and deciding either kind by its id (a run's gate is
also decided by ``POST /runs/{id}/approve`` and ``/deny``)."""

from __future__ import annotations

from quart_schema import (
    document_request,
    document_response,
    validate_querystring,
    validate_response,
)

from host.api import ErrorResponse, current_principal, requires_gate
from plugins.pipelines.gates import GATE_APPROVE
from plugins.pipelines.models import ApprovalList, ApprovalQuery, ApprovalRecord, DecisionRequest
from plugins.pipelines.routes.common import body_of, bp, pipelines_api


@bp.get("/approvals")
@validate_querystring(ApprovalQuery)
@validate_response(ApprovalList)
async def list_approvals(query_args: ApprovalQuery) -> ApprovalList:
    """Approvals of the caller's runs and agent sessions (every one with
    ``allow_pipeline_read_all`` or ``allow_pipeline_approve``), pending ones by default
    (``?status=all`` for every one), oldest first."""
    return await pipelines_api().list_approvals(query_args, current_principal())


@bp.post("/approvals/<approval_id>/approve")
@requires_gate(GATE_APPROVE)
@document_request(DecisionRequest)
@validate_response(ApprovalRecord)
@document_response(ErrorResponse, 404)
@document_response(ErrorResponse, 409)
async def approve(approval_id: str) -> ApprovalRecord:
    """Approve an approval of ``GET /approvals`` by its ``id`` (a run's gate: its run id);
    409 when it is no longer pending."""
    body = await body_of(DecisionRequest)
    return await pipelines_api().decide_approval(
        approval_id, "approved", current_principal(), body.reason
    )


@bp.post("/approvals/<approval_id>/deny")
@requires_gate(GATE_APPROVE)
@document_request(DecisionRequest)
@validate_response(ApprovalRecord)
@document_response(ErrorResponse, 404)
@document_response(ErrorResponse, 409)
async def deny(approval_id: str) -> ApprovalRecord:
    """Deny an approval of ``GET /approvals`` by its ``id``; 409 when it is no longer
    pending."""
    body = await body_of(DecisionRequest)
    return await pipelines_api().decide_approval(
        approval_id, "denied", current_principal(), body.reason
    )
