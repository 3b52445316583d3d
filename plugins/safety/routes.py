"""``/gateway/safety/*``: the policy, the rules and a test scan."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from quart import Blueprint, request
from quart_schema import document_request, document_response, validate_response

from host.api import (
    ErrorResponse,
    GatewayError,
    context,
    current_principal,
    requires_gate,
    validation_message,
)
from plugins.safety.engine import decide
from plugins.safety.models import (
    MatchOut,
    PolicyResponse,
    RulesRequest,
    RulesResponse,
    SafetyTestRequest,
    SafetyTestResponse,
)
from plugins.safety.policy import Policy
from plugins.safety.rules import Rule, compile_rule
from plugins.safety.state import SafetyState, Snapshot

GATE_READ = "allow_safety_read"
GATE_WRITE = "allow_safety_write"
STATE_KEY = "safety.state"
SAFETY_STREAM = "safety"

bp = Blueprint("safety", __name__)
M = TypeVar("M", bound=BaseModel)


def state() -> SafetyState:
    found: SafetyState | None = context().extras.get(STATE_KEY)
    if found is None:
        raise GatewayError(503, "safety_unavailable", "the safety plugin has not started")
    return found


async def body_of(model: type[M]) -> M:
    """The JSON body as ``model``; 415 not JSON, 400 naming the field."""
    if not request.is_json:
        raise GatewayError(415, "unsupported_media_type", "send the body as application/json")
    data = await request.get_json(silent=True)
    if not isinstance(data, dict):
        raise GatewayError(400, "invalid_request_body", "the request body must be a JSON object")
    data.pop("policy_gate", None)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        message, param = validation_message(exc)
        raise GatewayError(400, "invalid_request_body", message, details={"param": param}) from None


def floor_refused(what: list[str]) -> GatewayError:
    return GatewayError(
        409,
        "safety_floor",
        "refused by the safety floor (only gateway.toml can lower it): " + "; ".join(what),
        details={"violations": what},
    )


def check_token(token: str, snap: Snapshot, rules: list[Rule]) -> None:
    """422 when a rule would match the redaction token: a redacted text would then be
    redacted again on every rescan of a stream."""
    for rule in rules:
        if rule.enabled and compile_rule(rule).regex.search(token) is not None:
            raise GatewayError(
                422,
                "redaction_token_matches_rule",
                f"the redaction token {token!r} is matched by rule {rule.rule_id!r}",
                details={"rule_id": rule.rule_id},
            )


def policy_response(snap: Snapshot) -> PolicyResponse:
    meta = snap.meta.get("policy", {})
    return PolicyResponse(
        **snap.policy.model_dump(),
        version=snap.versions.get("policy", 0),
        updated_ms=meta.get("updated_ms"),
        updated_by=meta.get("updated_by"),
        floor=state().config.floor(),
    )


def rules_response(snap: Snapshot) -> RulesResponse:
    meta = snap.meta.get("rules", {})
    return RulesResponse(
        rules=snap.rules,
        version=snap.versions.get("rules", 0),
        updated_ms=meta.get("updated_ms"),
        updated_by=meta.get("updated_by"),
    )


async def publish(type_: str, data: dict[str, Any]) -> None:
    """A change of policy or rules on the ``safety`` stream (audit records it)."""
    await context().hub.publish(SAFETY_STREAM, type_, data)


@bp.get("/gateway/safety/policy")
@requires_gate(GATE_READ)
@validate_response(PolicyResponse)
async def get_policy() -> PolicyResponse:
    """The safety policy in force, its version and the floor under it."""
    return policy_response(await state().current())


@bp.put("/gateway/safety/policy")
@requires_gate(GATE_WRITE)
@document_request(Policy)
@validate_response(PolicyResponse)
@document_response(ErrorResponse, 409)
@document_response(ErrorResponse, 422)
async def put_policy() -> PolicyResponse:
    """Replace the policy (every replica applies it within ``refresh_seconds``). 409
    ``safety_floor`` naming what it tried when it would switch safety or secret detection
    off, set a mode below the floor or drop a floor stage; 422 when a rule matches the
    redaction token. A refused PUT writes nothing."""
    return await replace_policy(await body_of(Policy), current_principal().name)


async def replace_policy(policy: Policy, by: str) -> PolicyResponse:
    """The PUT's work (the route's, and the ``SafetyAPI`` service's)."""
    st = state()
    violations = st.config.floor().violations(policy)
    if violations:
        raise floor_refused(violations)
    snap = await st.current()
    check_token(policy.redaction_token, snap, snap.rules)
    snap = await st.write("policy", policy.model_dump(), by)
    await publish("safety.policy_updated", {"by": by, "version": snap.versions["policy"]})
    return policy_response(snap)


@bp.get("/gateway/safety/rules")
@requires_gate(GATE_READ)
@validate_response(RulesResponse)
async def get_rules() -> RulesResponse:
    """Every rule: the defaults and the operator's (``source``), then the API's own."""
    return rules_response(await state().current())


@bp.put("/gateway/safety/rules")
@requires_gate(GATE_WRITE)
@document_request(RulesRequest)
@validate_response(RulesResponse)
@document_response(ErrorResponse, 409)
@document_response(ErrorResponse, 422)
async def put_rules() -> RulesResponse:
    """Replace the rules. The default and operator rules must be sent unchanged (409
    ``safety_floor`` naming each one removed, disabled or changed); every other rule is the
    API's own. 400 a rule id used twice; 422 ``invalid_rule_pattern`` naming a rule whose
    pattern RE2 cannot compile, ``too_many_rules``, or ``redaction_token_matches_rule``.
    A refused PUT writes nothing."""
    body = await body_of(RulesRequest)
    st = state()
    seen: set[str] = set()
    for rule in body.rules:
        if rule.rule_id in seen:
            raise GatewayError(400, "duplicate_rule_id", f"rule id {rule.rule_id!r} is used twice")
        seen.add(rule.rule_id)
    sent = {r.rule_id: r for r in body.rules}
    violations = []
    for fixed in st.fixed:
        got = sent.get(fixed.rule_id)
        where = f"{fixed.source} rule {fixed.rule_id!r}"
        if got is None:
            violations.append(f"removes {where}")
        elif fixed.enabled and not got.enabled:
            violations.append(f"disables {where}")
        elif got.floor_view() != fixed.floor_view():
            violations.append(f"changes {where}")
    if violations:
        raise floor_refused(violations)
    fixed_ids = {r.rule_id for r in st.fixed}
    own = [r.model_copy(update={"source": "api"}) for r in body.rules if r.rule_id not in fixed_ids]
    if len(own) > st.config.max_api_rules:
        raise GatewayError(
            422,
            "too_many_rules",
            f"{len(own)} API rules; plugins.safety.max_api_rules allows {st.config.max_api_rules}",
        )
    for rule in own:
        compile_rule(rule)  # 422 naming the rule
    snap = await st.current()
    check_token(snap.policy.redaction_token, snap, own)
    by = current_principal().name
    value = [r.model_dump(exclude={"source"}) for r in own]
    snap = await st.write("rules", value, by)
    await publish(
        "safety.rules_updated",
        {"by": by, "version": snap.versions["rules"], "rule_ids": [r.rule_id for r in own]},
    )
    return rules_response(snap)


@bp.post("/gateway/safety/test")
@requires_gate(GATE_READ)
@document_request(SafetyTestRequest)
@validate_response(SafetyTestResponse)
async def test_scan() -> SafetyTestResponse:
    """Scan a text with the rules under the policy in force, as the given stage would
    (nothing is published or counted): the action, whether it would be blocked, the
    reason codes, every match with its span and rule, and the text as redacted. At a
    stage the policy does not apply to, the matches are listed but the action is allow."""
    return await scan(await body_of(SafetyTestRequest))


async def scan(body: SafetyTestRequest) -> SafetyTestResponse:
    """The test scan (the route's, and the ``SafetyAPI`` service's)."""
    st = state()
    snap = await st.current()
    applies = body.stage in snap.policy.applies_to
    decision = decide(
        snap.ruleset,
        snap.policy,
        body.text,
        partial=body.partial,
        reach=st.config.stream_reach,
    )
    action = decision.action if applies else "allow"
    return SafetyTestResponse(
        stage=body.stage,
        applies=applies,
        action=action,
        blocked=action == "block",
        reason_codes=decision.reason_codes,
        rule_ids=decision.rule_ids,
        matches=[MatchOut(**m.public(body.text)) for m in decision.matches],
        redacted_text=decision.text if action == "redact" else body.text,
    )
