"""Which models a principal may call, and its budgets: the ``models`` and ``budgets`` keys
of its ``[auth.tokens.<name>]`` or ``[auth.users.<name>]`` table (host settings this
plugin reads; the host does not interpret them).

``models``: names or glob patterns (``gpt-4o*``); unset, every model. A model it may not
call is ``404 model_not_found``, as if absent, and ``/v1/models`` does not list it.
``budgets``: see :class:`Budgets` (budgets.py counts and enforces them). Principals with
no table (the generated admin token, localhost-dev, a plugin's own) are unrestricted.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from host.api import AllowList, Principal, Settings, context

POLICIES_KEY = "openai_compat.access"
OTHER = "other"  # the metrics label of principals the config does not name


class MinuteLimits(BaseModel):
    """Per-minute limits, counted for each model separately."""

    model_config = ConfigDict(extra="forbid")

    requests_per_minute: int | None = Field(None, ge=1, le=10_000_000)
    tokens_per_minute: int | None = Field(None, ge=1, le=10**12)


class Budgets(MinuteLimits):
    """``budgets = {...}`` of a token or account. The per-minute limits apply to each
    model on its own (``models`` overrides them for the models a name or pattern
    matches, first match wins); ``tokens_per_day`` and ``tokens_per_month`` (UTC) count
    every model together."""

    tokens_per_day: int | None = Field(None, ge=1, le=10**15)
    tokens_per_month: int | None = Field(None, ge=1, le=10**15)
    models: dict[str, MinuteLimits] = Field(default_factory=dict)

    def minute_limits(self, model: str) -> MinuteLimits:
        for pattern, limits in self.models.items():
            if fnmatch.fnmatchcase(model, pattern):
                return limits
        return self

    @property
    def any(self) -> bool:
        return bool(
            self.requests_per_minute
            or self.tokens_per_minute
            or self.tokens_per_day
            or self.tokens_per_month
            or any(m.requests_per_minute or m.tokens_per_minute for m in self.models.values())
        )


@dataclass(frozen=True)
class Policy:
    """What one principal may do with models."""

    label: str  # its name in metrics: the principal's key, or OTHER
    patterns: tuple[str, ...] | None = None
    budgets: Budgets | None = None
    _allowed: AllowList = field(init=False, compare=False)

    def __post_init__(self) -> None:
        # The host's allow-list (the same as the tools allow-list of /mcp): cached per name.
        object.__setattr__(self, "_allowed", AllowList(self.patterns))

    def allows(self, model: str) -> bool:
        return self._allowed.allows(model)


UNRESTRICTED = Policy(OTHER)


def _tables(settings: Settings) -> list[tuple[str, str, Any]]:
    auth = settings.auth
    return [("token", name, cfg) for name, cfg in auth.tokens.items()] + [
        ("session", name, cfg) for name, cfg in auth.users.items()
    ]


def _where(kind: str, name: str) -> str:
    return f"auth.{'tokens' if kind == 'token' else 'users'}.{name}"


def problems(settings: Settings) -> list[str]:
    """The ``budgets`` and ``models`` keys that are wrong, each named."""
    found = []
    for kind, name, cfg in _tables(settings):
        if cfg.budgets:
            try:
                Budgets.model_validate(cfg.budgets)
            except ValidationError as exc:
                for err in exc.errors():
                    loc = ".".join(str(p) for p in err.get("loc", ()))
                    found.append(f"{_where(kind, name)}.budgets.{loc}: {err.get('msg')}")
        for pattern in cfg.models or []:
            if not isinstance(pattern, str) or not pattern:
                found.append(f"{_where(kind, name)}.models: {pattern!r} is not a model name")
    return found


def policies(settings: Settings) -> dict[str, Policy]:
    """Every configured principal's policy, by principal key (``token:ci``). Call after
    :func:`problems` found none."""
    # The built-in principals are few and fixed: labelled by their own key.
    out: dict[str, Policy] = {k: Policy(k) for k in ("admin:admin", "localhost-dev:localhost-dev")}
    for kind, name, cfg in _tables(settings):
        key = f"{kind}:{name}"
        budgets = Budgets.model_validate(cfg.budgets) if cfg.budgets else None
        out[key] = Policy(
            key,
            tuple(cfg.models) if cfg.models is not None else None,
            budgets if budgets is not None and budgets.any else None,
        )
    return out


def policy_of(principal: Principal) -> Policy:
    found: dict[str, Policy] = context().extras.get(POLICIES_KEY) or {}
    return found.get(principal.key, UNRESTRICTED)
