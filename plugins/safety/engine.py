"""Scanning one text against the rules under a policy: the matches, the decision (the
strongest mode among the matching rules' kinds), and the redacted text.

In a stream (``partial``: more text may follow), a match in the tail the stream holds
back (``hold_from`` on: the tail that could still grow into a match, ``prefixes.py``)
is left for a later scan, which sees it again with what follows (a key whose last
characters have not arrived, a private key before its END line). A match that reaches
the end but starts before the held tail cannot be held any longer: it blocks (a private
key or a JWT longer than ``reach``, in a stream, is blocked rather than partly sent).
Without ``hold_from`` a match reaching the end shorter than ``reach`` waits.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from plugins.safety.policy import MODE_RANK, Policy
from plugins.safety.prefixes import Holdback, prefix_pattern
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
        # The stream hold-back patterns (prefixes.py), by the kinds whose mode changes text.
        self._holdbacks: dict[frozenset[str], tuple[Holdback, bool]] = {}

    def prepare(self, policy: Policy) -> tuple[Holdback, bool] | None:
        """The prefix patterns of the rules whose kind ``policy`` redacts or blocks, and
        whether one of them has none (None: no such rule); built once per set of kinds."""
        kinds = frozenset(
            c.rule.kind for c in self.compiled if policy.mode_of(c.rule.kind) in ("redact", "block")
        )
        if not kinds:
            return None
        if kinds not in self._holdbacks:
            chosen = [
                prefix_pattern(c.bregex.pattern.decode())
                for c in self.compiled
                if c.rule.kind in kinds
            ]
            built = [p for p in chosen if p is not None]
            self._holdbacks[kinds] = (Holdback(built), len(built) < len(chosen))
        return self._holdbacks[kinds]

    def holdback(self, text: str, policy: Policy, reach: int, before: str = "") -> int:
        """How many trailing characters of ``text`` (a stream's text not sent yet) must
        stay held back: those from the earliest position where a match of a redacting or
        blocking rule could still be in progress (``prefixes.py``), at most ``reach``; a
        rule whose prefix pattern cannot be built holds back ``reach``. Warn-mode rules
        hold nothing: they change no text, and the next scan, whose left context is the
        text already sent, still finds a match split over chunks."""
        if not text:
            return 0
        built = self.prepare(policy)
        if built is None:
            return 0
        prefixes, fallback = built
        need = reach if fallback else prefixes.need(text, before)
        return min(need, reach, len(text))

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
    rules: RuleSet,
    policy: Policy,
    text: str,
    *,
    partial: bool = False,
    reach: int = 0,
    hold_from: int | None = None,
) -> Decision:
    """``hold_from`` (a stream's partial scan): the caller holds back the text from there
    and scans it again with what follows, so a redacting or blocking match that starts
    there waits (it may still grow: the rest of an open-ended key, an END line); one that
    starts before it and reaches the end cannot be held any longer and blocks. Without
    it, a partial scan waits for a match that reaches the end and is shorter than
    ``reach``."""
    decision = Decision(text=text)
    for match in rules.matches(text, policy):
        if partial and hold_from is not None and match.action != "warn":
            if match.start >= hold_from:
                continue  # held back: seen again by the next scan
            if match.end == len(text):
                decision.extra_reasons.append(TOO_LONG)
                match = Match(match.rule, match.start, match.end, "block")
        elif partial and hold_from is None and match.end == len(text):
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
