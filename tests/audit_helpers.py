"""Helpers of the audit tests: reading the audit table independently of the store,
tampering with it by direct SQL, and waiting for a run's status."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.conftest import ADMIN, db_rows

COLUMNS = "seq, source, action, actor, target, outcome, status, reason_code, request_id, route"


async def audit_rows(url: str, where: str = "1=1") -> list[dict[str, Any]]:
    """The audit records matching ``where`` (SQL), oldest first, read with ``db_rows``."""
    names = [c.strip() for c in COLUMNS.split(",")]
    rows = await db_rows(url, f"SELECT {COLUMNS} FROM audit_records WHERE {where} ORDER BY seq")
    return [dict(zip(names, row, strict=True)) for row in rows]


async def db_execute(url: str, sql: str) -> None:
    """Change the database behind the store's back (and commit): a tamperer's view."""
    if url.startswith("sqlite"):
        import sqlite3

        def write() -> None:
            # BEGIN IMMEDIATE: wait for the write lock first, rather than fail at once when
            # a read turns into a write after another writer's commit.
            conn = sqlite3.connect(sa.engine.make_url(url).database or "", timeout=30)
            conn.isolation_level = None
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(sql)
                conn.execute("COMMIT")
            finally:
                conn.close()

        # In a thread: the gateway under test shares this event loop, and a write of its
        # own in flight (the start-up prune) needs the loop to finish and free the lock.
        await asyncio.to_thread(write)
        return
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(sql)
    finally:
        await engine.dispose()


async def until(check: Any, what: str, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def wait_status(client: Any, run_id: str, status: str) -> None:
    async def reached() -> bool:
        record = await (await client.get(f"/runs/{run_id}", headers=ADMIN)).get_json()
        return bool(record["status"] == status)

    await until(reached, f"run {run_id} {status}")


async def verify(client: Any) -> dict[str, Any]:
    response = await client.get("/gateway/audit/verify", headers=ADMIN)
    assert response.status_code == 200
    report: dict[str, Any] = await response.get_json()
    return report
