"""``POST /gateway/deploy`` and ``POST /gateway/agents/{agent_id}/stop``."""

from __future__ import annotations

from pydantic import ValidationError
from quart import Blueprint, request
from quart_schema import document_request, document_response, validate_request, validate_response

from host.api import (
    ErrorResponse,
    GatewayError,
    context,
    current_principal,
    requires_gate,
    validation_message,
)
from plugins.deploy import deployments
from plugins.deploy.models import AgentRecord, DeployRequest, StopRequest

bp = Blueprint("deploy", __name__)
GATE = "allow_deploy"


@bp.post("/gateway/deploy")
@requires_gate(GATE)
@validate_request(DeployRequest)
@validate_response(AgentRecord)
@document_response(ErrorResponse, 404)
@document_response(ErrorResponse, 409)
@document_response(ErrorResponse, 422)
async def deploy(data: DeployRequest) -> AgentRecord:
    """Make an agent live at a version: a new one (``kind``, ``version``, ``spec``:
    validated by its kind first, 422 naming the field) or an earlier one
    (``rollback_to``; 404 ``version_not_found``). Stored with its version history and
    switched in one transaction (``expected_version``: 409 ``version_conflict`` unless
    it is live now); a stopped agent is live again. Audited on the ``deploy`` stream."""
    return await deployments.deploy(context(), data, current_principal())


@bp.post("/gateway/agents/<agent_id>/stop")
@requires_gate(GATE)
@document_request(StopRequest)
@validate_response(AgentRecord)
@document_response(ErrorResponse, 404)
async def stop_agent(agent_id: str) -> AgentRecord:
    """Stop an agent: its running work is cancelled (``cancelled`` lists it) and new
    work is refused (409 ``agent_stopped``) on every replica until it is deployed again.
    Stopping a stopped agent changes nothing (``changed: false``). 404
    ``agent_not_found``. Audited on the ``deploy`` stream."""
    raw = await request.get_json(silent=True) if (await request.get_data()).strip() else {}
    if not isinstance(raw, dict):
        raise GatewayError(400, "invalid_request_body", "the request body must be a JSON object")
    try:
        body = StopRequest.model_validate(raw)
    except ValidationError as exc:
        message, param = validation_message(exc)
        raise GatewayError(400, "invalid_request_body", message, param=param) from None
    return await deployments.stop(context(), agent_id, current_principal(), body.reason)
