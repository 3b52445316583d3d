"""The OpenResponses error types on the ``/v1/responses`` routes.

The OpenResponses specification ("Errors", "Error Types") names five error types:
``invalid_request``, ``not_found``, ``too_many_requests``, ``server_error`` and
``model_error``. The Responses routes answer with these, from the HTTP status, through
:func:`spec_error_type` alone; the other OpenAI routes keep OpenAI's vocabulary
(``invalid_request_error``, ...). ``code``, ``message`` and ``param`` are unchanged.
"""

from __future__ import annotations

import json
from typing import Any

from quart import Response

from plugins.openai_compat.providers.base import ProviderError

# 502 and 504: the model behind the gateway failed (an upstream error status, an
# unreachable or timed-out upstream, a broken stream, a failed pipeline run).
_MODEL_FAILURES = (502, 504)
# 401 and 403 have no type in the specification: they keep the gateway's own, the same on
# every route (authentication_error, permission_error), so a client handles auth once.
_GATEWAY_AUTH = (401, 403)


def spec_error_type(status: int) -> str:
    """The OpenResponses error type for an error answered with ``status``."""
    if status in _MODEL_FAILURES:
        return "model_error"
    if status >= 500:
        return "server_error"
    if status == 404:
        return "not_found"
    if status == 429:
        return "too_many_requests"
    return "invalid_request"


async def with_spec_error_type(response: Response) -> Response:
    """An error envelope answered on a Responses route, with its ``type`` renamed. Runs
    after every handler of the blueprint, so that every error there (bad input, an
    unknown response id, an upstream failure, an unexpected one) gets the same
    vocabulary, whoever raised it; auth errors keep the gateway's."""
    if response.status_code < 400 or response.status_code in _GATEWAY_AUTH or not response.is_json:
        return response
    body = await response.get_json()
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        error["type"] = spec_error_type(response.status_code)
        response.set_data(json.dumps(body, separators=(",", ":")))
    return response


def error_event_payload(exc: ProviderError) -> dict[str, Any]:
    """The ``error`` of an OpenResponses ``error`` streaming event (ErrorPayload)."""
    return {
        "type": spec_error_type(exc.status),
        "code": exc.code,
        "message": exc.message,
        "param": None,
    }


def response_error(exc: ProviderError) -> dict[str, Any]:
    """A failed response's ``error`` (the specification's Error object: code, message)."""
    return {"code": exc.code, "message": exc.message}
