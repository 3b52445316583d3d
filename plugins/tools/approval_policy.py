"""``[tools.approval]``: which tool calls wait for a person's approval, and how long
an approval stays usable. ``always`` lists tool name globs; each ``[[rules]]`` entry holds
a call when all of its conditions match: ``tool`` (a glob, default every tool), ``arg`` (a
dotted path into the arguments) with ``pattern`` (RE2, searched in the value; without
``arg`` in the whole canonical JSON of the arguments), ``without_gate`` (the caller does
not hold that gate). A tool marked ``approval = "always"`` by its plugin (an MCP server's,
``[mcp.servers.<name>] approval``) is held too.

The policy version of a tool is the SHA-256 of the part of the policy that applies to it
(its mark, the globs and rules naming it): an approval given under one version is not
used under another, so editing the policy and reloading voids the approvals it concerns."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import re2

PREFIX = "tools.approval"
EXPIRY_BOUNDS = (1.0, 30 * 86400.0)
RULE_KEYS = {"tool", "arg", "pattern", "without_gate"}
KEYS = {"always", "rules", "expiry_seconds"}


@dataclass(frozen=True)
class Rule:
    tool: str = "*"
    arg: str | None = None
    pattern: str | None = None
    without_gate: str | None = None
    compiled: Any = field(default=None, compare=False, repr=False)

    def as_dict(self) -> dict[str, Any]:
        found = {"tool": self.tool, "arg": self.arg, "pattern": self.pattern}
        found["without_gate"] = self.without_gate
        return found

    def describe(self) -> str:
        parts = [f"tool matches {self.tool!r}"]
        if self.pattern is not None:
            where = f"args.{self.arg}" if self.arg else "the arguments"
            parts.append(f"{where} ~ {self.pattern!r}")
        if self.without_gate is not None:
            parts.append(f"the caller lacks {self.without_gate!r}")
        return " and ".join(parts)


@dataclass(frozen=True)
class ApprovalPolicy:
    always: tuple[str, ...] = ()
    rules: tuple[Rule, ...] = ()
    expiry_seconds: float = 3600.0

    def version(self, name: str, mark: str | None) -> str:
        """The SHA-256 of what of this policy applies to the tool ``name``."""
        applies = {
            "mark": mark,
            "always": [g for g in self.always if fnmatchcase(name, g)],
            "rules": [r.as_dict() for r in self.rules if fnmatchcase(name, r.tool)],
        }
        text = json.dumps(applies, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def reasons(
        self, name: str, mark: str | None, args: dict[str, Any], caller: dict[str, Any]
    ) -> list[str]:
        """Why a call needs approval (empty: it does not)."""
        found = []
        if mark == "always":
            found.append("the tool is marked approval = always")
        found += [f"tool matches {g!r}" for g in self.always if fnmatchcase(name, g)]
        canonical: str | None = None
        for rule in self.rules:
            if not fnmatchcase(name, rule.tool):
                continue
            if rule.without_gate is not None and _holds(caller, rule.without_gate):
                continue
            if rule.compiled is not None:
                if rule.arg is None:
                    if canonical is None:
                        canonical = json.dumps(
                            args, sort_keys=True, separators=(",", ":"), ensure_ascii=False
                        )
                    text: str | None = canonical
                else:
                    text = _value_text(args, rule.arg)
                if text is None or rule.compiled.search(text) is None:
                    continue
            found.append(rule.describe())
        return found


def _holds(caller: dict[str, Any], gate: str) -> bool:
    gates = caller.get("gates")
    if not isinstance(gates, list | tuple | set | frozenset):
        return False
    return "*" in gates or gate in gates


def _value_text(args: dict[str, Any], path: str) -> str | None:
    value: Any = args
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, bool):
        return "null" if value is None else "true" if value else "false"
    if isinstance(value, int):
        return str(value)  # as JSON writes it, without the cost of a dump
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _text(table: dict[str, Any], key: str, at: str, found: list[str]) -> str | None:
    value = table.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        found.append(f"{at}.{key}: must be a non-empty string")
        return None
    return value


def _rule(table: Any, at: str, found: list[str]) -> Rule | None:
    if not isinstance(table, dict):
        found.append(f"{at}: must be a table")
        return None
    before = len(found)
    found += [f"{at}.{key}: unknown setting" for key in sorted(set(table) - RULE_KEYS)]
    tool = _text(table, "tool", at, found) or "*"
    arg = _text(table, "arg", at, found)
    pattern = _text(table, "pattern", at, found)
    gate = _text(table, "without_gate", at, found)
    if arg is not None and pattern is None:
        found.append(f"{at}.arg: needs a pattern to match the argument against")
    compiled = None
    if pattern is not None:
        options = re2.Options()
        options.log_errors = False
        try:
            compiled = re2.compile(pattern, options)
        except re2.error as exc:
            why = exc.args[0] if exc.args else exc
            why = why.decode(errors="replace") if isinstance(why, bytes) else str(why)
            found.append(f"{at}.pattern: not an RE2 pattern ({why})")
    if len(found) > before:
        return None
    return Rule(tool, arg, pattern, gate, compiled)


def parse(section: Any, found: list[str]) -> ApprovalPolicy:
    """The policy of ``[tools.approval]``; problems go to ``found``."""
    defaults = ApprovalPolicy()
    if section is None:
        return defaults
    if not isinstance(section, dict):
        found.append(f"{PREFIX}: must be a table")
        return defaults
    found += [f"{PREFIX}.{key}: unknown setting" for key in sorted(set(section) - KEYS)]
    always = section.get("always", [])
    if not isinstance(always, list) or not all(isinstance(g, str) and g for g in always):
        found.append(f"{PREFIX}.always: must be a list of tool name globs")
        always = []
    raw_rules = section.get("rules", [])
    if not isinstance(raw_rules, list):
        found.append(f"{PREFIX}.rules: must be a list of tables ([[{PREFIX}.rules]])")
        raw_rules = []
    rules = [_rule(r, f"{PREFIX}.rules[{i}]", found) for i, r in enumerate(raw_rules)]
    expiry = section.get("expiry_seconds", defaults.expiry_seconds)
    low, high = EXPIRY_BOUNDS
    if isinstance(expiry, bool) or not isinstance(expiry, int | float) or not low <= expiry <= high:
        found.append(f"{PREFIX}.expiry_seconds: must be a number from {low:g} to {high:g}")
        expiry = defaults.expiry_seconds
    return ApprovalPolicy(tuple(always), tuple(r for r in rules if r is not None), float(expiry))
