"""Request and response bodies of ``/gateway/safety/*``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from plugins.safety.policy import Floor, Mode, Policy, Stage
from plugins.safety.rules import Rule

MAX_TEST_TEXT = 1_000_000


class PolicyResponse(Policy):
    version: int = Field(description="increments with every PUT (0: never changed)")
    updated_ms: int | None = None
    updated_by: str | None = None
    floor: Floor = Field(description="what no PUT can lower (gateway.toml)")


class RulesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[Rule] = Field(
        description="every rule: the default and operator rules unchanged (``source`` is "
        "ignored), then the API's own"
    )


class RulesResponse(BaseModel):
    rules: list[Rule]
    version: int
    updated_ms: int | None = None
    updated_by: str | None = None


class SafetyTestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(max_length=MAX_TEST_TEXT)
    stage: Stage = "inbound"
    partial: bool = Field(False, description="scan as a stream's text that may still grow")


class MatchOut(BaseModel):
    rule_id: str
    kind: str
    reason_code: str
    action: Mode
    start: int = Field(description="character offset of the match")
    end: int
    match: str


class SafetyTestResponse(BaseModel):
    stage: Stage
    applies: bool = Field(description="whether the policy scans this stage")
    action: Literal["allow", "warn", "redact", "block"]
    blocked: bool
    reason_codes: list[str]
    rule_ids: list[str]
    matches: list[MatchOut]
    redacted_text: str
