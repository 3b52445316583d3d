"""The OpenAPI document: quart-schema's, plus what the host knows about every route.

quart-schema derives request and response schemas from the pydantic models on each view.
This provider adds, for every operation and without any per-route work:

- ``security: []`` on public operations (the document's default is the bearer scheme);
- the error answers the host's guard can give, all with the one error envelope:
  401 for protected operations, 403 for gated ones, 429 for rate-limited ones, 400 and 413
  for operations with a request body, and ``default`` for anything else;
- the policy gate (``x-policy-gate``) and the owning plugin (as the tag);
- ``text/event-stream`` and ``application/x-ndjson`` for views marked
  :func:`document_stream`, with the stream's query parameters and ``Last-Event-ID``;
- the host's own ``GET /openapi.json``.

WebSocket routes are not HTTP operations and are left out (see ``docs/reference/http.md``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from quart_schema.openapi import QUART_SCHEMA_HIDDEN_ATTRIBUTE, OpenAPIProvider
from werkzeug.routing.rules import Rule

from host.auth.decorators import gate_of, is_public, is_unlimited
from host.errors import ErrorDetail, ErrorResponse
from host.events import JSONL, MAX_SEQ, SSE

F = TypeVar("F", bound=Callable[..., Any])

STREAM_ATTR = "_gateway_stream"
MEDIA_TYPE_ATTR = "_gateway_media_types"

# Host routes that are not hidden from the document although quart-schema hides them.
HOST_DOCUMENTED = {"openapi": "host"}

_REF = "#/components/responses/"


def document_stream(fn: F) -> F:
    """Mark a view that answers with :func:`host.events.stream_response`: the document
    lists SSE and JSONL next to the JSON page, and the stream's parameters."""
    setattr(fn, STREAM_ATTR, True)
    return fn


def document_media_type(media_type: str, status: int = 200) -> Callable[[F], F]:
    """Document the ``status`` answer (declared with ``document_response``) under
    ``media_type`` instead of ``application/json`` (e.g. Prometheus text)."""

    def mark(fn: F) -> F:
        types: dict[int, str] = dict(getattr(fn, MEDIA_TYPE_ATTR, {}))
        types[status] = media_type
        setattr(fn, MEDIA_TYPE_ATTR, types)
        return fn

    return mark


def _error_response(description: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    }
    if headers:
        response["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in headers.items()
        }
    return response


ERROR_RESPONSES: dict[str, dict[str, Any]] = {
    "InvalidRequest": _error_response(
        "The request is malformed: invalid JSON (`invalid_json`) or a body that does not match "
        "the schema (`invalid_request_body`, with `param` naming the field)."
    ),
    "Unauthorized": _error_response(
        "Missing or invalid credentials (`unauthorized`).",
        {"WWW-Authenticate": "the bearer challenge"},
    ),
    "PolicyGateDenied": _error_response(
        "The caller lacks the operation's policy gate (`policy_gate_denied`), or a body "
        "`policy_gate` field names another gate (`policy_gate_mismatch`)."
    ),
    "PayloadTooLarge": _error_response(
        "The request body exceeds `server.max_body_bytes` (`payload_too_large`)."
    ),
    "RateLimited": _error_response(
        "Rate limit exceeded (`rate_limited`): per principal, or per client address for "
        "public operations and failed authentication.",
        {"Retry-After": "seconds to wait"},
    ),
    "Error": _error_response("Any other error, in the same envelope."),
}


class GatewayOpenAPIProvider(OpenAPIProvider):
    def schema(self) -> dict[str, Any]:
        schema = super().schema()
        components = schema["components"]
        components["schemas"]["ErrorResponse"] = _model_schema(ErrorResponse)
        components["schemas"]["ErrorDetail"] = _model_schema(ErrorDetail)
        components["responses"] = ERROR_RESPONSES
        if plugin_tags := self._plugin_tags():
            schema["tags"] = plugin_tags
        return schema

    def generate_rules(self) -> Iterable[Rule]:
        for rule in self._app.url_map.iter_rules():
            if rule.websocket:
                continue
            view = self._app.view_functions[rule.endpoint]
            if rule.endpoint in HOST_DOCUMENTED or not getattr(
                view, QUART_SCHEMA_HIDDEN_ATTRIBUTE, False
            ):
                yield rule

    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        paths, components = super().build_paths(rule)
        view = self._app.view_functions[rule.endpoint]
        host_route = rule.endpoint in HOST_DOCUMENTED
        public = host_route or is_public(view)
        gate = gate_of(view)
        plugin = HOST_DOCUMENTED.get(rule.endpoint) or self._plugin_of(rule.endpoint)
        for path_item in paths.values():
            for method, operation in path_item.items():
                # quart-schema shares one operation's dicts between a rule's methods.
                operation = dict(operation)
                path_item[method] = operation
                responses = {str(k): v for k, v in operation["responses"].items()}
                operation["parameters"] = list(operation["parameters"])
                _describe_from_docstring(operation, view)
                if host_route:
                    self._describe_host_route(operation, responses)
                if getattr(view, STREAM_ATTR, False):
                    self._describe_stream(operation, responses)
                for status, media_type in getattr(view, MEDIA_TYPE_ATTR, {}).items():
                    self._retype(responses, status, media_type)
                if public:
                    operation["security"] = []
                else:
                    responses.setdefault("401", {"$ref": _REF + "Unauthorized"})
                if gate is not None:
                    responses.setdefault("403", {"$ref": _REF + "PolicyGateDenied"})
                    operation["x-policy-gate"] = gate
                    note = f"Requires policy gate `{gate}`."
                    operation["description"] = "\n\n".join(
                        p for p in (operation.get("description", ""), note) if p
                    )
                if not (public and is_unlimited(view)):
                    responses.setdefault("429", {"$ref": _REF + "RateLimited"})
                if "requestBody" in operation:
                    responses.setdefault("400", {"$ref": _REF + "InvalidRequest"})
                    responses.setdefault("413", {"$ref": _REF + "PayloadTooLarge"})
                responses.setdefault("default", {"$ref": _REF + "Error"})
                if plugin:
                    operation["tags"] = sorted({*operation.get("tags", ()), plugin})
                operation["responses"] = responses
        return paths, components

    # -- helpers ----------------------------------------------------------------------------

    def _gateway(self) -> Any:
        return self._app.extensions.get("gateway")

    def _plugin_of(self, endpoint: str) -> str | None:
        ctx = self._gateway()
        for route in getattr(ctx, "routes", ()):
            if route.endpoint == endpoint:
                return str(route.plugin)
        return None

    def _plugin_tags(self) -> list[dict[str, str]]:
        ctx = self._gateway()
        names = {route.plugin for route in getattr(ctx, "routes", ())}
        tags = [{"name": "host", "description": "served by the host itself"}]
        tags += [{"name": name, "description": f"routes of plugin {name!r}"} for name in names]
        return sorted(tags, key=lambda t: t["name"])

    def _describe_host_route(self, operation: dict[str, Any], responses: dict[str, Any]) -> None:
        operation["summary"] = "This OpenAPI document (public)."
        operation["description"] = "Generated from the running app's routes and models."
        responses["200"] = {
            "description": "An OpenAPI 3.1 document.",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }

    def _describe_stream(self, operation: dict[str, Any], responses: dict[str, Any]) -> None:
        ctx = self._gateway()
        limit_max = ctx.settings.events.page_limit_max if ctx is not None else 1000
        operation["parameters"] += [
            {
                "name": "format",
                "in": "query",
                "description": "sse, jsonl or json; by default taken from the Accept header "
                "(SSE unless it asks for JSONL or JSON, or `limit` is given)",
                "schema": {"type": "string", "enum": ["sse", "jsonl", "json"]},
            },
            {
                "name": "after",
                "in": "query",
                "description": "return events with seq greater than this",
                "schema": {"type": "integer", "minimum": 0, "maximum": MAX_SEQ, "default": 0},
            },
            {
                "name": "limit",
                "in": "query",
                "description": "page size of the JSON page",
                "schema": {"type": "integer", "minimum": 1, "maximum": limit_max, "default": 100},
            },
            {
                "name": "Last-Event-ID",
                "in": "header",
                "description": "SSE resume: the last seq received (ignored when `after` is given)",
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
            },
        ]
        ok = dict(responses.get("200", {"description": ""}))
        content = dict(ok.get("content", {}))
        content[SSE] = {
            "schema": {"type": "string"},
            "example": 'id: 1\nevent: gateway.paused\ndata: {"seq":1,...}\n\n',
        }
        content[JSONL] = {"schema": {"type": "string"}}
        ok["content"] = content
        ok["description"] = (
            "A JSON page (`?format=json`, `?limit=` or `Accept: application/json`), or an "
            "open stream: SSE with `id:` = seq and `: heartbeat` comments, or JSONL with "
            "heartbeat lines. Streams end with a `stream.closing` event when the gateway drains."
        )
        responses["200"] = ok
        responses.setdefault("400", {"$ref": _REF + "InvalidRequest"})

    @staticmethod
    def _retype(responses: dict[str, Any], status: int, media_type: str) -> None:
        key = str(status)
        response = responses.get(key)
        if response is None:
            return
        response = dict(response)
        content = dict(response.get("content", {}))
        schema = content.pop("application/json", {"schema": {"type": "string"}})
        content[media_type] = schema
        response["content"] = content
        responses[key] = response


def _describe_from_docstring(operation: dict[str, Any], view: Any) -> None:
    """Summary = the docstring's first paragraph (quart-schema takes only its first line)."""
    doc = inspect.getdoc(view) or ""
    paragraphs = [" ".join(p.split()) for p in doc.replace("``", "`").split("\n\n") if p.strip()]
    operation.pop("summary", None)
    operation.pop("description", None)
    if paragraphs:
        operation["summary"] = paragraphs[0]
    if len(paragraphs) > 1:
        operation["description"] = "\n\n".join(paragraphs[1:])


def _model_schema(model: Any) -> dict[str, Any]:
    schema: dict[str, Any] = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return schema
