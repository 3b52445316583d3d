"""The rule scanner, registered through ``gateway_register_safety_scanners`` as
``safety.rules``; scanners of other plugins run beside it (host/safety.py).

It scans a text only at the stages the policy applies to (``context["stage"]``; a
caller that names none is ``inbound`` for input and ``model_output`` for output), and
declares its ``reach`` (``stream_reach``): the longest match a stream must see whole,
and the most it holds back. Its ``holdback`` holds back only the tail of a stream that
could still grow into a match of a redacting or blocking rule (``prefixes.py``), so
plain text streams through while a secret split over chunks is seen whole.
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

    async def holdback(self, text: str, *, direction: str, context: dict[str, Any]) -> int:
        """The trailing characters of ``text`` (streamed output not sent yet) that could
        still grow into a match of a redacting or blocking rule (``engine.py``)."""
        if self.state is None or not text:
            return 0
        snap = await self.state.current()
        if stage_of(direction, context) not in snap.policy.applies_to:
            return 0
        before = context.get("before")
        before = before if isinstance(before, str) else ""
        return snap.ruleset.holdback(text, snap.policy, self.reach, before)

    async def scan(self, text: str, *, direction: str, context: dict[str, Any]) -> Verdict | None:
        if self.state is None or not text:
            return None
        snap = await self.state.current()
        if stage_of(direction, context) not in snap.policy.applies_to:
            return None
        partial = bool(context.get("partial"))
        hold_from = context.get("hold_from")
        decision = decide(
            snap.ruleset,
            snap.policy,
            text,
            partial=partial,
            reach=self.reach,
            hold_from=hold_from if isinstance(hold_from, int) else None,
        )
        if decision.action == "allow":
            return None
        return Verdict(
            cast(Action, decision.action),
            text=decision.text if decision.action == "redact" else None,
            reason=", ".join(decision.reason_codes),
            reason_codes=tuple(decision.reason_codes),
            rule_ids=tuple(decision.rule_ids),
        )
