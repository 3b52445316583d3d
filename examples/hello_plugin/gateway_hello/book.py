"""Guest-book queries: SQLAlchemy Core statements run through the gateway's store."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from gateway_hello.tables import guest_book
from host.api import Store


async def sign(store: Store, name: str, signed_by: str) -> dict[str, Any]:
    """Add an entry; returns it as stored."""
    signed_ms = int(time.time() * 1000)
    async with store.write() as conn:
        result = await conn.execute(
            guest_book.insert()
            .values(name=name, signed_by=signed_by, signed_ms=signed_ms)
            .returning(guest_book.c.id)
        )
        entry_id = int(result.scalar_one())
    return {"id": entry_id, "name": name, "signed_by": signed_by, "signed_ms": signed_ms}


async def entries(store: Store, limit: int = 100) -> list[dict[str, Any]]:
    """The newest ``limit`` entries, oldest first."""
    t = guest_book
    async with store.read() as conn:
        rows = await conn.execute(sa.select(t).order_by(t.c.id.desc()).limit(limit))
        found = [dict(row._mapping) for row in rows]
    return list(reversed(found))


async def count(store: Store) -> int:
    async with store.read() as conn:
        total = await conn.execute(sa.select(sa.func.count()).select_from(guest_book))
        return int(total.scalar_one())
