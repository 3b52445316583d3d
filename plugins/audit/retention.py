"""Retention of the audit log (``gateway_prune``): by age and by count
(``[plugins.audit] retention_max_age_days`` / ``retention_max_count``).

The oldest records go, never one in the middle: the prune picks the first record to
keep (seq ``A``), appends a ``retention`` record that names ``A`` and ``A``'s
``prev_hash`` (the anchor: the hash of the last record it removes), then deletes the
records before ``A`` oldest first, in batches. ``verify`` accepts a chain that starts at
``A`` because a record of the chain vouches for it; a chain that starts anywhere else
has lost records.
"""

from __future__ import annotations

import sqlalchemy as sa

from host.api import Settings, Store
from plugins.audit.chain import append, entry
from plugins.audit.config import configured
from plugins.audit.tables import head, records

ACTION = "audit.prune"


async def first_kept(store: Store, settings: Settings, now_ms: int) -> tuple[int, int, int]:
    """``(first seq to keep, first seq now, head seq)``."""
    config = configured(settings)
    t = records
    async with store.read() as conn:
        top = int((await conn.execute(sa.select(head.c.seq))).scalar_one())
        first = (await conn.execute(sa.select(sa.func.min(t.c.seq)))).scalar()
        keep = 0
        if config.retention_max_age_days > 0:
            cutoff = now_ms - int(config.retention_max_age_days * 86_400_000)
            young = await conn.execute(sa.select(sa.func.min(t.c.seq)).where(t.c.ts_ms >= cutoff))
            oldest_young = young.scalar()
            keep = max(keep, int(oldest_young) if oldest_young is not None else top + 1)
        if config.retention_max_count > 0:
            keep = max(keep, top - config.retention_max_count + 1)
    return keep, int(first) if first is not None else top + 1, top


async def prune(store: Store, settings: Settings, now_ms: int, dry_run: bool) -> dict[str, int]:
    keep, first, _top = await first_kept(store, settings, now_ms)
    if keep <= first:
        return {"records": 0}
    gone = records.c.seq < keep
    async with store.read() as conn:
        count = int(
            (
                await conn.execute(sa.select(sa.func.count()).select_from(records).where(gone))
            ).scalar_one()
        )
        anchor = (
            await conn.execute(sa.select(records.c.prev_hash).where(records.c.seq == keep))
        ).scalar()
        if anchor is None:  # everything goes: the next record (this prune's) links to the head
            anchor = (await conn.execute(sa.select(head.c.hash))).scalar_one()
    if dry_run or count == 0:
        return {"records": count}
    config = configured(settings)
    await append(
        store,
        [
            entry(
                "retention",
                ACTION,
                actor="retention",
                target=f"{first}-{keep - 1}",
                detail={
                    "anchor_seq": keep,
                    "anchor_prev_hash": anchor,
                    "removed": count,
                    "first_removed_seq": first,
                    "last_removed_seq": keep - 1,
                    "max_age_days": config.retention_max_age_days,
                    "max_count": config.retention_max_count,
                },
            )
        ],
    )
    batch = settings.retention.batch_size
    removed = 0
    while True:
        oldest = sa.select(records.c.seq).where(gone).order_by(records.c.seq).limit(batch)
        async with store.write() as conn:
            chosen = [int(s) for s in (await conn.execute(oldest)).scalars()]
            if chosen:
                await conn.execute(records.delete().where(records.c.seq.in_(chosen)))
        removed += len(chosen)
        if len(chosen) < batch:
            return {"records": removed}
