"""``[plugins.safety]``: the operator's settings. They are the starting policy (until a
``PUT /gateway/safety/policy`` replaces it), the floor no API call can lower, the
default rules the operator turns off and the operator's own rules (which, like the
defaults, the API can neither remove nor change). Every problem names its key.

Its keys avoid the words the host takes for secrets (``token``, ``secret``): a config
PATCH would refuse them in clear and ``GET /gateway/config`` would mask them; so the
policy's ``secret_detection.mode`` and ``redaction_token`` are ``leak_mode`` and
``redaction_text`` here."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from host.api import GatewayError, Settings
from plugins.safety.policy import FLOOR_STAGES, Floor, Mode, Policy, SecretDetection, Stage
from plugins.safety.rules import DEFAULT_RULES, Rule, compile_rule

PREFIX = "plugins.safety"


class OperatorRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rule_id: str
    kind: str
    reason_code: str
    pattern: str
    matcher: str = "regex"


class SafetyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Mode = "warn"
    leak_mode: Mode = "redact"
    applies_to: list[Stage] | None = None  # None: every stage
    redaction_text: str = Field("[REDACTED]", min_length=1, max_length=100)
    floor_mode: Mode = "warn"
    floor_leak_mode: Mode = "redact"
    floor_stages: list[Stage] = Field(default_factory=lambda: list(FLOOR_STAGES))
    disabled_rules: list[str] = Field(default_factory=list)
    rules: list[OperatorRule] = Field(default_factory=list)
    # The longest match a stream must see whole (openai_compat's hold-back is raised to
    # it): API keys up to it are redacted across chunks; longer open-ended ones blocked.
    stream_reach: int = Field(256, ge=16, le=65536)
    # How long a replica may scan with a policy or rules another replica replaced.
    refresh_seconds: float = Field(2.0, ge=0.1, le=300)
    max_api_rules: int = Field(500, ge=0, le=10000)

    def floor(self) -> Floor:
        return Floor(
            mode=self.floor_mode, secret_mode=self.floor_leak_mode, stages=self.floor_stages
        )

    def initial_policy(self) -> Policy:
        policy = Policy(
            mode=self.mode,
            redaction_token=self.redaction_text,
            secret_detection=SecretDetection(mode=self.leak_mode),
        )
        if self.applies_to is not None:
            policy.applies_to = list(self.applies_to)
        return policy

    def fixed_rules(self) -> list[Rule]:
        """The default rules (those in ``disabled_rules`` off) and the operator's rules."""
        defaults = [
            r.model_copy(update={"enabled": r.rule_id not in self.disabled_rules})
            for r in DEFAULT_RULES
        ]
        return defaults + [operator_rule(r) for r in self.rules]


def operator_rule(raw: OperatorRule) -> Rule:
    return Rule.model_validate({**raw.model_dump(), "source": "operator"})


def parse(section: dict[str, Any]) -> tuple[SafetyConfig, list[str]]:
    """The section's values (defaults where it is invalid) and its problems."""
    try:
        config = SafetyConfig.model_validate(section)
    except ValidationError as exc:
        return SafetyConfig(), [
            f"{PREFIX}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        ]
    found: list[str] = []
    known = {r.rule_id for r in DEFAULT_RULES}
    for rule_id in config.disabled_rules:
        if rule_id not in known:
            found.append(f"{PREFIX}.disabled_rules: {rule_id!r} is not a default rule")
    seen = set(known)
    for i, raw in enumerate(config.rules):
        try:
            rule = operator_rule(raw)
            compile_rule(rule)
        except ValidationError as exc:
            found.extend(
                f"{PREFIX}.rules.{i}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                for e in exc.errors()
            )
            continue
        except GatewayError as exc:
            found.append(f"{PREFIX}.rules.{i}: {exc.message}")
            continue
        if rule.rule_id in seen:
            found.append(f"{PREFIX}.rules.{i}.rule_id: {rule.rule_id!r} is used twice")
        seen.add(rule.rule_id)
    token = config.redaction_text
    for rule in config.fixed_rules() if not found else ():
        if rule.enabled and compile_rule(rule).regex.search(token) is not None:
            found.append(f"{PREFIX}.redaction_text: {token!r} is matched by rule {rule.rule_id!r}")
    try:
        policy = config.initial_policy()
    except ValidationError as exc:
        found.append(f"{PREFIX}: {exc.errors()[0]['msg']}")
    else:
        found.extend(
            f"{PREFIX}: the starting policy is below the floor: {v}"
            for v in config.floor().violations(policy)
        )
    if found:
        return SafetyConfig(), found
    return config, []


def configured(settings: Settings) -> SafetyConfig:
    """The section's values; an invalid section fails start-up naming the key."""
    config, found = parse(settings.plugin_section("safety"))
    if found:
        raise GatewayError(500, "config_invalid", "; ".join(found))
    return config
