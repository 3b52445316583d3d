"""The rule scanner, registered through ``gateway_register_safety_scanners`` as
``safety.rules``; scanners of other plugins run beside it (host/safety.py).

It scans a text only at the stages the policy applies to (``context["stage"]``; a
caller that names none is ``inbound`` for input and ``model_output`` for output), and
declares its ``reach`` (``stream_reach``), the hold-back streamed output needs so that a
secret split over chunks is seen whole.
"""

from __future__ import annotations

from typing import Any, cast

from host.api import Action, Verdict
from plugins.safety.engine import decide
from plugins.safety.state import SafetyState

NAME = "safety.rules"


def stage_of(direction: str, context: dict[str, Any]) -> str:
    stage = context.get("stage")
    if isinstance(stage, str) and stage:
        return stage
    return "inbound" if direction == "input" else "model_output"


class RuleScanner:
    def __init__(self) -> None:
        self.state: SafetyState | None = None  # set at start-up, once the store is open

    @property
    def reach(self) -> int:
        return self.state.config.stream_reach if self.state is not None else 0

    async def scan(self, text: str, *, direction: str, context: dict[str, Any]) -> Verdict | None:
        if self.state is None or not text:
            return None
        snap = await self.state.current()
        if stage_of(direction, context) not in snap.policy.applies_to:
            return None
        partial = bool(context.get("partial"))
        decision = decide(snap.ruleset, snap.policy, text, partial=partial, reach=self.reach)
        if decision.action == "allow":
            return None
        return Verdict(
            cast(Action, decision.action),
            text=decision.text if decision.action == "redact" else None,
            reason=", ".join(decision.reason_codes),
            reason_codes=tuple(decision.reason_codes),
            rule_ids=tuple(decision.rule_ids),
        )
