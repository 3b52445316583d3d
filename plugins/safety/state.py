"""The policy and rules in force, shared by every replica through the store.

A write (``PUT``) stores the new value with its version incremented, under a named lock,
and applies at once on the replica that wrote it. Every other replica notices on its
next scan after ``refresh_seconds`` (default 2 s): a scan that finds the snapshot older
than that first reads the two versions (one small query) and reloads what changed. So a
change applies everywhere within ``refresh_seconds`` plus one scan.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError

from host.api import Store, now_ms
from plugins.safety.config import SafetyConfig
from plugins.safety.engine import RuleSet
from plugins.safety.policy import Policy
from plugins.safety.rules import Rule
from plugins.safety.tables import state as table

log = logging.getLogger("gateway.safety")


@dataclass(frozen=True)
class Snapshot:
    policy: Policy
    rules: list[Rule]  # every rule: default, operator, API
    ruleset: RuleSet
    versions: dict[str, int] = field(default_factory=dict)
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)  # updated_ms, updated_by


class SafetyState:
    def __init__(self, store: Store, config: SafetyConfig) -> None:
        self.store = store
        self.config = config
        self.fixed = config.fixed_rules()
        self.snapshot = self._build(config.initial_policy(), [], {}, {})
        self._checked = float("-inf")
        self._lock = asyncio.Lock()

    def _build(
        self,
        policy: Policy,
        api_rules: list[Rule],
        versions: dict[str, int],
        meta: dict[str, dict[str, Any]],
    ) -> Snapshot:
        rules = self.fixed + api_rules
        return Snapshot(policy, rules, RuleSet(rules), versions, meta)

    async def load(self) -> Snapshot:
        async with self.store.read() as conn:
            rows = (await conn.execute(sa.select(table))).mappings().all()
        stored = {r["name"]: r for r in rows}
        policy = self.config.initial_policy()
        if "policy" in stored:
            policy = Policy.model_validate(stored["policy"]["value"])
        api_rules: list[Rule] = []
        if "rules" in stored:
            fixed = {r.rule_id for r in self.fixed}
            # Operator rules added to gateway.toml since win over stored API rules of the name.
            api_rules = [
                Rule.model_validate({**r, "source": "api"})
                for r in stored["rules"]["value"]
                if r.get("rule_id") not in fixed
            ]
        versions = {name: int(r["version"]) for name, r in stored.items()}
        meta = {
            name: {"updated_ms": r["updated_ms"], "updated_by": r["updated_by"]}
            for name, r in stored.items()
        }
        self.snapshot = self._build(policy, api_rules, versions, meta)
        self._checked = time.monotonic()
        return self.snapshot

    async def current(self) -> Snapshot:
        """The snapshot, re-read first when another replica may have changed it."""
        if time.monotonic() - self._checked < self.config.refresh_seconds:
            return self.snapshot
        async with self._lock:
            if time.monotonic() - self._checked < self.config.refresh_seconds:
                return self.snapshot
            try:
                async with self.store.read() as conn:
                    rows = (await conn.execute(sa.select(table.c.name, table.c.version))).all()
                if {name: int(v) for name, v in rows} != self.snapshot.versions:
                    return await self.load()
            except (sa.exc.SQLAlchemyError, OSError, ValidationError) as exc:
                # Scanning goes on with the rules last read rather than failing the request
                # (the store may be restarting); the next scan past refresh_seconds retries.
                log.warning("safety: could not re-read the policy and rules: %s", exc)
            self._checked = time.monotonic()
            return self.snapshot

    async def write(self, name: str, value: Any, by: str) -> Snapshot:
        async with self.store.write() as conn:
            await self.store.dialect.serialize(conn, "safety_state")
            row = await conn.execute(sa.select(table.c.version).where(table.c.name == name))
            version = (row.scalar_one_or_none() or 0) + 1
            values = {
                "name": name,
                "value": value,
                "version": version,
                "updated_ms": now_ms(),
                "updated_by": by,
            }
            await conn.execute(self.store.dialect.upsert(table, ["name"], values))
        return await self.load()
