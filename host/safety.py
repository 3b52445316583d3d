"""Safety scanning: the contract between surfaces that carry text (the OpenAI-compatible
routes, pipeline ``llm`` steps) and the scanners plugins register through
``gateway_register_safety_scanners``.

A scanner is an object with ``async def scan(text, *, direction, context) -> Verdict |
None`` (``direction`` is ``"input"`` or ``"output"``). Every scanner sees the text as the
scanners before it left it; the strongest action wins: block > redact > warn > allow.
Each non-allow verdict is published on the ``safety`` event stream, so audit and
dashboards see it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from host.context import GatewayContext

Action = Literal["allow", "warn", "redact", "block"]
_RANK = {"allow": 0, "warn": 1, "redact": 2, "block": 3}
SAFETY_STREAM = "safety"


@dataclass(frozen=True)
class Verdict:
    action: Action = "allow"
    text: str | None = None  # the replacement text, for "redact"
    reason: str = ""


class Scanner(Protocol):
    async def scan(
        self, text: str, *, direction: str, context: dict[str, Any]
    ) -> Verdict | None: ...


@dataclass
class ScanResult:
    action: Action
    text: str
    findings: list[dict[str, str]] = field(default_factory=list)

    @property
    def blocked(self) -> bool:
        return self.action == "block"


async def scan_text(
    ctx: GatewayContext,
    text: str,
    direction: str,
    context: dict[str, Any],
    *,
    publish: bool = True,
) -> ScanResult:
    """Run every registered scanner over ``text``; publishes a ``safety.<action>`` event
    for anything but allow (unless ``publish`` is false: a caller that scans the same
    text again and again, a stream's rolling scan, publishes each finding once itself
    with :func:`publish_findings`). Cheap when no scanner is registered."""
    scanners = ctx.registry("safety_scanners")
    result = ScanResult("allow", text)
    if not len(scanners):
        return result
    for name in scanners:
        verdict = await scanners[name].scan(result.text, direction=direction, context=context)
        if verdict is None or verdict.action == "allow":
            continue
        result.findings.append(
            {"scanner": name, "action": verdict.action, "reason": verdict.reason}
        )
        if verdict.action == "redact" and verdict.text is not None:
            result.text = verdict.text
        if _RANK[verdict.action] > _RANK[result.action]:
            result.action = verdict.action
        if verdict.action == "block":
            break
    if publish and result.findings:
        await publish_findings(ctx, result.action, result.findings, direction, context)
    return result


async def publish_findings(
    ctx: GatewayContext,
    action: Action,
    findings: list[dict[str, str]],
    direction: str,
    context: dict[str, Any],
) -> None:
    """The ``safety.<action>`` event on the ``safety`` stream."""
    await ctx.hub.publish(
        SAFETY_STREAM, f"safety.{action}", {"direction": direction, "findings": findings, **context}
    )
