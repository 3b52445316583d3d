"""The one error envelope: ``{"error": {"type", "code", "message"}}``, for every error.

Handlers are installed on the app so that 404, 405, 413, malformed JSON, schema
validation failures and unexpected exceptions all answer with JSON, never HTML and
never a stack trace.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from quart import Quart, Request, Response, jsonify, request
from quart_schema import RequestSchemaValidationError
from quart_schema.validation import QuerystringValidationError, RequestHeadersValidationError
from werkzeug.exceptions import HTTPException
from werkzeug.routing.exceptions import WebsocketMismatch

from host.error_paths import clean, union_error, walk
from host.strict_json import InvalidJSON, parse_json

log = logging.getLogger("gateway.errors")
NOT_GIVEN: Any = object()  # validation_message without the data validated

# HTTP status -> (type, default code), after the OpenAI error vocabulary.
_STATUS_TYPES: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "unauthorized"),
    403: ("permission_error", "forbidden"),
    404: ("not_found_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    408: ("invalid_request_error", "request_timeout"),
    409: ("conflict_error", "conflict"),
    413: ("invalid_request_error", "payload_too_large"),
    415: ("invalid_request_error", "unsupported_media_type"),
    422: ("invalid_request_error", "validation_failed"),
    429: ("rate_limit_error", "rate_limited"),
    500: ("server_error", "internal_error"),
    501: ("server_error", "not_implemented"),
    503: ("server_error", "unavailable"),
}


class ErrorDetail(BaseModel):
    type: str = Field(..., description="error class, after the OpenAI vocabulary")
    code: str = Field(..., description="stable machine-readable code, e.g. policy_gate_denied")
    message: str = Field(..., description="human-readable; names the failing field if any")
    param: str | None = Field(None, description="the request field a validation error is about")
    details: dict[str, Any] | None = None


class ErrorResponse(BaseModel):
    """The error envelope every non-2xx JSON answer uses."""

    error: ErrorDetail


def error_type_for(status: int) -> str:
    if status in _STATUS_TYPES:
        return _STATUS_TYPES[status][0]
    return "server_error" if status >= 500 else "invalid_request_error"


class GatewayError(Exception):
    """Raise anywhere in a handler to answer with the error envelope."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        type: str | None = None,
        headers: dict[str, str] | None = None,
        details: dict[str, Any] | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.type = type or error_type_for(status)
        self.headers = headers or {}
        self.details = details
        self.param = param


def error_body(
    status: int,
    code: str,
    message: str,
    type: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    err: dict[str, Any] = {"type": type or error_type_for(status), "code": code, "message": message}
    err.update({k: v for k, v in extra.items() if v is not None})
    return {"error": err}


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    type: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    resp = jsonify(error_body(status, code, message, type, **extra))
    resp.status_code = status
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def validation_message(
    exc: ValidationError, prefix: str = "", given: Any = NOT_GIVEN
) -> tuple[str, str | None]:
    """A readable message naming the first failing field, and that field's dotted path.
    With ``given`` (the data validated), a field that accepts several types is named as
    the client sent it, not by pydantic's tag for a member of the union (``stop``, not
    ``stop.str``): see :mod:`host.error_paths`."""
    errors = exc.errors()
    if not errors:
        return "request body is invalid", None
    first = errors[0]
    path, msg, others = clean(first), first.get("msg", "invalid value"), len(errors) - 1
    if given is not NOT_GIVEN:
        _, tag = walk(path, given, first["type"] == "missing")
        union = None if tag is None else union_error(errors, path[:tag], given)
        if union is not None:
            path, msg, others = union
    loc = ".".join(str(p) for p in path)
    field = f"{prefix}{loc}" if loc else (prefix.rstrip(".") or None)
    more = f" (and {others} more)" if others else ""
    if field:
        return f"{field}: {msg}{more}", field
    return f"{msg}{more}", None


class GatewayRequest(Request):
    """Quart's request, except that the body is parsed once and strictly
    (:func:`host.strict_json.parse_json`: no ``NaN``/``Infinity``, not nested too deeply
    for the parser, UTF-8), a body declared JSON that does not parse is always a typed
    400 ``invalid_json`` (also for ``get_json(silent=True)``: ``silent`` only means
    "None when the body is empty or not declared JSON", so an optional body cannot be
    swallowed), and waiting for the body costs no extra task (``asyncio.timeout``, not
    ``wait_for``)."""

    _gw_json: Any = Ellipsis
    _gw_raw: bytes | None = None

    async def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        if not (force or self.is_json):
            return None
        if self._gw_json is not Ellipsis:
            return self._gw_json
        raw = await self.get_data(cache=True)
        if not raw.strip():
            if silent:
                return None
            raise GatewayError(400, "invalid_json", "request body is not valid JSON: it is empty")
        try:
            value = parse_json(raw)
        except InvalidJSON as error:
            raise GatewayError(
                400, "invalid_json", f"request body is not valid JSON: {error}"
            ) from None
        if cache:
            self._gw_json = value
        return value

    async def check_json_body(self) -> None:
        """The rule for a route that takes a JSON body: a non-empty body must be declared
        ``application/json`` (415 ``unsupported_media_type``; a cross-site form or
        ``text/plain`` post is refused) and must parse (400 ``invalid_json``). An empty
        body passes: body-less POSTs (``/gateway/pause``) need no content type."""
        raw = await self.get_data(cache=True)
        if not raw.strip():
            return
        if not self.is_json:
            raise GatewayError(
                415, "unsupported_media_type", "send the request body as application/json"
            )
        await self.get_json()

    async def get_data(  # type: ignore[override]
        self, cache: bool = True, as_text: bool = False, parse_form_data: bool = False
    ) -> str | bytes:
        if parse_form_data:
            return await super().get_data(cache, as_text, parse_form_data)
        raw: bytes | None = self._gw_raw
        if raw is None:
            try:
                async with asyncio.timeout(self.body_timeout):
                    raw = await self.body
            except TimeoutError:
                raise GatewayError(
                    408,
                    "request_timeout",
                    f"the request body did not arrive within {self.body_timeout:g} s",
                ) from None
            if cache:
                self._gw_raw = raw  # read once: later calls skip the wait and its timer
            else:
                self.body.clear()
        return raw.decode() if as_text else raw

    def on_json_loading_failed(self, error: Exception) -> Any:
        raise GatewayError(400, "invalid_json", f"request body is not valid JSON: {error}")


def install_error_handlers(app: Quart) -> None:
    app.request_class = GatewayRequest

    @app.errorhandler(GatewayError)
    async def _gateway_error(exc: GatewayError) -> Response:
        extra: dict[str, Any] = {"details": exc.details} if exc.details else {}
        if exc.param is not None:
            extra["param"] = exc.param
        return error_response(
            exc.status, exc.code, exc.message, type=exc.type, headers=exc.headers, **extra
        )

    @app.errorhandler(RequestSchemaValidationError)
    async def _schema_error(exc: RequestSchemaValidationError) -> Response:
        if isinstance(exc, QuerystringValidationError):
            code, what = "invalid_query", "query string"
        elif isinstance(exc, RequestHeadersValidationError):
            code, what = "invalid_headers", "request headers"
        else:
            code, what = "invalid_request_body", "request body"
            if not request.is_json:
                # quart-schema reads a non-JSON body as None; say what is wrong instead.
                return error_response(
                    415, "unsupported_media_type", "send the request body as application/json"
                )
        inner = exc.validation_error
        field: str | None = None
        if isinstance(inner, ValidationError):
            given = await request.get_json(silent=True) if what == "request body" else None
            message, field = validation_message(inner, given=NOT_GIVEN if given is None else given)
            if field is None:
                message = f"{what} must be a JSON object matching the schema: {message}"
        else:
            message = f"{what} is invalid: {inner}"
        return error_response(400, code, message, param=field)

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = _STATUS_TYPES.get(status, ("", "http_error"))[1]
        message = exc.description or exc.name
        headers: dict[str, str] = {}
        if status == 405:
            allow = getattr(exc, "valid_methods", None)
            if allow:
                headers["Allow"] = ", ".join(sorted(allow))
            message = "method not allowed for this route"
        elif status == 404:
            message = "no route matches this path"
        elif status == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH")
            message = f"request body exceeds the limit of {limit} bytes"
        elif isinstance(exc, WebsocketMismatch):
            code = "websocket_required"
            message = "this route only accepts WebSocket connections"
        elif status == 400 and "json" in (message or "").lower():
            code = "invalid_json"
            message = "request body is not valid JSON"
        return error_response(status, code, message, headers=headers)

    @app.errorhandler(Exception)
    async def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error in request", exc_info=exc)
        return error_response(500, "internal_error", "internal server error")
