"""``[plugins.sessions]``: one parse gives both what is wrong with the section
(``problems``, for ``gateway_validate_config``: ``gateway config check``, a config
PATCH, a reload) and the values the plugin runs with (``configured``). Every problem
names its key: ``plugins.sessions.max_content_chars: ...``."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from host.api import GatewayError, Settings

SECTION = "sessions"
PREFIX = f"plugins.{SECTION}"
_KNOWN = {"enabled", "record_conversations"}


@dataclass(frozen=True)
class SessionsConfig:
    # Characters of one message, one memory entry's text, one memory document (413 above).
    max_content_chars: int = 100_000
    max_document_chars: int = 1_000_000
    # Whether chat completions and Responses with a session key are kept as sessions.
    record_conversations: bool = True
    # The shipped ranking: weights of the text rank, the importance and the recency.
    text_weight: float = 0.6
    importance_weight: float = 0.25
    recency_weight: float = 0.15
    recency_half_life_days: float = 30.0
    # Weight of a registered ranker's score (``gateway_register_memory_rankers``).
    ranker_weight: float = 1.0
    # Full-text matches ranked per search (the best by text rank), before the blend.
    candidate_pool: int = 200


# Floor and ceiling of each number (docs/reference/configuration.md).
BOUNDS: dict[str, tuple[float, float]] = {
    "max_content_chars": (1, 10_000_000),
    "max_document_chars": (1, 50_000_000),
    "text_weight": (0, 100),
    "importance_weight": (0, 100),
    "recency_weight": (0, 100),
    "recency_half_life_days": (0.001, 36_500),
    "ranker_weight": (0, 100),
    "candidate_pool": (1, 10_000),
}


def parse(section: dict[str, Any]) -> tuple[SessionsConfig, list[str]]:
    """The section's values (the default where a value is invalid) and its problems."""
    found: list[str] = []
    values: dict[str, Any] = {}
    defaults = SessionsConfig()
    for spec in fields(SessionsConfig):
        default = getattr(defaults, spec.name)
        raw = section.get(spec.name, default)
        if spec.name == "record_conversations":
            if not isinstance(raw, bool):
                found.append(f"{PREFIX}.{spec.name}: must be true or false (got {raw!r})")
                raw = default
            values[spec.name] = raw
            continue
        low, high = BOUNDS[spec.name]
        whole = isinstance(default, int)
        kind = (int,) if whole else (int, float)
        if isinstance(raw, bool) or not isinstance(raw, kind) or not low <= raw <= high:
            what = "an integer" if whole else "a number"
            found.append(
                f"{PREFIX}.{spec.name}: must be {what} from {low:g} to {high:g} (got {raw!r})"
            )
            raw = default
        values[spec.name] = raw if whole else float(raw)
    unknown = sorted(set(section) - _KNOWN - set(BOUNDS))
    found.extend(f"{PREFIX}.{key}: unknown setting" for key in unknown)
    return SessionsConfig(**values), found


def problems(settings: Settings) -> list[str]:
    return parse(settings.plugin_section(SECTION))[1]


def configured(settings: Settings) -> SessionsConfig:
    """The section's values; GatewayError 400 ``config_invalid`` naming every invalid key."""
    config, found = parse(settings.plugin_section(SECTION))
    if found:
        raise GatewayError(400, "config_invalid", "; ".join(found))
    return config
