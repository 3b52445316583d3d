"""Idempotency keys as stored in ``pipelines_runs.idempotency_key``: one namespace per
origin, so a key from one can never find (or block) a run from another.

- ``api:<principal>:<key>``: an ``Idempotency-Key`` header or ``api.start_run(...,
  idempotency_key=)``, scoped to the caller (``<principal>`` is the first 16 hex digits
  of the SHA-256 of ``Principal.key``: fixed length, no ``:``, so it cannot be confused);
- ``webhook:<name>:<delivery>``: written only by the webhook route;
- ``schedule:<id>@<tick_ms>``: written only by the scheduler (``schedules.idempotency_key``);
- ``legacy:<created_by>:<key>``: keys stored before namespacing (migration 4 moves them
  here), still found for the principal name that created them.

An API key's run also stores the fingerprint of the request it was first used with
(``fingerprint``): a repeat with the same request returns that run, one with another
request is refused (422 ``idempotency_key_reused``), as a key names one request.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import sqlalchemy as sa

from host.api import GatewayError, Principal

MAX_KEY = 200
MAX_STORED = 300  # the column's length
_SCOPED = re.compile(r"^(?:api|legacy):[0-9a-f]{16}:(.*)$", re.DOTALL)


def _scope(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:16]


def checked_key(key: str | None, name: str) -> str | None:
    """``key`` (None stays None); 400 ``invalid_idempotency_key`` naming ``name`` unless it
    is 1 to ``MAX_KEY`` characters."""
    if key is not None and not 0 < len(key) <= MAX_KEY:
        raise GatewayError(
            400, "invalid_idempotency_key", f"{name} must be 1 to {MAX_KEY} characters"
        )
    return key


def api_key(principal: Principal, key: str) -> str:
    """The stored form of a caller's key: scoped to ``principal``."""
    return f"api:{_scope(principal.key)}:{key}"


def legacy_key(created_by: str | None, key: str) -> str:
    """Where migration 4 put a key stored before namespacing (by ``created_by``)."""
    stored = f"legacy:{_scope(created_by or '')}:{key}"
    if len(stored) <= MAX_STORED:
        return stored
    return f"legacy:{_scope(created_by or '')}:#{hashlib.sha256(key.encode()).hexdigest()}"


def api_keys(principal: Principal, key: str | None) -> tuple[str | None, tuple[str, ...]]:
    """``(stored key, older keys that also match)`` for a caller's key, or ``(None, ())``."""
    if key is None:
        return None, ()
    return api_key(principal, key), (legacy_key(principal.name, key),)


def fingerprint(pipeline_id: str, raw_input: Any) -> str:
    """SHA-256 (hex) of the request a key is used with: the pipeline id and the canonical
    JSON of the input as sent (keys sorted, no spaces), so key order does not matter."""
    canonical = json.dumps(
        [pipeline_id, raw_input], sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def webhook_key(name: str, delivery: str) -> str:
    return f"webhook:{name}:{delivery}"


def shown(stored: str | None) -> str | None:
    """The key as its caller sent it (``api:``/``legacy:`` scopes left off)."""
    if stored is None:
        return None
    found = _SCOPED.match(stored)
    return found.group(1) if found else stored


def _is_namespaced(key: str, trigger: Any, created_by: str | None) -> bool:
    """Whether a pre-namespace key was written by the scheduler or the webhook route (the
    only writers of those namespaces before; anything else came from an API caller)."""
    if not isinstance(trigger, dict):
        return False
    if trigger.get("type") == "schedule":
        return key == f"schedule:{trigger.get('schedule_id')}@{trigger.get('tick_ms')}"
    if trigger.get("type") == "webhook" and not trigger.get("manual"):
        trigger_id, delivery = trigger.get("trigger_id"), trigger.get("delivery")
        return bool(delivery) and created_by == trigger_id and key == f"{trigger_id}:{delivery}"
    return False


def namespace_stored_keys(conn: sa.Connection, runs: sa.Table) -> None:
    """Migration 4: move every key an API caller stored before namespacing (including
    one that imitated a webhook or schedule key) to ``legacy:<created_by>:<key>``."""
    rows = conn.execute(
        sa.select(runs.c.n, runs.c.idempotency_key, runs.c.trigger, runs.c.created_by).where(
            runs.c.idempotency_key.is_not(None)
        )
    ).all()
    for row in rows:
        if not _is_namespaced(row.idempotency_key, row.trigger, row.created_by):
            conn.execute(
                runs.update()
                .where(runs.c.n == row.n)
                .values(idempotency_key=legacy_key(row.created_by, row.idempotency_key))
            )
