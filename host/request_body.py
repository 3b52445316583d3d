"""``json_body(model)``: a route's JSON body validated as a pydantic model, with the
gateway's refusals (415 when it is not JSON, 400 naming the field)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError
from quart import request

from host.errors import GatewayError, validation_message


async def json_body(model: type[BaseModel]) -> Any:
    """The request's JSON body as ``model``; an empty body is ``{}``. 415
    ``unsupported_media_type`` when it is not JSON, 400 ``invalid_request_body`` when it
    is not an object or fails the model (the first failing field named as the client sent
    it, also in ``details.param``). A ``policy_gate`` key is dropped: the host checks the
    route's gate."""
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
        message, param = validation_message(exc, given=data)
        raise GatewayError(400, "invalid_request_body", message, details={"param": param}) from None
