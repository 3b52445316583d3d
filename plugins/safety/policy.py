"""The safety policy (``GET/PUT /gateway/safety/policy``) and the floor under it.

The policy says how strongly each kind of rule acts (``mode`` for prompt injection,
``secret_detection.mode`` for secret leaks), where scanning applies (``applies_to``, a
list of stages) and what replaces redacted text. The floor comes from ``gateway.toml``
(``[plugins.safety]``, ``config.py``): no PUT may switch safety or secret detection off,
set a mode weaker than the floor's, or drop a floor stage from ``applies_to``.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from host.api import STAGES

Mode = Literal["warn", "redact", "block"]
Stage = Literal[
    "inbound",
    "model_output",
    "tool_output",
    "session_append",
    "followup",
    "outbound_http",
    "agent_prompt",
    "agent_update",
]
ALL_STAGES: tuple[Stage, ...] = get_args(Stage)
FLOOR_STAGES: tuple[Stage, ...] = ("inbound", "model_output")
MODE_RANK = {"allow": 0, "warn": 1, "redact": 2, "block": 3}
assert set(get_args(Stage)) == set(STAGES)  # the host and this plugin name the same stages


class SecretDetection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    mode: Mode = "redact"


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="always true: safety cannot be switched off by API")
    mode: Mode = Field("warn", description="what a prompt-injection match does")
    applies_to: list[Stage] = Field(
        default_factory=lambda: list(ALL_STAGES), description="the stages that are scanned"
    )
    redaction_token: str = Field("[REDACTED]", min_length=1, max_length=100)
    secret_detection: SecretDetection = Field(default_factory=SecretDetection)

    @field_validator("applies_to")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))

    def mode_of(self, kind: str) -> str | None:
        """The mode of a rule kind; None when its rules do not run."""
        if kind == "secret_leak":
            return self.secret_detection.mode if self.secret_detection.enabled else None
        return self.mode


class Floor(BaseModel):
    """What no API call can lower (``[plugins.safety]`` ``floor_*``)."""

    mode: Mode = "warn"
    secret_mode: Mode = "redact"  # noqa: S105 (a mode, not a secret)
    stages: list[Stage] = Field(default_factory=lambda: list(FLOOR_STAGES))

    def violations(self, policy: Policy) -> list[str]:
        """What ``policy`` tries that the floor forbids (empty: allowed)."""
        found = []
        if not policy.enabled:
            found.append("enabled=false (safety cannot be switched off through the API)")
        if not policy.secret_detection.enabled:
            found.append("secret_detection.enabled=false (secret-leak detection stays on)")
        if MODE_RANK[policy.mode] < MODE_RANK[self.mode]:
            found.append(f"mode={policy.mode!r} (the floor is {self.mode!r})")
        if MODE_RANK[policy.secret_detection.mode] < MODE_RANK[self.secret_mode]:
            found.append(
                f"secret_detection.mode={policy.secret_detection.mode!r} "
                f"(the floor is {self.secret_mode!r})"
            )
        dropped = [s for s in self.stages if s not in policy.applies_to]
        if dropped:
            found.append(f"applies_to without {', '.join(dropped)} (floor stages)")
        return found
