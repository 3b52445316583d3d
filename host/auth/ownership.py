"""Ownership: who may read and act on an object a principal created.

An object is owned by the key of the principal that created it (``Principal.key``:
``token:ci``, ``session:alice``, ``admin:admin``). Its owner reads and acts on it; anyone
else needs the object family's read-all gate to read it and its act-all gate to act on
it (``allow_<family>_read_all``, ``allow_<family>_act_all``, declared by the plugin that
owns the family). ``"*"`` holds every gate, so it reads and acts on everything. An
object with no owner (stored before ownership existed) is left to read-all and act-all
holders. Lists are filtered with :func:`owned_by` (never a 403 for a list); a single
object the caller cannot read is 404, as if it did not exist (:func:`require_owner`).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from host.auth.principal import Principal
from host.errors import GatewayError


def owner_key(principal: Principal) -> str:
    """What to store as the owner of an object ``principal`` creates."""
    return principal.key


def can_read(principal: Principal, owner: str | None, read_all_gate: str) -> bool:
    """``principal`` owns the object, or holds the family's read-all gate."""
    return (owner is not None and owner == principal.key) or principal.has_gate(read_all_gate)


def can_act(principal: Principal, owner: str | None, act_all_gate: str) -> bool:
    """``principal`` owns the object, or holds the family's act-all gate."""
    return (owner is not None and owner == principal.key) or principal.has_gate(act_all_gate)


def owned_by(
    column: sa.ColumnElement[Any], principal: Principal, read_all_gate: str
) -> sa.ColumnElement[bool]:
    """A where-clause for a list: the rows whose owner ``column`` is ``principal``, or
    every row (ownerless ones too) when it holds ``read_all_gate``."""
    if principal.has_gate(read_all_gate):
        return sa.true()
    return column == principal.key


def require_owner(
    principal: Principal,
    owner: str | None,
    *,
    read_all: str,
    not_found: GatewayError,
    act_all: str | None = None,
    action: str = "acting on another principal's object",
) -> None:
    """Raise ``not_found`` unless ``principal`` may read the object (its existence is not
    revealed); then, with ``act_all``, 403 ``policy_gate_denied`` (counted like any gate
    denial) unless it may also act on it."""
    if not can_read(principal, owner, read_all):
        raise not_found
    if act_all is not None and not can_act(principal, owner, act_all):
        from host.context import context  # the context module imports the guard

        context().auth.require_gate(principal, act_all, action)


__all__ = ["can_act", "can_read", "owned_by", "owner_key", "require_owner"]
