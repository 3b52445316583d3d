"""What becomes a record: requests (mutating ones, and every auth failure) and events
(safety decisions, approval decisions, config changes, and any event whose data carries
an ``audit`` object)."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from quart import Response, has_request_context, request, websocket
from quart.wrappers.response import DataBody

from host.api import Event, request_actor
from plugins.audit.chain import entry
from plugins.audit.config import AuditConfig
from plugins.audit.contract import AuditRecord

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
AUTH_FAILURES = {401: "auth.unauthorized", 403: "auth.forbidden"}
REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_BODY_PEEK = 65_536  # error envelopes and created objects are small; larger bodies are not read

SAFETY_STREAM = "safety"
GATEWAY_STREAM = "gateway"
CONFIG_EVENTS = frozenset({"config.patched", "gateway.reloaded"})
RUN_STREAM_PREFIX = "run:"
_FINDING_KEYS = ("scanner", "action", "reason", "reason_code", "rule_id", "stage")


def outcome_of(status: int) -> str:
    if status in AUTH_FAILURES:
        return "denied"
    if status >= 500:
        return "error"
    if status >= 400:
        return "refused"
    return "success"


def request_id() -> str | None:
    """The current request's id: the client's ``X-Request-Id`` when it is a plain token,
    else a fresh one; the same for every record the request leaves."""
    if not has_request_context():
        return None
    req = request._get_current_object()  # type: ignore[attr-defined]
    rid: str | None = getattr(req, "gw_audit_id", None)
    if rid is None:
        sent = req.headers.get(REQUEST_ID_HEADER, "")
        rid = sent if _REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex
        req.gw_audit_id = rid
    return rid


def _actor() -> str | None:
    principal = request_actor()
    return principal.key if principal is not None else None


def _client() -> str | None:
    return request.remote_addr if has_request_context() else None


async def request_record(response: Response, config: AuditConfig) -> AuditRecord | None:
    """The record of the current request, or None when it leaves none: a read (GET)
    that was not an auth failure, a request no route matched, a throttled request of an
    unauthenticated caller, a success on an excluded route."""
    req = request._get_current_object()  # type: ignore[attr-defined]
    status = response.status_code
    auth_failure = AUTH_FAILURES.get(status)
    if req.method not in MUTATING and auth_failure is None:
        return None
    rule = req.url_rule
    if rule is None and auth_failure is None:
        return None
    route = rule.rule if rule is not None else None
    if status < 400 and route in config.exclude_routes:
        return None
    actor = _actor()
    if status == 429 and actor is None:
        return None  # a flood of unauthenticated requests must not flood the log
    body = _peek_json(response) if status >= 400 or not req.view_args else None
    error = body.get("error") if isinstance(body, dict) else None
    reason = error.get("code") if isinstance(error, dict) else None
    detail: dict[str, Any] = {}
    if rule is None:
        detail["path"] = req.path[:300]
    return entry(
        "auth" if auth_failure else "request",
        auth_failure or f"{req.method} {route}",
        outcome=outcome_of(status),
        actor=actor,
        target=_target(req.view_args, body if status < 400 else None),
        status=status,
        reason_code=reason if isinstance(reason, str) else None,
        request_id=request_id(),
        client=req.remote_addr,
        method=req.method,
        route=route,
        detail=detail,
    )


def websocket_record(response: Response | None) -> AuditRecord | None:
    """The record of a WebSocket upgrade the guard refused (401, 403); None otherwise."""
    status = getattr(response, "status_code", None)
    action = AUTH_FAILURES.get(status) if isinstance(status, int) else None
    if action is None or response is None:
        return None
    ws = websocket._get_current_object()  # type: ignore[attr-defined]
    body = _peek_json(response)
    error = body.get("error") if isinstance(body, dict) else None
    reason = error.get("code") if isinstance(error, dict) else None
    sent = ws.headers.get(REQUEST_ID_HEADER, "")
    return entry(
        "auth",
        action,
        outcome="denied",
        status=status,
        reason_code=reason if isinstance(reason, str) else None,
        request_id=sent if _REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex,
        client=ws.remote_addr,
        method="WS",
        route=ws.url_rule.rule if ws.url_rule is not None else None,
    )


def _target(view_args: dict[str, Any] | None, created: Any) -> str | None:
    """The object the request acted on: its path's ids, else the id of what it created."""
    if view_args:
        return "/".join(str(v) for v in view_args.values())
    if isinstance(created, dict):
        for key in ("id", "runId", "run_id"):
            value = created.get(key)
            if isinstance(value, str | int) and not isinstance(value, bool):
                return str(value)
    return None


def _peek_json(response: Response) -> Any:
    body = response.response
    if response.mimetype != "application/json" or not isinstance(body, DataBody):
        return None
    if len(body.data) > _BODY_PEEK:
        return None
    try:
        return json.loads(body.data)
    except ValueError:
        return None


# -- events -----------------------------------------------------------------------------------


def event_record(event: Event) -> AuditRecord | None:
    """The record an event leaves, or None. An ``audit`` object in the data wins; then
    the kinds audit knows: safety decisions, approval decisions, config changes."""
    data = event.data if isinstance(event.data, dict) else {}
    asked = data.get("audit")
    if asked is not None:
        return _reported(event, asked)
    if event.stream == SAFETY_STREAM and event.type.startswith("safety."):
        return _safety(event, data)
    if event.type == "approval.resolved" and event.stream.startswith(RUN_STREAM_PREFIX):
        return _approval(event, data)
    if event.stream == GATEWAY_STREAM and event.type in CONFIG_EVENTS:
        return _config(event, data)
    return None


def _common(event: Event, fallback_actor: Any) -> dict[str, Any]:
    actor = _actor()
    if actor is None and isinstance(fallback_actor, str):
        actor = fallback_actor
    return {
        "actor": actor,
        "request_id": request_id(),
        "client": _client(),
        "ts_ms": event.ts_ms,
    }


def _event_ref(event: Event) -> dict[str, Any]:
    return {"stream": event.stream, "seq": event.seq, "type": event.type}


def _reported(event: Event, asked: Any) -> AuditRecord | None:
    """``{"audit": {"action", "target", "outcome", "reason_code", "detail"}}`` (``detail``:
    an object kept in the record's detail): a malformed one is recorded too, as
    ``audit.malformed``, rather than lost."""
    good = (
        isinstance(asked, dict)
        and isinstance(asked.get("action"), str)
        and asked["action"].strip()
        and isinstance(asked.get("outcome", "success"), str)
        and all(isinstance(asked.get(k), str | None) for k in ("target", "reason_code", "actor"))
        and isinstance(asked.get("detail", {}), dict)
    )
    if not good:
        return entry(
            "plugin",
            "audit.malformed",
            outcome="refused",
            reason_code="malformed_audit_object",
            detail={"event": _event_ref(event), "audit": repr(asked)[:500]},
            **_common(event, None),
        )
    return entry(
        "plugin",
        asked["action"],
        outcome=asked.get("outcome") or "success",
        target=asked.get("target"),
        reason_code=asked.get("reason_code"),
        detail=_jsonable({**(asked.get("detail") or {}), "event": _event_ref(event)}),
        **_common(event, asked.get("actor")),
    )


def _safety(event: Event, data: dict[str, Any]) -> AuditRecord:
    raw = data.get("findings")
    findings: list[Any] = raw if isinstance(raw, list) else []
    codes = _reason_codes(data, findings)
    # Only what names the decision: a finding's matched text may be the very secret.
    kept = [{k: f[k] for k in _FINDING_KEYS if k in f} for f in findings if isinstance(f, dict)]
    detail = {
        "event": _event_ref(event),
        "direction": data.get("direction"),
        "reason_codes": codes,
        "findings": kept,
    }
    for key in ("stage", "surface", "model", "rule_ids", "mode"):
        if key in data:
            detail[key] = data[key]
    return entry(
        "safety",
        event.type,
        outcome=event.type.removeprefix("safety."),
        target=_str(data.get("target") or data.get("model")),
        reason_code=codes[0] if codes else None,
        detail=detail,
        **_common(event, data.get("principal")),
    )


def _reason_codes(data: dict[str, Any], findings: list[Any]) -> list[str]:
    """The decision's reason codes: the safety plugin's ``reason_codes`` (or
    ``reason_code``), else each finding's ``reason_code`` or ``reason`` (a scanner of
    another plugin may give a reason and no codes: the list is then empty)."""
    codes = data.get("reason_codes")
    if isinstance(codes, list) and codes:
        found = [str(c) for c in codes if isinstance(c, str | int)]
    elif isinstance(data.get("reason_code"), str):
        found = [data["reason_code"]]
    else:
        found = []
        for f in findings:
            if isinstance(f, dict):
                code = f.get("reason_code") or f.get("reason")
                if isinstance(code, str) and code:
                    found.append(code)
    return list(dict.fromkeys(found))


def _approval(event: Event, data: dict[str, Any]) -> AuditRecord:
    decision = _str(data.get("decision")) or "unknown"
    run_id = event.stream.removeprefix(RUN_STREAM_PREFIX)
    return entry(
        "approval",
        f"approval.{decision}",
        outcome=decision,
        target=f"{run_id}/{data.get('step')}",
        reason_code="timed_out" if data.get("timed_out") else None,
        detail={
            "event": _event_ref(event),
            "run_id": run_id,
            "step": data.get("step"),
            "approver": data.get("approver"),
            "reason": data.get("reason"),
        },
        **_common(event, data.get("approver")),
    )


def _config(event: Event, data: dict[str, Any]) -> AuditRecord:
    detail: dict[str, Any] = {"event": _event_ref(event)}
    if isinstance(data.get("keys"), list):
        detail["keys"] = data["keys"]
    for key in ("applied_live", "restart_required", "errors"):
        if key in data:
            detail[key] = data[key]
    return entry(
        "config",
        event.type,
        outcome="success",
        target=",".join(str(k) for k in detail.get("keys", []))[:300] or None,
        detail=_jsonable(detail),
        **_common(event, data.get("by")),
    )


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _jsonable(value: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(json.dumps(value, default=str))
    return result
