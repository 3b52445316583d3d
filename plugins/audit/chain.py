"""The hash chain: appending records and verifying them.

A record's hash is SHA-256 over the canonical JSON of its content and the previous
record's hash. Appends from every worker and replica go through :func:`append`: one
write transaction that takes the ``audit.append`` named lock (``Dialect.serialize``; on
SQLite the write lock already serialises), reads the head, inserts the records with the
next seqs and moves the head. So however many processes write, the chain has one order
and no fork.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa

from host.api import Store, now_ms
from plugins.audit.contract import AuditRecord
from plugins.audit.tables import GENESIS, HEAD_ID, head, records

LOCK = "audit.append"
VERIFY_BATCH = 1000
# Column widths (tables.py): values are cut to fit before they are hashed.
_WIDTHS = {
    "source": 32,
    "action": 200,
    "actor": 300,
    "target": 300,
    "outcome": 32,
    "reason_code": 200,
    "request_id": 128,
    "client": 100,
    "method": 16,
    "route": 300,
}
_HASHED = (
    "seq",
    "ts_ms",
    "source",
    "action",
    "actor",
    "target",
    "outcome",
    "status",
    "reason_code",
    "request_id",
    "client",
    "method",
    "route",
    "detail",
    "prev_hash",
)


def entry(
    source: str,
    action: str,
    *,
    outcome: str = "success",
    actor: str | None = None,
    target: str | None = None,
    status: int | None = None,
    reason_code: str | None = None,
    request_id: str | None = None,
    client: str | None = None,
    method: str | None = None,
    route: str | None = None,
    detail: dict[str, Any] | None = None,
    ts_ms: int | None = None,
) -> AuditRecord:
    """A record not yet in the chain (``seq`` 0, no hashes); values cut to their
    column's width, ``detail`` checked to be a JSON object."""
    if not isinstance(action, str) or not action.strip():
        raise ValueError("an audit record needs an action (a non-empty string)")
    body = dict(detail or {})
    try:
        body = json.loads(json.dumps(body, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"audit detail must be a JSON object: {exc}") from None
    values: dict[str, Any] = {
        "source": source,
        "action": action.strip(),
        "actor": actor,
        "target": target,
        "outcome": outcome or "success",
        "reason_code": reason_code,
        "request_id": request_id,
        "client": client,
        "method": method,
        "route": route,
    }
    for key, width in _WIDTHS.items():
        value = values[key]
        if value is not None:
            # PostgreSQL text holds no NUL (a path may carry one, %00): never lose the
            # record over it.
            values[key] = str(value).replace("\x00", "\ufffd")[:width]
    return AuditRecord(
        seq=0,
        ts_ms=ts_ms if ts_ms is not None else now_ms(),
        status=status,
        detail=body,
        **values,
    )


def record_hash(record: AuditRecord) -> str:
    content = {name: getattr(record, name) for name in _HASHED}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _row(record: AuditRecord) -> dict[str, Any]:
    return record.as_dict()


def from_row(row: Any) -> AuditRecord:
    m = row._mapping
    return AuditRecord(**{name: m[name] for name in AuditRecord.__dataclass_fields__})


async def append(store: Store, entries: Sequence[AuditRecord]) -> list[AuditRecord]:
    """Add ``entries`` to the chain in one transaction; the stored records."""
    if not entries:
        return []
    async with store.write() as conn:
        await store.dialect.serialize(conn, LOCK)
        top = (
            await conn.execute(
                store.dialect.lock(sa.select(head.c.seq, head.c.hash).where(head.c.id == HEAD_ID))
            )
        ).one()
        seq, prev = int(top.seq), str(top.hash)
        stored: list[AuditRecord] = []
        for item in entries:
            seq += 1
            linked = replace(item, seq=seq, prev_hash=prev)
            linked = replace(linked, hash=record_hash(linked))
            stored.append(linked)
            prev = linked.hash
        await conn.execute(records.insert(), [_row(r) for r in stored])
        moved = head.update().where(head.c.id == HEAD_ID)
        await conn.execute(moved.values(seq=seq, hash=prev, updated_ms=now_ms()))
    return stored


# -- verifying ----------------------------------------------------------------------------


@dataclass
class Broken:
    seq: int
    problem: str  # altered | relinked | missing | unanchored | head_mismatch
    message: str


@dataclass
class Verification:
    ok: bool = True
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    head_seq: int = 0
    head_hash: str = GENESIS
    broken: Broken | None = None
    anchors: list[dict[str, Any]] = field(default_factory=list)

    def fail(self, seq: int, problem: str, message: str) -> Verification:
        self.ok = False
        self.broken = Broken(seq, problem, message)
        return self

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "records": self.records,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "broken": None if self.broken is None else self.broken.__dict__,
        }


def anchor_of(record: AuditRecord) -> tuple[int, str] | None:
    """What a retention record vouches for: the seq of the first record it kept and
    that record's ``prev_hash`` (the hash of the last one it removed)."""
    if record.source != "retention":
        return None
    seq, prev = record.detail.get("anchor_seq"), record.detail.get("anchor_prev_hash")
    if isinstance(seq, int) and isinstance(prev, str):
        return seq, prev
    return None


async def verify(store: Store) -> Verification:
    """Walk the whole chain, oldest first, and report the first broken link. Records
    appended meanwhile are past the head it read first and not walked; a prune that
    removes records under the walk makes it walk again (once)."""
    report = await _verify(store)
    if not report.ok and report.first_seq != await _first_seq(store):
        report = await _verify(store)
    return report


async def _first_seq(store: Store) -> int | None:
    async with store.read() as conn:
        value = (await conn.execute(sa.select(sa.func.min(records.c.seq)))).scalar()
    return None if value is None else int(value)


async def _verify(store: Store) -> Verification:
    report = Verification()
    async with store.read() as conn:
        top = (await conn.execute(sa.select(head.c.seq, head.c.hash))).first()
        anchor_rows = (
            await conn.execute(sa.select(records).where(records.c.source == "retention"))
        ).all()
    if top is None:
        return report.fail(0, "head_mismatch", "the audit head row is missing")
    report.head_seq, report.head_hash = int(top.seq), str(top.hash)
    anchors = [a for a in (anchor_of(from_row(r)) for r in anchor_rows) if a is not None]
    previous: AuditRecord | None = None
    after = 0
    while True:
        async with store.read() as conn:
            rows = await conn.execute(
                sa.select(records)
                .where(records.c.seq > after, records.c.seq <= report.head_seq)
                .order_by(records.c.seq)
                .limit(VERIFY_BATCH)
            )
            batch = [from_row(r) for r in rows]
        for record in batch:
            problem = _check(record, previous, anchors, report)
            if problem is not None:
                return problem
            report.records += 1
            report.last_seq = record.seq
            previous = record
        if len(batch) < VERIFY_BATCH:
            break
        after = batch[-1].seq
    last_seq = previous.seq if previous is not None else 0
    if last_seq < report.head_seq:
        first = last_seq + 1
        span = (
            f"record {first} is"
            if first == report.head_seq
            else (f"records {first} to {report.head_seq} are")
        )
        return report.fail(
            first, "missing", f"{span} missing: the log's head is record {report.head_seq}"
        )
    if previous is not None and report.head_hash != previous.hash:
        return report.fail(
            last_seq,
            "head_mismatch",
            f"the log's head does not match its last record {last_seq}",
        )
    return report


def _check(
    record: AuditRecord,
    previous: AuditRecord | None,
    anchors: list[tuple[int, str]],
    report: Verification,
) -> Verification | None:
    if record_hash(record) != record.hash:
        return report.fail(
            record.seq, "altered", f"record {record.seq} was altered: its hash does not match"
        )
    if previous is None:
        report.first_seq = record.seq
        if record.seq == 1:
            if record.prev_hash != GENESIS:
                return report.fail(1, "relinked", "record 1 does not start the chain")
            return None
        vouched = [prev for seq, prev in anchors if seq == record.seq]
        if vouched and record.prev_hash not in vouched:
            return report.fail(
                record.seq,
                "relinked",
                f"record {record.seq} does not link to what retention removed before it",
            )
        # A prune still under way (or interrupted) has removed part of what it announced.
        if not vouched and not any(seq > record.seq for seq, _ in anchors):
            return report.fail(
                record.seq,
                "unanchored",
                f"records before {record.seq} are missing and no retention record accounts "
                "for their removal",
            )
        return None
    if record.seq != previous.seq + 1:
        return report.fail(
            previous.seq + 1,
            "missing",
            f"record {previous.seq + 1} is missing"
            if record.seq == previous.seq + 2
            else f"records {previous.seq + 1} to {record.seq - 1} are missing",
        )
    if record.prev_hash != previous.hash:
        return report.fail(
            record.seq,
            "relinked",
            f"record {record.seq} does not link to record {previous.seq} (altered or replaced)",
        )
    return None
