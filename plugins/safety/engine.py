"""Scanning one text against the rules under a policy: the matches, the decision (the
strongest mode among the matching rules' kinds), and the redacted text.

In a stream (``partial``: more text may follow), a match that reaches the end of the
text may still grow (a key whose last characters have not arrived): it is left for a
later scan, which sees it again because the hold-back keeps at least ``reach``
characters. A match that reaches the end and is already ``reach`` long cannot be held
any longer: it blocks (a private key or a JWT longer than the hold-back, in a stream, is
blocked rather than partly sent).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from plugins.safety.policy import MODE_RANK, Policy
from plugins.safety.rules import Compiled, Rule, compile_rule, compile_set

TOO_LONG = "stream.match_exceeds_holdback"


@dataclass(frozen=True)
class Match:
    rule: Rule
    start: int
    end: int
    action: str  # the mode of the rule's kind under the policy

    def public(self, text: str) -> dict[str, Any]:
        return {
            "rule_id": self.rule.rule_id,
            "kind": self.rule.kind,
            "reason_code": self.rule.reason_code,
            "action": self.action,
            "start": self.start,
            "end": self.end,
            "match": text[self.start : self.end],
        }


@dataclass
class Decision:
    action: str = "allow"
    text: str = ""
    matches: list[Match] = field(default_factory=list)
    extra_reasons: list[str] = field(default_factory=list)

    @property
    def reason_codes(self) -> list[str]:
        codes = {m.rule.reason_code for m in self.matches} | set(self.extra_reasons)
        return sorted(codes)

    @property
    def rule_ids(self) -> list[str]:
        return sorted({m.rule.rule_id for m in self.matches})


class RuleSet:
    """The enabled rules, compiled once per policy or rules version; also as one RE2 set,
    so that one pass over a text tells which rules match it (most texts: none), and only
    those are run again for their spans."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.compiled: list[Compiled] = [compile_rule(r) for r in rules if r.enabled]
        self.any = compile_set(self.compiled)

    def matches(self, text: str, policy: Policy) -> list[Match]:
        found: list[Match] = []
        if self.any is not None:
            hits = [self.compiled[i] for i in sorted(self.any.Match(text) or ())]
        else:
            hits = [c for c in self.compiled if c.regex.search(text) is not None]
        for c in hits:
            mode = policy.mode_of(c.rule.kind)
            if mode is None:
                continue
            for m in c.regex.finditer(text):
                if m.end() > m.start():
                    found.append(Match(c.rule, m.start(), m.end(), mode))
        return found


def decide(
    rules: RuleSet, policy: Policy, text: str, *, partial: bool = False, reach: int = 0
) -> Decision:
    decision = Decision(text=text)
    for match in rules.matches(text, policy):
        if partial and match.end == len(text):
            if match.end - match.start < reach:
                continue  # may still grow: seen again by the next scan
            decision.extra_reasons.append(TOO_LONG)
            match = Match(match.rule, match.start, match.end, "block")
        decision.matches.append(match)
        if MODE_RANK[match.action] > MODE_RANK[decision.action]:
            decision.action = match.action
    if decision.action == "redact":
        decision.text = redact(text, [m for m in decision.matches if m.action == "redact"], policy)
    return decision


def redact(text: str, matches: list[Match], policy: Policy) -> str:
    """``text`` with every span of ``matches`` (overlaps merged) replaced by the token."""
    spans = sorted((m.start, m.end) for m in matches)
    merged: list[list[int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out, last = [], 0
    for start, end in merged:
        out.append(text[last:start])
        out.append(policy.redaction_token)
        last = end
    out.append(text[last:])
    return "".join(out)
