"""The audit log's hash chain: ``/gateway/audit/verify`` and ``gateway audit verify``
find a record altered, relinked or removed (in the middle, the newest, the oldest), and
retention by count and by age removes the oldest records, leaves a record of its own
and keeps the chain verifiable. Tampering is done by direct SQL, behind the store's back.
Both stores."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import pytest

from host.api import context, now_ms, service
from plugins.audit.chain import from_row, record_hash
from plugins.audit.contract import AuditLog
from plugins.audit.tables import GENESIS, head, records
from tests.audit_helpers import audit_rows, db_execute, verify
from tests.conftest import ADMIN, gateway_cli, running_app, write_config

pytestmark = pytest.mark.usefixtures("store_url")
MANUAL = {"enabled": False}  # no background prune: the tests prune when they mean to


async def rehash(store: Any) -> None:
    """Recompute every record's links and hashes, and the head (after a test edits rows
    to stand for records written long ago)."""
    async with store.write() as conn:
        prev = GENESIS
        for row in await conn.execute(records.select().order_by(records.c.seq)):
            fixed = replace(from_row(row), prev_hash=prev)
            prev = record_hash(fixed)
            await conn.execute(
                records.update()
                .where(records.c.seq == fixed.seq)
                .values(prev_hash=fixed.prev_hash, hash=prev)
            )
        await conn.execute(head.update().values(hash=prev))


async def fill(app: Any, n: int) -> None:
    log = service(AuditLog, app=app)
    for i in range(n):
        await log.record(f"test.step{i % 3}", target=f"t-{i}", actor="token:filler")


async def test_an_untouched_chain_verifies(make_settings):
    async with running_app(make_settings()) as (app, client):
        assert (await verify(client)) == {
            "ok": True,
            "records": 0,
            "first_seq": None,
            "last_seq": None,
            "head_seq": 0,
            "head_hash": "0" * 64,
            "broken": None,
        }
        await fill(app, 5)
        report = await verify(client)
    assert report["ok"] and report["broken"] is None
    assert (report["records"], report["first_seq"], report["last_seq"]) == (5, 1, 5)


@pytest.mark.parametrize(
    ("tamper", "seq", "problem"),
    [
        ("UPDATE audit_records SET actor = 'token:someone-else' WHERE seq = 3", 3, "altered"),
        ("UPDATE audit_records SET detail = '{\"x\": 1}' WHERE seq = 2", 2, "altered"),
        ("DELETE FROM audit_records WHERE seq = 3", 3, "missing"),
        ("DELETE FROM audit_records WHERE seq = 5", 5, "missing"),
        ("DELETE FROM audit_records WHERE seq <= 2", 3, "unanchored"),
        ("UPDATE audit_records SET prev_hash = hash WHERE seq = 4", 4, "altered"),
    ],
    ids=["field", "detail", "middle-row", "newest-row", "oldest-rows", "relinked"],
)
async def test_verify_reports_the_first_broken_link(make_settings, store_url, tamper, seq, problem):
    async with running_app(make_settings()) as (app, client):
        await fill(app, 5)
        assert (await verify(client))["ok"]
        await db_execute(store_url, tamper)
        report = await verify(client)
    assert report["ok"] is False
    assert report["broken"]["seq"] == seq, report
    assert report["broken"]["problem"] == problem, report
    assert str(seq) in report["broken"]["message"]


async def test_a_record_rehashed_after_an_edit_breaks_the_next_link(make_settings, store_url):
    async with running_app(make_settings()) as (app, client):
        await fill(app, 4)
        # A tamperer who rewrites record 2 and its hash (not knowing it is chained).
        await db_execute(store_url, "UPDATE audit_records SET hash = prev_hash WHERE seq = 2")
        await db_execute(
            store_url,
            "UPDATE audit_records SET prev_hash = (SELECT hash FROM audit_records WHERE seq = 1)"
            " WHERE seq = 2",
        )
        report = await verify(client)
    assert report["broken"]["seq"] == 2  # its hash no longer matches its content
    assert report["broken"]["problem"] == "altered"


def test_gateway_audit_verify_says_ok_then_names_the_broken_record(
    make_settings, store_url, tmp_path
):
    settings = make_settings()

    async def prepare() -> None:
        async with running_app(settings) as (app, _client):
            await fill(app, 4)

    asyncio.run(prepare())
    config: dict[str, Any] = {"state_dir": str(settings.state_dir)}
    if store_url.startswith("postgresql"):
        config["storage"] = {"url": store_url}
    path = write_config(tmp_path / "cli" / "gateway.toml", config)
    ok = gateway_cli("audit", "verify", "--config", str(path), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("OK: 4 records verified (seq 1 to 4)")
    exported = gateway_cli("audit", "export", "--config", str(path), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [r["seq"] for r in lines] == [1, 2, 3, 4]
    assert lines[1]["prev_hash"] == lines[0]["hash"]
    asyncio.run(db_execute(store_url, "UPDATE audit_records SET target = 'x' WHERE seq = 2"))
    broken = gateway_cli("audit", "verify", "--config", str(path), cwd=tmp_path)
    assert broken.returncode == 1
    assert "BROKEN at record 2 (altered)" in broken.stdout
    as_json = gateway_cli("audit", "verify", "--json", "--config", str(path), cwd=tmp_path)
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["broken"]["seq"] == 2


async def test_retention_by_count_leaves_a_record_and_the_chain_verifies(make_settings, store_url):
    settings = make_settings(retention=MANUAL, plugins={"audit": {"retention_max_count": 4}})
    async with running_app(settings) as (app, client):
        await fill(app, 10)
        retention = context(app).retention
        assert retention is not None
        dry = await retention.prune(dry_run=True)
        assert dry.removed["audit"] == {"records": 6}
        assert len(await audit_rows(store_url)) == 10  # a dry run removes nothing
        report = await retention.prune()
        assert report.removed["audit"] == {"records": 6}
        rows = await audit_rows(store_url)
        page = await client.get("/gateway/audit/log?source=retention", headers=ADMIN)
        checked = await verify(client)
        again = await retention.prune()  # nothing more to remove: no new record
        assert again.removed["audit"] == {"records": 1}  # the count now holds 5: one goes
        after = await verify(client)
    assert [r["seq"] for r in rows] == [7, 8, 9, 10, 11]
    prune_record = (await page.get_json())["records"][0]
    assert prune_record["action"] == "audit.prune"
    assert prune_record["seq"] == 11
    assert prune_record["detail"]["anchor_seq"] == 7
    assert prune_record["detail"]["removed"] == 6
    assert checked["ok"] and checked["first_seq"] == 7, checked
    assert after["ok"], after


async def test_retention_by_age_removes_old_records_and_keeps_the_chain(make_settings, store_url):
    settings = make_settings(retention=MANUAL, plugins={"audit": {"retention_max_age_days": 1}})
    async with running_app(settings) as (app, client):
        await fill(app, 3)
        await db_execute(store_url, "UPDATE audit_records SET ts_ms = 1000 WHERE seq <= 2")
        await rehash(context(app).store)  # as if records 1 and 2 had been written in 1970
        assert (await verify(client))["ok"]
        retention = context(app).retention
        assert retention is not None
        report = await retention.prune(now=now_ms())
        assert report.removed["audit"] == {"records": 2}
        rows_left = await audit_rows(store_url)
        checked = await verify(client)
    assert [(r["seq"], r["source"]) for r in rows_left] == [(3, "plugin"), (4, "retention")]
    assert checked["ok"], checked


async def test_retention_that_removes_everything_still_verifies(make_settings, store_url):
    settings = make_settings(retention=MANUAL, plugins={"audit": {"retention_max_age_days": 1}})
    async with running_app(settings) as (app, client):
        await fill(app, 3)
        retention = context(app).retention
        assert retention is not None
        report = await retention.prune(now=now_ms() + 3 * 86_400_000)
        assert report.removed["audit"] == {"records": 3}
        rows = await audit_rows(store_url)
        checked = await verify(client)
        await fill(app, 2)
        later = await verify(client)
    assert [(r["seq"], r["action"]) for r in rows] == [(4, "audit.prune")]
    assert checked["ok"], checked
    assert later["ok"] and later["records"] == 3, later
