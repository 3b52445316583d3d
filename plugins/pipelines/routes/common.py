"""What the pipelines route modules share: the blueprint, the request-body reader and the
API every handler calls (``api.py``; no handler touches the store itself)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError
from quart import Blueprint, current_app, request

from host.api import GatewayError, validation_message
from plugins.pipelines.api import PipelinesAPI
from plugins.pipelines.idempotency import checked_key

bp = Blueprint("pipelines", __name__)
IDEMPOTENCY_HEADER = "Idempotency-Key"


def pipelines_api() -> PipelinesAPI:
    return PipelinesAPI(current_app)


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
        raise GatewayError(400, "invalid_request_body", message, details={"param": param}) from None


def idempotency_key() -> str | None:
    """The request's ``Idempotency-Key`` (None without one); 400 unless 1 to 200 chars."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    return checked_key(key.strip() if key is not None else None, IDEMPOTENCY_HEADER)
