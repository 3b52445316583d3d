"""What other plugins call: the :class:`SafetyAPI` service (``service(SafetyAPI)``), the
policy, the rules and the test scan of ``/gateway/safety/*`` for a principal, with the
same gates (``allow_safety_read``, ``allow_safety_write``) and refusals."""

from __future__ import annotations

from typing import Any

from host.api import Principal
from plugins.safety.models import PolicyResponse, RulesResponse, SafetyTestResponse


class SafetyAPI:
    """A plain base class, so ``service(SafetyAPI)`` type-checks; the safety plugin
    provides the implementation. Errors are ``host.api.GatewayError``: 403 without the
    gate, 400 naming a bad field, 409 ``safety_floor``, 422 as the routes answer."""

    async def policy(self, principal: Principal) -> PolicyResponse:
        """The policy in force (``GET /gateway/safety/policy``)."""
        raise NotImplementedError

    async def replace_policy(self, principal: Principal, policy: dict[str, Any]) -> PolicyResponse:
        """Replace the policy (``PUT /gateway/safety/policy``); a refusal writes nothing."""
        raise NotImplementedError

    async def rules(self, principal: Principal) -> RulesResponse:
        """Every rule (``GET /gateway/safety/rules``)."""
        raise NotImplementedError

    async def scan(self, principal: Principal, text: str, stage: str) -> SafetyTestResponse:
        """What the rules would do to ``text`` at ``stage`` (``POST /gateway/safety/test``)."""
        raise NotImplementedError


__all__ = ["SafetyAPI"]
