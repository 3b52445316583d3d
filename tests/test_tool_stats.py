"""Tool call statistics read while a batch is being written count that batch once."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from host.api import ToolCall
from host.storage import Store, sqlite_url
from plugins.tools.stats import MIGRATIONS, StatsRecorder


async def test_totals_read_during_a_flush_include_the_batch_being_written(tmp_path: Path) -> None:
    store = Store(sqlite_url(tmp_path))
    await store.open(MIGRATIONS)
    recorder = StatsRecorder(store, flush_seconds=3600)
    try:
        recorder.record(ToolCall("t.add", {}, 1, 2.0, False, "tool_failed", "boom"))
        blocker = sqlite3.connect(tmp_path / "gateway.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # the flush's write waits behind this
        flush = asyncio.create_task(recorder.flush())
        for _ in range(500):  # until the flush has taken the batch out of pending
            if not recorder.pending:
                break
            await asyncio.sleep(0.01)
        assert not recorder.pending and not flush.done()
        reading = asyncio.create_task(recorder.totals({"t.add"}))
        # Give the read its chance to run before the write lands (the bug: it did, and
        # found the batch neither pending nor stored).
        await asyncio.wait({reading}, timeout=0.2)
        blocker.execute("COMMIT")
        blocker.close()
        await flush
        totals = await reading
        assert (totals["t.add"].calls, totals["t.add"].errors) == (1, 1)
        assert (await recorder.totals({"t.add"}))["t.add"].calls == 1
    finally:
        await store.close()
