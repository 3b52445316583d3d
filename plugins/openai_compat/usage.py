"""Model usage per principal, model and UTC day, and the budgets counted from it.

Two tables, both updated with upserts that add to a row (``requests = requests + 1``),
so any number of workers and replicas on one store count together:

- ``openai_usage``: requests and tokens per (principal, model, day), kept for
  ``GET /gateway/usage`` and ``gateway usage``; a period budget (``tokens_per_day``,
  ``tokens_per_month``) sums it.
- ``openai_budget_minutes``: requests and tokens per (principal, model, minute), for
  the per-minute budgets; rows older than a few minutes are removed as new ones come.

A request is admitted (:func:`admit`) before the provider is called: a period or
tokens-per-minute budget already spent refuses it; a request-per-minute budget is
taken with one atomic increment, given back when it overshoots.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from host.api import GatewayError, Migration, Store
from plugins.openai_compat.plugin_settings import bounded

# How often this process writes the usage of ended calls (``[plugins.openai_compat]``).
FLUSH_SETTING = bounded("usage_flush_seconds", 1.0, 0.05, 60, "a number of seconds", float)

metadata = sa.MetaData()

usage = sa.Table(
    "openai_usage",
    metadata,
    sa.Column("principal", sa.String(300), primary_key=True),
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("day", sa.String(10), primary_key=True),  # YYYY-MM-DD, UTC
    sa.Column("requests", sa.BigInteger, nullable=False),
    sa.Column("input_tokens", sa.BigInteger, nullable=False),
    sa.Column("output_tokens", sa.BigInteger, nullable=False),
    # Requests whose tokens were estimated from the text (the upstream reported none).
    sa.Column("estimated_requests", sa.BigInteger, nullable=False),
    sa.Column("errors", sa.BigInteger, nullable=False),
)

minutes = sa.Table(
    "openai_budget_minutes",
    metadata,
    sa.Column("principal", sa.String(300), primary_key=True),
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("minute", sa.BigInteger, primary_key=True),  # unix seconds // 60
    sa.Column("requests", sa.BigInteger, nullable=False),
    sa.Column("tokens", sa.BigInteger, nullable=False),
)

MIGRATIONS = (
    Migration.create_tables("openai_compat", 5, "usage and budget counters", [usage, minutes]),
)


def day_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def _next_day(ts: float) -> float:
    d = datetime.fromtimestamp(ts, UTC).date() + timedelta(days=1)
    return calendar.timegm(d.timetuple())


def _next_month(ts: float) -> float:
    d = datetime.fromtimestamp(ts, UTC).date()
    year, month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return float(calendar.timegm((year, month, 1, 0, 0, 0)))


def budget_exceeded(what: str, reset_at: float, now: float) -> GatewayError:
    """429 ``budget_exceeded`` naming the budget, with ``Retry-After`` until it resets."""
    wait = max(1, int(reset_at - now + 0.999))
    when = datetime.fromtimestamp(reset_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return GatewayError(
        429,
        "budget_exceeded",
        f"the {what} budget of this key is spent; it resets at {when}",
        type="rate_limit_error",
        headers={"Retry-After": str(wait)},
    )


@dataclass(frozen=True)
class Limits:
    """The budgets that apply to one (principal, model) call."""

    requests_per_minute: int | None
    tokens_per_minute: int | None
    tokens_per_day: int | None
    tokens_per_month: int | None


async def admit(
    store: Store, principal: str, model: str, limits: Limits, pending: UsageBuffer
) -> None:
    """Refuse (429 ``budget_exceeded``) a call over a budget, else count its request
    against the per-minute budget. One write transaction, which first writes this
    process's ``pending`` usage: the increment and the check of what it returned are
    one step for every replica. It commits either way (the flushed usage stays)."""
    async with store.write() as conn:
        await pending.flush(store, conn)
        refusal = await _check(conn, store, principal, model, limits)
    if refusal is not None:
        raise refusal


async def _check(
    conn: Any, store: Store, principal: str, model: str, limits: Limits
) -> GatewayError | None:
    now = time.time()
    minute = int(now // 60)
    if limits.tokens_per_day or limits.tokens_per_month:
        today = day_of(now)
        spent = usage.c.input_tokens + usage.c.output_tokens
        if limits.tokens_per_day:
            used = await _sum(conn, spent, principal, usage.c.day == today)
            if used >= limits.tokens_per_day:
                return budget_exceeded("tokens_per_day", _next_day(now), now)
        if limits.tokens_per_month:
            first = today[:8] + "01"
            used = await _sum(conn, spent, principal, usage.c.day >= first)
            if used >= limits.tokens_per_month:
                return budget_exceeded("tokens_per_month", _next_month(now), now)
    if not (limits.requests_per_minute or limits.tokens_per_minute):
        return None
    reset = (minute + 1) * 60.0
    if limits.tokens_per_minute:
        row = (
            await conn.execute(
                sa.select(minutes.c.tokens).where(
                    minutes.c.principal == principal,
                    minutes.c.model == model,
                    minutes.c.minute == minute,
                )
            )
        ).first()
        if row is not None and row.tokens >= limits.tokens_per_minute:
            return budget_exceeded("tokens_per_minute", reset, now)
    if limits.requests_per_minute:
        taken = await _add_minute(conn, store, principal, model, minute, requests=1)
        if taken > limits.requests_per_minute:
            await _add_minute(conn, store, principal, model, minute, requests=-1)
            return budget_exceeded("requests_per_minute", reset, now)
    # Old minutes go as new ones come: a few rows per (principal, model) at most.
    await conn.execute(
        minutes.delete().where(
            minutes.c.principal == principal,
            minutes.c.model == model,
            minutes.c.minute < minute - 2,
        )
    )
    return None


async def _sum(conn: Any, column: Any, principal: str, when: Any) -> int:
    found = await conn.execute(
        sa.select(sa.func.coalesce(sa.func.sum(column), 0)).where(
            usage.c.principal == principal, when
        )
    )
    return int(found.scalar() or 0)


async def _add_minute(
    conn: Any,
    store: Store,
    principal: str,
    model: str,
    minute: int,
    *,
    requests: int = 0,
    tokens: int = 0,
) -> int:
    stmt = (
        store.dialect.insert(minutes)
        .values(principal=principal, model=model, minute=minute, requests=requests, tokens=tokens)
        .on_conflict_do_update(
            index_elements=["principal", "model", "minute"],
            set_={
                "requests": minutes.c.requests + requests,
                "tokens": minutes.c.tokens + tokens,
            },
        )
        .returning(minutes.c.requests)
    )
    return int((await conn.execute(stmt)).scalar_one())


@dataclass(frozen=True)
class Spent:
    """What one call used."""

    input_tokens: int = 0
    output_tokens: int = 0
    estimated: bool = False
    error: bool = False


_FIELDS = ("requests", "input_tokens", "output_tokens", "estimated_requests", "errors")


class UsageBuffer:
    """Usage of ended calls, not yet in the store: added without a write (a call's answer
    waits for no transaction) and flushed in one transaction every
    ``usage_flush_seconds``, before a budget check (so this process's calls are all
    counted), before a usage report, and at shutdown. Other replicas see a call once
    its process flushed it."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, str], list[int]] = {}
        self.minutes: dict[tuple[str, str, int], int] = {}
        self.log = logging.getLogger("gateway.openai_compat")

    def add(
        self, principal: str, model: str, budget_model: str, spent: Spent, *, minute_tokens: bool
    ) -> None:
        """One call of ``principal``, answered by ``model``; with ``minute_tokens`` its
        tokens also count against this minute's budget of ``budget_model`` (the model it
        asked for)."""
        now = time.time()
        row = self.rows.setdefault((principal, model, day_of(now)), [0, 0, 0, 0, 0])
        row[0] += 1
        row[1] += spent.input_tokens
        row[2] += spent.output_tokens
        row[3] += int(spent.estimated)
        row[4] += int(spent.error)
        total = spent.input_tokens + spent.output_tokens
        if minute_tokens and total:
            key = (principal, budget_model, int(now // 60))
            self.minutes[key] = self.minutes.get(key, 0) + total

    async def flush(self, store: Store, conn: Any = None) -> None:
        """Write what is pending, in ``conn``'s transaction or one of its own. Taken
        from the buffer before the first await, so calls ending meanwhile wait for the
        next flush; put back when the write fails."""
        if not self.rows and not self.minutes:
            return
        rows, self.rows = self.rows, {}
        minutes_, self.minutes = self.minutes, {}
        try:
            if conn is not None:
                await _write(conn, store, rows, minutes_)
            else:
                async with store.write() as own:
                    await _write(own, store, rows, minutes_)
        except BaseException:
            for key, values in rows.items():
                row = self.rows.setdefault(key, [0, 0, 0, 0, 0])
                for n, value in enumerate(values):
                    row[n] += value
            for mkey, tokens in minutes_.items():
                self.minutes[mkey] = self.minutes.get(mkey, 0) + tokens
            raise

    async def run(self, store: Store, every: float) -> None:
        """Flush every ``every`` seconds until cancelled."""
        while True:
            await asyncio.sleep(every)
            try:
                await self.flush(store)
            except Exception as exc:  # kept for the next flush; the store may be back
                self.log.warning("usage: could not write to the store: %s", exc)


async def _write(
    conn: Any,
    store: Store,
    rows: dict[tuple[str, str, str], list[int]],
    minutes_: dict[tuple[str, str, int], int],
) -> None:
    for (principal, model, day), values in sorted(rows.items()):
        counts = dict(zip(_FIELDS, values, strict=True))
        await conn.execute(
            store.dialect.insert(usage)
            .values(principal=principal, model=model, day=day, **counts)
            .on_conflict_do_update(
                index_elements=["principal", "model", "day"],
                set_={k: getattr(usage.c, k) + v for k, v in counts.items()},
            )
        )
    for (principal, model, minute), tokens in sorted(minutes_.items()):
        await _add_minute(conn, store, principal, model, minute, tokens=tokens)


async def report(
    store: Store, principal: str | None, since: str | None, until: str | None
) -> list[dict[str, Any]]:
    """Usage rows, newest day first: one principal's, or everyone's (``None``)."""
    rules = []
    if principal is not None:
        rules.append(usage.c.principal == principal)
    if since is not None:
        rules.append(usage.c.day >= since)
    if until is not None:
        rules.append(usage.c.day <= until)
    query = (
        sa.select(usage)
        .where(*rules)
        .order_by(usage.c.day.desc(), usage.c.principal, usage.c.model)
        .limit(10_000)
    )
    async with store.read() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return [
        {
            "principal": r["principal"],
            "model": r["model"],
            "day": r["day"],
            "requests": int(r["requests"]),
            "input_tokens": int(r["input_tokens"]),
            "output_tokens": int(r["output_tokens"]),
            "total_tokens": int(r["input_tokens"]) + int(r["output_tokens"]),
            "estimated_requests": int(r["estimated_requests"]),
            "errors": int(r["errors"]),
        }
        for r in rows
    ]
