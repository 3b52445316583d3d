"""The OpenAPI document: public, complete against the URL map, pydantic-derived schemas,
error answers documented from what the host knows about each route, and the committed
``docs/reference/openapi.yaml`` equal to a freshly generated one."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from quart import Blueprint
from quart_schema import validate_request, validate_response
from quart_schema.validation import QUART_SCHEMA_REQUEST_ATTRIBUTE, QUART_SCHEMA_RESPONSE_ATTRIBUTE

from host.api import context, hookimpl, public, requires_gate
from host.auth.decorators import is_unlimited
from host.cli import cli
from host.errors import ErrorResponse
from host.openapi_doc import render_openapi
from plugins.control.models import RevokeResponse, SessionRequest
from tests.conftest import running_app

REPO = Path(__file__).resolve().parent.parent
COMMITTED = REPO / "docs" / "reference" / "openapi.yaml"
REGENERATE = "gateway openapi --output docs/reference/openapi.yaml"
HTTP_METHODS = {"get", "put", "post", "delete", "patch"}


def openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[^:<>]*:)?([^<>]+)>", r"{\1}", rule)


def url_map_operations(app: Any) -> set[tuple[str, str]]:
    ops = set()
    for rule in app.url_map.iter_rules():
        if rule.websocket:
            continue
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            ops.add((method.lower(), openapi_path(rule.rule)))
    return ops


def document_operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): op
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in HTTP_METHODS
    }


def resolve(doc: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
    ref = obj.get("$ref")
    if ref is None:
        return obj
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return dict(node)


def error_schema_of(doc: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    response = resolve(doc, response)
    return dict(response["content"]["application/json"]["schema"])


async def fetch_document(client: Any) -> dict[str, Any]:
    response = await client.get("/openapi.json")  # no credentials: the document is public
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    doc: dict[str, Any] = await response.get_json()
    return doc


async def test_document_is_public_and_lists_every_http_route(app_and_client):
    app, client = app_and_client
    doc = await fetch_document(client)
    assert doc["openapi"].startswith("3.1")
    assert set(document_operations(doc)) == url_map_operations(app)
    assert ("get", "/openapi.json") in document_operations(doc)
    assert "/gateway/ws" not in doc["paths"]  # a WebSocket is not an HTTP operation


async def test_public_operations_declare_no_security_and_protected_ones_document_401(
    app_and_client,
):
    app, client = app_and_client
    doc = await fetch_document(client)
    assert doc["security"] == [{"bearer": []}]
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    ops = document_operations(doc)
    routes = {(m.lower(), openapi_path(r.rule)): r for r in context(app).routes for m in r.methods}
    public_seen = set()
    for key, op in ops.items():
        route = routes.get(key)
        public = route.public if route is not None else key == ("get", "/openapi.json")
        if public:
            public_seen.add(key[1])
            assert op["security"] == [], key
            assert "401" not in op["responses"], key
        else:
            assert "security" not in op, key  # the document-wide bearer requirement applies
            assert error_schema_of(doc, op["responses"]["401"]) == {
                "$ref": "#/components/schemas/ErrorResponse"
            }, key
    # The dashboard's pages are public to the bearer scheme: their own cookie signs them in.
    pages = {p for p in public_seen if p in ("/dashboard", "/webchat") or p.startswith("/ops")}
    assert "/ops/login" in pages and "/dashboard" in pages
    assert public_seen - pages == {"/health", "/openapi.json", "/gateway/auth/bootstrap"} | {
        "/gateway/auth/session",
        "/triggers/{trigger_id}/webhook",
        "/gateway/channels/webhook/inbound",
    }


async def test_gated_operations_document_403_and_rate_limited_ones_429(app_and_client):
    app, client = app_and_client
    doc = await fetch_document(client)
    ops = document_operations(doc)
    gated = 0
    for route in context(app).routes:
        if route.websocket:
            continue
        view = app.view_functions[route.endpoint]
        for method in route.methods:
            op = ops[(method.lower(), openapi_path(route.rule))]
            if route.gate is not None:
                gated += 1
                assert op["x-policy-gate"] == route.gate
                assert route.gate in op["description"]
                assert error_schema_of(doc, op["responses"]["403"])["$ref"].endswith(
                    "/ErrorResponse"
                )
            else:
                assert "403" not in op["responses"], route.rule
            if route.public and is_unlimited(view):
                assert "429" not in op["responses"], route.rule
            else:
                rate = resolve(doc, op["responses"]["429"])
                assert "Retry-After" in rate["headers"]
                assert error_schema_of(doc, rate)["$ref"].endswith("/ErrorResponse")
            assert "default" in op["responses"]  # every other error: the same envelope
    assert gated >= 4


async def test_error_envelope_schema_comes_from_the_pydantic_model(client):
    doc = await fetch_document(client)
    schemas = doc["components"]["schemas"]
    expected = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    assert schemas["ErrorResponse"]["properties"] == expected["properties"]
    assert schemas["ErrorResponse"]["properties"]["error"] == {
        "$ref": "#/components/schemas/ErrorDetail"
    }
    assert {"type", "code", "message"} <= set(schemas["ErrorDetail"]["required"])
    assert "param" in schemas["ErrorDetail"]["properties"]


async def test_request_and_response_schemas_are_the_views_pydantic_models(app_and_client):
    app, client = app_and_client
    doc = await fetch_document(client)
    ops = document_operations(doc)
    checked = 0
    for rule in app.url_map.iter_rules():
        if rule.websocket or rule.endpoint == "openapi":
            continue
        view = app.view_functions[rule.endpoint]
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            op = ops[(method.lower(), openapi_path(rule.rule))]
            responses = getattr(view, QUART_SCHEMA_RESPONSE_ATTRIBUTE, {})
            assert responses, f"{method} {rule.rule} declares no response model"
            for status, (model, _headers) in responses.items():
                content = op["responses"][str(status)]["content"]
                (schema,) = [c["schema"] for c in content.values() if "title" in c["schema"]]
                assert schema["title"] == model.__name__
                checked += 1
            request_model = getattr(view, QUART_SCHEMA_REQUEST_ATTRIBUTE, None)
            if request_model is not None:
                body = op["requestBody"]["content"]["application/json"]["schema"]
                assert body["title"] == request_model[0].__name__
                assert "400" in op["responses"] and "413" in op["responses"]
    assert checked >= len(ops) - 1


async def test_event_stream_documents_sse_jsonl_and_resume(client):
    doc = await fetch_document(client)
    op = doc["paths"]["/gateway/events"]["get"]
    content = op["responses"]["200"]["content"]
    assert {"application/json", "text/event-stream", "application/x-ndjson"} <= set(content)
    assert content["application/json"]["schema"]["title"] == "EventPage"
    params = {(p["in"], p["name"]) for p in op["parameters"]}
    assert {("query", "after"), ("query", "limit"), ("header", "Last-Event-ID")} <= params
    metrics = doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert set(metrics) == {"text/plain"}


class DocPlugin:
    """A third-party plugin: its routes get the same documentation without extra work."""

    @hookimpl
    def gateway_register_policy_gates(self, register):
        register("allow_doc_write", "write documents")

    @hookimpl
    def gateway_register_blueprints(self, register):
        bp = Blueprint("docplugin", __name__)

        @bp.post("/docs/<int:doc_id>/lock")
        @requires_gate("allow_doc_write")
        @validate_request(SessionRequest)
        @validate_response(RevokeResponse)
        async def lock(doc_id: int, data: SessionRequest) -> RevokeResponse:
            """Lock a document.

            Longer explanation, kept as the description."""
            return RevokeResponse(revoked=doc_id)

        @bp.get("/docs/ping")
        @public
        @validate_response(RevokeResponse)
        async def ping() -> RevokeResponse:
            """Public ping."""
            return RevokeResponse(revoked=0)

        register(bp)


async def test_plugin_routes_are_documented_generically(make_settings):
    async with running_app(make_settings(), extra_plugins=[("docplugin", DocPlugin())]) as (
        app,
        client,
    ):
        doc = await fetch_document(client)
        assert set(document_operations(doc)) == url_map_operations(app)
        lock = doc["paths"]["/docs/{doc_id}/lock"]["post"]
        assert lock["summary"] == "Lock a document."
        assert lock["description"].startswith("Longer explanation")
        assert lock["tags"] == ["docplugin"]
        assert lock["x-policy-gate"] == "allow_doc_write"
        assert {"400", "401", "403", "413", "429"} <= set(lock["responses"])
        assert lock["parameters"][0]["name"] == "doc_id"
        ping = doc["paths"]["/docs/ping"]["get"]
        assert ping["security"] == []
        assert "401" not in ping["responses"] and "429" in ping["responses"]
        assert {"name": "docplugin", "description": "routes of plugin 'docplugin'"} in doc["tags"]


def test_committed_openapi_yaml_is_up_to_date():
    fresh = render_openapi("yaml")
    assert COMMITTED.is_file(), f"{COMMITTED} is missing; generate it with `{REGENERATE}`"
    assert COMMITTED.read_text(encoding="utf-8") == fresh, (
        f"docs/reference/openapi.yaml is stale; regenerate it with `{REGENERATE}`"
    )


def test_generated_document_ignores_the_local_environment(monkeypatch):
    monkeypatch.setenv("GATEWAY_EVENTS__PAGE_LIMIT_MAX", "5")
    monkeypatch.setenv("GATEWAY_PLUGINS__CONTROL__ENABLED", "false")
    assert render_openapi("yaml") == COMMITTED.read_text(encoding="utf-8")


def test_cli_writes_the_document(tmp_path):
    import yaml

    out = tmp_path / "openapi.yaml"
    result = CliRunner().invoke(cli, ["openapi", "--output", str(out)])
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert doc["info"]["title"] == "agent-gateway"
    assert "/gateway/status" in doc["paths"]
    as_json = CliRunner().invoke(cli, ["openapi", "--format", "json"])
    assert as_json.exit_code == 0
    import json

    assert json.loads(as_json.output) == doc
