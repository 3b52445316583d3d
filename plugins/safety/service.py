"""The safety plugin's :class:`~plugins.safety.contract.SafetyAPI`: the routes' work,
the gates checked here since no route checks them for the caller."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from host.api import GatewayContext, GatewayError, Principal, validation_message
from plugins.safety import routes
from plugins.safety.contract import SafetyAPI
from plugins.safety.models import (
    PolicyResponse,
    RulesResponse,
    SafetyTestRequest,
    SafetyTestResponse,
)
from plugins.safety.policy import Policy


def _parsed(model: Any, data: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        message, param = validation_message(exc)
        raise GatewayError(400, "invalid_request_body", message, details={"param": param}) from None


class SafetyService(SafetyAPI):
    def __init__(self, ctx: GatewayContext) -> None:
        self._ctx = ctx

    def _gate(self, principal: Principal, gate: str, action: str) -> None:
        self._ctx.auth.require_gate(principal, gate, action)

    async def policy(self, principal: Principal) -> PolicyResponse:
        self._gate(principal, routes.GATE_READ, "reading the safety policy")
        return routes.policy_response(await routes.state().current())

    async def replace_policy(self, principal: Principal, policy: dict[str, Any]) -> PolicyResponse:
        self._gate(principal, routes.GATE_WRITE, "changing the safety policy")
        return await routes.replace_policy(_parsed(Policy, policy), principal.name)

    async def rules(self, principal: Principal) -> RulesResponse:
        self._gate(principal, routes.GATE_READ, "reading the safety rules")
        return routes.rules_response(await routes.state().current())

    async def scan(self, principal: Principal, text: str, stage: str) -> SafetyTestResponse:
        self._gate(principal, routes.GATE_READ, "a safety test scan")
        return await routes.scan(_parsed(SafetyTestRequest, {"text": text, "stage": stage}))
