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
        """Every match of an enabled rule whose kind the policy runs, in character
        offsets. The scan runs over the text's UTF-8 bytes (RE2's own encoding: the str
        API would convert each match's offsets from the start of the text)."""
        data = text.encode("utf-8", "surrogatepass")
        if self.any is not None:
            hits = [self.compiled[i] for i in sorted(self.any.Match(data) or ())]
        else:
            hits = [c for c in self.compiled if c.bregex.search(data) is not None]
        spans: list[tuple[Compiled, str, int, int]] = []
        for c in hits:
            mode = policy.mode_of(c.rule.kind)
            if mode is None:
                continue
            spans.extend((c, mode, m.start(), m.end()) for m in c.bregex.finditer(data))
        spans = [s for s in spans if s[3] > s[2]]
        if not spans:
            return []
        chars = _char_offsets(data, {o for s in spans for o in s[2:]}, len(data) == len(text))
        if chars is None:  # offsets inside a character: the str API, which converts them
            return self._str_matches(text, hits, policy)
        return [Match(c.rule, chars[b0], chars[b1], mode) for c, mode, b0, b1 in spans]

    def _str_matches(self, text: str, hits: list[Compiled], policy: Policy) -> list[Match]:
        found: list[Match] = []
        for c in hits:
            mode = policy.mode_of(c.rule.kind)
            if mode is not None:
                found.extend(
                    Match(c.rule, m.start(), m.end(), mode)
                    for m in c.regex.finditer(text)
                    if m.end() > m.start()
                )
        return found


def _char_offsets(data: bytes, offsets: set[int], ascii_only: bool) -> dict[int, int] | None:
    """Byte offsets of ``data`` as character offsets, in one pass; None when one falls
    inside a character."""
    if ascii_only:
        return {o: o for o in offsets}
    out, chars, last = {}, 0, 0
    try:
        for o in sorted(offsets):
            chars += len(data[last:o].decode("utf-8", "surrogatepass"))
            out[o], last = chars, o
    except UnicodeDecodeError:
        return None
    return out


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
