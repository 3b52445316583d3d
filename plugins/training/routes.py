"""``/gateway/training``: collection status and settings, rollouts and their feedback,
exports."""

from __future__ import annotations

from typing import Any

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
    Principal,
    context,
    current_principal,
    now_ms,
    require_owner,
    requires_gate,
    validation_message,
)
from plugins.training import exports, rollouts
from plugins.training.collector import Collector, collector_of
from plugins.training.config import patch_of
from plugins.training.contract import TrainingAPI
from plugins.training.exports import STREAM, audit
from plugins.training.gates import (
    GATE_ACT_ALL,
    GATE_CONFIG,
    GATE_EXPORT,
    GATE_FEEDBACK,
    GATE_READ_ALL,
)
from plugins.training.models import (
    ConfigPatch,
    ConfigResponse,
    ExportList,
    ExportRecord,
    ExportRequest,
    FeedbackRequest,
    QueueStatus,
    RolloutList,
    RolloutQuery,
    RolloutRecord,
    TrainingStatus,
)

bp = Blueprint("training", __name__)


def collector() -> Collector:
    found = collector_of(current_app)
    if found is None:
        raise GatewayError(503, "training_not_ready", "the training plugin has not started")
    return found


async def json_body() -> Any:
    raw = await request.get_data()
    data: Any = {}
    if raw.strip():
        data = await request.get_json()
    if not isinstance(data, dict):
        raise GatewayError(400, "invalid_request_body", "the request body must be a JSON object")
    data.pop("policy_gate", None)  # checked by the host against the route's gate
    return data


async def body_of(model: type[BaseModel]) -> Any:
    data = await json_body()
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        message, param = validation_message(exc)
        raise GatewayError(400, "invalid_request_body", message, details={"param": param}) from None


@bp.get("/gateway/training/status")
@validate_response(TrainingStatus)
async def training_status() -> TrainingStatus:
    """Collection state (the effective settings), rollout counts by outcome and source
    (the caller's own, everyone's with ``allow_training_read_all``), this process's
    recording queue, the last export the caller may read, and the trainer plugins."""
    return await status_of(current_principal())


async def status_of(principal: Principal) -> TrainingStatus:
    """The status as ``principal`` sees it (the route's, and the ``TrainingAPI``'s)."""
    found = collector()
    config = await found.config()
    async with context().store.read() as conn:
        counts = await rollouts.counts(conn, principal)
    trainers = [name for name, _ in context().plugins.impls(exports.HOOK)]
    return TrainingStatus(
        collecting=config.enabled,
        config=config,
        counts=counts,
        queue=QueueStatus(pending=found.pending, **found.counters),
        last_export=await exports.last(current_app, principal),
        trainers=trainers,
    )


@bp.patch("/gateway/training/config")
@requires_gate(GATE_CONFIG)
@document_request(ConfigPatch)
@validate_response(ConfigResponse)
async def training_config() -> ConfigResponse:
    """Change what is collected: ``enabled``, ``sample_rate``, ``sources``,
    ``redact_safety``, ``redact_keys``, ``export_batch_size``. Stored in the database (every
    replica uses it within a second) over the ``[plugins.training]`` defaults; published
    on the ``training`` stream with an ``audit`` field."""
    return await change_config(current_principal(), await json_body())


async def change_config(principal: Principal, data: dict[str, Any]) -> ConfigResponse:
    """The PATCH's work (the route's, and the ``TrainingAPI``'s)."""
    changes = patch_of(data)
    found = collector()
    before = (await found.config(fresh=True)).model_dump()
    config, stored = await found.save(changes, principal.name)
    changed = sorted(k for k in changes if before.get(k) != config.model_dump().get(k))
    await context().hub.publish(
        STREAM,
        "training.config.updated",
        {
            "changes": changes,
            "changed": changed,
            "by": principal.name,
            "audit": audit("training.config.update", "training.config", "succeeded"),
        },
    )
    return ConfigResponse(
        config=config, changed=changed, updated_ms=stored.updated_ms, updated_by=stored.updated_by
    )


@bp.get("/gateway/training/rollouts")
@validate_querystring(RolloutQuery)
@validate_response(RolloutList)
async def list_rollouts(query_args: RolloutQuery) -> RolloutList:
    """Rollouts, newest first: the caller's own (its runs and conversations), everyone's
    with ``allow_training_read_all``. Filter by source, outcome, model, pipeline, run,
    response, feedback, label, reward and time; page with ``?before=``."""
    async with context().store.read() as conn:
        return await rollouts.page(conn, query_args, current_principal())


@bp.get("/gateway/training/rollouts/<rollout_id>")
@validate_response(RolloutRecord)
async def get_rollout(rollout_id: str) -> RolloutRecord:
    """One rollout with its trajectory; another principal's is 404 without
    ``allow_training_read_all``."""
    principal = current_principal()
    async with context().store.read() as conn:
        row = await rollouts.one(conn, rollout_id)
    require_owner(
        principal, row.owner, read_all=GATE_READ_ALL, not_found=rollouts.not_found(rollout_id)
    )
    return rollouts.record(row)


@bp.post("/gateway/training/rollouts/<rollout_id>/feedback")
@requires_gate(GATE_FEEDBACK)
@document_request(FeedbackRequest)
@validate_response(RolloutRecord)
@document_response(ErrorResponse, 404)
async def rollout_feedback(rollout_id: str) -> RolloutRecord:
    """Add a reward and/or human feedback (``label`` good, bad or neutral, ``comment``)
    to a rollout; a later call replaces what it sends. One's own rollouts, or anyone's
    with ``allow_training_act_all`` (404 if the caller cannot read it)."""
    body: FeedbackRequest = await body_of(FeedbackRequest)
    return await give_feedback(current_principal(), rollout_id, body)


async def give_feedback(
    principal: Principal, rollout_id: str, body: FeedbackRequest
) -> RolloutRecord:
    """The feedback's work (the route's, and the ``TrainingAPI``'s)."""
    store = context().store
    async with store.read() as conn:
        row = await rollouts.one(conn, rollout_id)
    require_owner(
        principal,
        row.owner,
        read_all=GATE_READ_ALL,
        act_all=GATE_ACT_ALL,
        not_found=rollouts.not_found(rollout_id),
        action="rating another principal's rollout",
    )
    feedback = None
    if body.label is not None or body.comment is not None:
        feedback = {
            "label": body.label,
            "comment": body.comment,
            "by": principal.name,
            "at_ms": now_ms(),
        }
    await rollouts.set_feedback(store, rollout_id, body.reward, feedback)
    async with store.read() as conn:
        return rollouts.record(await rollouts.one(conn, rollout_id))


@bp.post("/gateway/training/exports")
@requires_gate(GATE_EXPORT)
@document_request(ExportRequest)
@validate_response(ExportRecord, 201)
@document_response(ErrorResponse, 422)
@document_response(ErrorResponse, 500)
async def create_export() -> tuple[ExportRecord, int]:
    """Write the rollouts the caller may read that match the filters (oldest first) as a
    JSONL dataset in OpenAI's fine-tuning chat format, handing each batch to the trainer
    plugins. All or nothing: a failure leaves no dataset (500 ``export_failed``, recorded
    as a failed export); 422 ``no_rollouts`` when nothing matches."""
    body: ExportRequest = await body_of(ExportRequest)
    record = await exports.run_export(current_app, collector(), body, current_principal())
    return record, 201


@bp.get("/gateway/training/exports")
@validate_response(ExportList)
async def list_exports() -> ExportList:
    """Exports, newest first (the caller's own; everyone's with
    ``allow_training_read_all``): completed and failed, with their counts and files."""
    return await exports.listing(current_app, current_principal())


class TrainingService(TrainingAPI):
    async def status(self, principal: Principal) -> TrainingStatus:
        return await status_of(principal)

    async def rollouts(self, principal: Principal, limit: int = 50) -> RolloutList:
        async with context().store.read() as conn:
            return await rollouts.page(conn, RolloutQuery(limit=limit), principal)

    async def change_config(self, principal: Principal, changes: dict[str, Any]) -> ConfigResponse:
        context().auth.require_gate(principal, GATE_CONFIG, "changing the training settings")
        return await change_config(principal, dict(changes))

    async def feedback(
        self, principal: Principal, rollout_id: str, body: dict[str, Any]
    ) -> RolloutRecord:
        context().auth.require_gate(principal, GATE_FEEDBACK, "rating a rollout")
        try:
            parsed = FeedbackRequest.model_validate(body)
        except ValidationError as exc:
            message, param = validation_message(exc)
            raise GatewayError(
                400, "invalid_request_body", message, details={"param": param}
            ) from None
        return await give_feedback(principal, rollout_id, parsed)
