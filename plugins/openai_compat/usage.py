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


_day_cache: tuple[int, str] = (-1, "")


def day_of(ts: float) -> str:
    """``YYYY-MM-DD`` (UTC) of ``ts``; the string of the current day is kept, as every
    budget check asks for it (strftime was a few microseconds a call)."""
    global _day_cache
    index = int(ts // 86400)
    if _day_cache[0] != index:
        _day_cache = (index, datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d"))
    return _day_cache[1]


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


@dataclass
class _Spent:
    """A principal's tokens as this process knows them: the store's sums when last read,
    plus what its calls here used since."""

    read_at: float  # time.monotonic()
    day: str
    day_tokens: int
    month_tokens: int
    minute: int
    minute_tokens: dict[str, int]  # by model
    since: int = 0  # tokens of calls here since the read (every model)
    since_minute: dict[str, int] | None = None


@dataclass
class _Lease:
    """Request slots of one (principal, model, minute) taken from the store's counter."""

    minute: int
    left: int = 0
    taken: int = 0  # leases this minute: each takes more slots


class Budgets:
    """Admission against budgets, shared through the store by every process.

    ``requests_per_minute``: slots are taken from the store's counter of the minute with
    one atomic increment (clamped at the limit), a few at a time for a busy principal
    (``_lease_size``), so the sum over every process never passes the limit and one
    process alone refuses at exactly the limit. Token budgets: the store's sums are read
    again (after this process's pending usage is written) at most every
    ``refresh_seconds``; between reads this process adds its own calls' tokens, so it
    counts itself exactly and other replicas within ``refresh_seconds``."""

    def __init__(self, store: Store, buffer: UsageBuffer, refresh_seconds: float) -> None:
        self.store = store
        self.buffer = buffer
        self.refresh_seconds = refresh_seconds
        self.spent: dict[str, _Spent] = {}
        self.leases: dict[tuple[str, str], _Lease] = {}
        self.lock = asyncio.Lock()
        self.slot_lock = asyncio.Lock()

    def used(self, principal: str, model: str, tokens: int) -> None:
        """A call here of ``principal`` (on the budget of ``model``) used ``tokens``."""
        found = self.spent.get(principal)
        if found is not None and tokens:
            found.since += tokens
            per_model = found.since_minute = found.since_minute or {}
            per_model[model] = per_model.get(model, 0) + tokens

    async def admit(self, principal: str, model: str, limits: Limits) -> None:
        """429 ``budget_exceeded`` when a budget is spent; else the call is counted."""
        now = time.time()
        minute = int(now // 60)
        if limits.tokens_per_day or limits.tokens_per_month or limits.tokens_per_minute:
            view = await self._view(principal, now, minute)
            reset = (minute + 1) * 60.0
            if limits.tokens_per_day and view.day_tokens + view.since >= limits.tokens_per_day:
                raise budget_exceeded("tokens_per_day", _next_day(now), now)
            month = view.month_tokens + view.since
            if limits.tokens_per_month and month >= limits.tokens_per_month:
                raise budget_exceeded("tokens_per_month", _next_month(now), now)
            in_minute = view.minute_tokens.get(model, 0) + (view.since_minute or {}).get(model, 0)
            if limits.tokens_per_minute and in_minute >= limits.tokens_per_minute:
                raise budget_exceeded("tokens_per_minute", reset, now)
        if limits.requests_per_minute:
            await self._take_slot(principal, model, minute, limits.requests_per_minute, now)

    def _fresh(self, principal: str, today: str, minute: int) -> _Spent | None:
        """The view to use without a read: read within ``refresh_seconds``, or (of this
        day and minute) while another call is reading the sums again: this process's
        own calls are in ``since`` either way, only other processes' come later."""
        view = self.spent.get(principal)
        if view is None or view.day != today or view.minute != minute:
            return None
        if time.monotonic() - view.read_at < self.refresh_seconds or self.lock.locked():
            return view
        return None

    async def _view(self, principal: str, now: float, minute: int) -> _Spent:
        today = day_of(now)
        view = self._fresh(principal, today, minute)
        if view is not None:
            return view
        async with self.lock:
            # The calls that queued here while another read the sums use that read: one
            # store transaction per refresh, not one per call waiting (under load every
            # call in flight found the view stale at once).
            view = self.spent.get(principal)
            if (
                view is not None
                and view.day == today
                and view.minute == minute
                and time.monotonic() - view.read_at < self.refresh_seconds
            ):
                return view
            # Written first, so the sums read next hold every call made here.
            async with self.store.write() as conn:
                await self.buffer.flush(self.store, conn)
                spent = usage.c.input_tokens + usage.c.output_tokens
                day_tokens = await _sum(conn, spent, principal, usage.c.day == today)
                month_tokens = await _sum(conn, spent, principal, usage.c.day >= today[:8] + "01")
                rows = await conn.execute(
                    sa.select(minutes.c.model, minutes.c.tokens).where(
                        minutes.c.principal == principal, minutes.c.minute == minute
                    )
                )
                per_model = {row.model: int(row.tokens) for row in rows}
            view = _Spent(time.monotonic(), today, day_tokens, month_tokens, minute, per_model)
            self.spent[principal] = view
            return view

    async def _take_slot(
        self, principal: str, model: str, minute: int, limit: int, now: float
    ) -> None:
        lease = self.leases.get((principal, model))
        if lease is None or lease.minute != minute:
            lease = self.leases[(principal, model)] = _Lease(minute)
        if lease.left <= 0:
            async with self.slot_lock:
                # (another call may have taken a lease while this one waited)
                if lease.left <= 0:
                    await self._lease(lease, principal, model, minute, limit)
                if lease.left <= 0:
                    raise budget_exceeded("requests_per_minute", (minute + 1) * 60.0, now)
        lease.left -= 1

    async def _lease(
        self, lease: _Lease, principal: str, model: str, minute: int, limit: int
    ) -> None:
        want = _lease_size(limit, lease.taken)
        async with self.store.write() as conn:
            total = await _add_minute(conn, self.store, principal, model, minute, requests=want)
            granted = want - max(0, total - limit)
            if granted < want:  # past the limit: the excess goes back
                await _add_minute(
                    conn, self.store, principal, model, minute, requests=granted - want
                )
            # Old minutes go as new ones come: a few rows per (principal, model).
            await conn.execute(
                minutes.delete().where(
                    minutes.c.principal == principal,
                    minutes.c.model == model,
                    minutes.c.minute < minute - 2,
                )
            )
        lease.taken += 1
        lease.left += max(0, granted)


def _lease_size(limit: int, taken: int) -> int:
    """Slots to take at once: one at first, doubling with each lease in the minute, at
    most 1024 and a sixteenth of the limit (a small budget is taken one at a time, so
    replicas share it evenly). A lease is a store write: at 64 slots it cost a busy
    principal ~40 µs of CPU per call (bench/README.md)."""
    return max(1, min(1024, limit // 16, 2**taken))


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
