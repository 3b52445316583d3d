"""Mark views: public (no auth), or gated by a policy gate. Unmarked views need auth."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

PUBLIC_ATTR = "_gateway_public"
GATE_ATTR = "_gateway_gate"


UNLIMITED_ATTR = "_gateway_unlimited"


def public(fn: F | None = None, *, rate_limited: bool = True) -> Any:
    """Serve this view without credentials. Public views are rate limited per client
    address unless ``rate_limited=False`` (liveness probes). They are listed in
    ``docs/reference/http.md``; keep the set small."""

    def mark(view: F) -> F:
        setattr(view, PUBLIC_ATTR, True)
        setattr(view, UNLIMITED_ATTR, not rate_limited)
        return view

    return mark(fn) if fn is not None else mark


def requires_gate(gate: str) -> Callable[[F], F]:
    """Require the caller to hold ``gate`` (declared by some plugin's
    ``gateway_register_policy_gates``); checked before the view runs."""

    def mark(fn: F) -> F:
        setattr(fn, GATE_ATTR, gate)
        return fn

    return mark


def is_public(view: Any) -> bool:
    return bool(getattr(view, PUBLIC_ATTR, False))


def is_unlimited(view: Any) -> bool:
    return bool(getattr(view, UNLIMITED_ATTR, False))


def gate_of(view: Any) -> str | None:
    return getattr(view, GATE_ATTR, None)


RAW_BODY_ATTR = "_gateway_raw_body"


def raw_body(fn: F) -> F:
    """This view reads its request body as bytes (a signed webhook): the host neither
    requires ``application/json`` of it nor parses it. Parse it with
    ``host.api.parse_json`` (strict) once it is trusted."""
    setattr(fn, RAW_BODY_ATTR, True)
    return fn


def takes_raw_body(view: Any) -> bool:
    return bool(getattr(view, RAW_BODY_ATTR, False))
