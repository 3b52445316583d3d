"""``/approvals``: the approval gates runs wait at, and how they were decided (deciding is
``POST /runs/{id}/approve`` and ``/deny``)."""

from __future__ import annotations

from quart_schema import validate_querystring, validate_response

from host.api import current_principal
from plugins.pipelines.models import ApprovalList, ApprovalQuery
from plugins.pipelines.routes.common import bp, pipelines_api


@bp.get("/approvals")
@validate_querystring(ApprovalQuery)
@validate_response(ApprovalList)
async def list_approvals(query_args: ApprovalQuery) -> ApprovalList:
    """Approvals of the caller's runs (every run's with ``allow_pipeline_read_all`` or
    ``allow_pipeline_approve``), pending ones by default (``?status=all`` for every one),
    oldest first."""
    return await pipelines_api().list_approvals(query_args, current_principal())
