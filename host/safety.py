"""Safety scanning: the contract between surfaces that carry text (the OpenAI-compatible
routes, pipeline ``llm`` steps) and the scanners plugins register through
``gateway_register_safety_scanners``.

A scanner is an object with ``async def scan(text, *, direction, context) -> Verdict |
None`` (``direction`` is ``"input"`` or ``"output"``; ``context["stage"]`` is one of
``STAGES``: where the text is going). Every scanner sees the text as the scanners before
it left it; the strongest action wins: block > redact > warn > allow. Each non-allow
decision is published on the ``safety`` event stream (with the stage, and the reason
codes and rule ids of its findings), so audit, metrics and dashboards see it.

Streamed output (``plugins/openai_compat``) is sent as it arrives except for a held-back
tail, so that a match split over chunks is scanned whole before any of it goes out. How
much each scanner needs held (:func:`stream_holdback`, the largest wins):

- ``async def holdback(text, *, direction, context) -> int``: the number of trailing
  characters of ``text`` (the stream's text not sent yet) that could still become part
  of a match the scanner would redact or block; the rest is sent. ``context`` is the
  scan's, with ``partial`` true and ``before``: the text sent just before ``text`` (up
  to ``reach`` characters; for assertions such as a word boundary). A scanner that
  answers 0 for plain text adds no delay. The stream then scans the text with
  ``context["hold_from"]``: the position from which it will hold the text back (the
  largest hold-back any scanner asked for) and scan it again with what follows; a
  scanner may leave a match that starts there for that later scan, and must not leave
  one that starts before it.
- else a ``reach`` attribute (an int): a fixed hold-back of that many characters;
- else the caller's default (``stream_safety_holdback``).

``reach`` is also the left context a stream's rescans see: the last ``reach``
characters already sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from host.context import GatewayContext

Action = Literal["allow", "warn", "redact", "block"]
_RANK = {"allow": 0, "warn": 1, "redact": 2, "block": 3}
SAFETY_STREAM = "safety"
# Where scanned text goes: messages into models, model output (streamed too), tool
# results, session appends, bridge follow-ups, HTTP payloads sent out, prompts sent to
# ACP agents and the updates they send back.
STAGES = (
    "inbound",
    "model_output",
    "tool_output",
    "session_append",
    "followup",
    "outbound_http",
    "agent_prompt",
    "agent_update",
)


@dataclass(frozen=True)
class Verdict:
    action: Action = "allow"
    text: str | None = None  # the replacement text, for "redact"
    reason: str = ""
    reason_codes: tuple[str, ...] = ()  # machine-readable reasons (metrics, audit)
    rule_ids: tuple[str, ...] = ()  # the rules that matched


class Scanner(Protocol):
    async def scan(
        self, text: str, *, direction: str, context: dict[str, Any]
    ) -> Verdict | None: ...


@dataclass
class ScanResult:
    action: Action
    text: str
    findings: list[dict[str, Any]] = field(default_factory=list)

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
        finding: dict[str, Any] = {
            "scanner": name,
            "action": verdict.action,
            "reason": verdict.reason,
        }
        if verdict.reason_codes or verdict.rule_ids:
            finding["reason_codes"] = list(verdict.reason_codes)
            finding["rule_ids"] = list(verdict.rule_ids)
        result.findings.append(finding)
        if verdict.action == "redact" and verdict.text is not None:
            result.text = verdict.text
        if _RANK[verdict.action] > _RANK[result.action]:
            result.action = verdict.action
        if verdict.action == "block":
            break
    if publish and result.findings:
        await publish_findings(ctx, result.action, result.findings, direction, context)
    return result


async def stream_holdback(
    ctx: GatewayContext, text: str, direction: str, context: dict[str, Any], default: int
) -> int:
    """How many trailing characters of ``text`` a stream must hold back: the most any
    scanner needs (its ``holdback``, else its ``reach``, else ``default``), at most
    ``len(text)``."""
    scanners = ctx.registry("safety_scanners")
    need = 0
    for name in scanners:
        scanner = scanners[name]
        method = getattr(scanner, "holdback", None)
        if callable(method):
            wanted = await method(text, direction=direction, context=context)
        else:
            reach = getattr(scanner, "reach", None)
            wanted = reach if isinstance(reach, int) else default
        need = max(need, int(wanted))
        if need >= len(text):
            return len(text)
    return need


async def publish_findings(
    ctx: GatewayContext,
    action: Action,
    findings: list[dict[str, Any]],
    direction: str,
    context: dict[str, Any],
) -> None:
    """The ``safety.<action>`` event on the ``safety`` stream: the scan context (``stage``
    among it), the findings, and the reason codes and rule ids of them all."""
    data = {
        "direction": direction,
        "findings": findings,
        "reason_codes": sorted({c for f in findings for c in f.get("reason_codes", ())}),
        "rule_ids": sorted({r for f in findings for r in f.get("rule_ids", ())}),
        **context,
    }
    await ctx.hub.publish(SAFETY_STREAM, f"safety.{action}", data)
