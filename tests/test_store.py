"""The store, on a real SQLite file and on a real PostgreSQL database (each test runs on
both, see ``store_url`` in conftest): migrations, event seqs, once-only keys, leases,
auth sessions, and several processes sharing one store; SQLite's WAL; PostgreSQL's
notifications of new events."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from host.storage import Migration, Store, StoreError, sqlite_url
from host.storage.migrations import HOST_MIGRATIONS
from tests.conftest import db_rows

# The host's own migrations, whatever their number: (namespace, version) pairs.
HOST = [(m.namespace, m.version) for m in HOST_MIGRATIONS]
HOST_VERSION = HOST[-1][1]

metadata = sa.MetaData()
notes = sa.Table(
    "demo_notes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("text", sa.String(100), nullable=False),
)
tags = sa.Table(
    "demo_tags",
    metadata,
    sa.Column("name", sa.String(50), primary_key=True),
)
DEMO_V1 = Migration.create_tables("demo", 1, "notes", [notes])
DEMO_V2 = Migration.create_tables("demo", 2, "tags", [tags])


def db_path(state_dir: Path) -> Path:
    return state_dir / "gateway.db"


def sqlite_rows(state_dir: Path, sql: str) -> list[tuple[Any, ...]]:
    """Read the file with the plain sqlite3 module, independently of the store."""
    with sqlite3.connect(db_path(state_dir)) as conn:
        return conn.execute(sql).fetchall()


async def table_names(url: str) -> set[str]:
    if url.startswith("sqlite"):
        sql = "SELECT name FROM sqlite_master WHERE type='table'"
    else:
        sql = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    return {str(r[0]) for r in await db_rows(url, sql)}


def json_field(url: str, column: str, key: str) -> str:
    """SQL for the text of ``column``'s JSON ``key``, in the store's dialect."""
    if url.startswith("sqlite"):
        return f"json_extract({column}, '$.{key}')"
    return f"{column}->>'{key}'"


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = Store(store_url)
    await s.open()
    yield s
    await s.close()


async def wait_for(predicate, timeout: float = 5) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


# -- migrations ------------------------------------------------------------------------------


@pytest.mark.empty_store
async def test_migrations_are_versioned_and_applied_once(store_url):
    first = Store(store_url)
    await first.open([DEMO_V1])
    assert [(ns, v) for ns, v, _ in first.applied] == [*HOST, ("demo", 1)]
    assert await first.schema_versions() == {"host": HOST_VERSION, "demo": 1}
    await first.close()

    second = Store(store_url)
    await second.open([DEMO_V1])
    assert second.applied == []
    await second.close()

    third = Store(store_url)
    await third.open([DEMO_V1, DEMO_V2])
    assert [(ns, v) for ns, v, _ in third.applied] == [("demo", 2)]
    assert await third.schema_versions() == {"host": HOST_VERSION, "demo": 2}
    await third.close()

    sql = "SELECT namespace, version FROM schema_migrations ORDER BY 1, 2"
    rows = await db_rows(store_url, sql)
    assert rows == [("demo", 1), ("demo", 2), *HOST]
    assert {"demo_notes", "demo_tags", "gateway_events"} <= await table_names(store_url)


@pytest.mark.empty_store
async def test_a_failing_migration_rolls_back_entirely(store_url):
    def broken(conn: sa.Connection) -> None:
        notes.create(conn)
        conn.execute(notes.insert().values(text="half done"))
        raise RuntimeError("boom in the middle")

    store = Store(store_url)
    with pytest.raises(RuntimeError, match="boom"):
        await store.open([Migration("demo", 1, "broken", broken)])
    # Nothing of it remains: no table, no version row (and the host's own first migration,
    # run in the same transaction, is not recorded either).
    tables = await table_names(store_url)
    assert "demo_notes" not in tables
    if "schema_migrations" in tables:
        assert await db_rows(store_url, "SELECT * FROM schema_migrations") == []
    # The store did not stay half-open: opening again with a fixed migration works.
    await store.open([DEMO_V1])
    assert await store.schema_versions() == {"host": HOST_VERSION, "demo": 1}
    async with store.write() as conn:
        await conn.execute(notes.insert().values(text="works"))
    async with store.read() as conn:
        assert (await conn.execute(sa.select(notes.c.text))).scalars().all() == ["works"]
    await store.close()


async def test_a_migration_defined_twice_is_refused(store_url):
    store = Store(store_url)
    with pytest.raises(StoreError, match="demo#1 is defined twice"):
        await store.open([DEMO_V1, Migration.create_tables("demo", 1, "again", [tags])])
    await store.close()


async def test_methods_refuse_to_run_on_a_store_that_is_not_open(store_url):
    store = Store(store_url)
    with pytest.raises(StoreError, match="not open"):
        await store.last_seq("x")


# -- SQLite settings -------------------------------------------------------------------------


async def test_the_sqlite_database_is_in_wal_mode(state_dir):
    store = Store(sqlite_url(state_dir))
    await store.open()
    assert sqlite_rows(state_dir, "PRAGMA journal_mode") == [("wal",)]
    async with store.read() as conn:
        assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
        assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 10_000
        assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
    await store.close()


# -- events ----------------------------------------------------------------------------------


async def test_event_seqs_are_contiguous_per_stream(store):
    for i in range(7):
        await store.append_event("a", "tick", {"i": i})
        if i % 2:
            await store.append_event("b", "tock")
    a = await store.events_after("a")
    b = await store.events_after("b")
    assert [e.seq for e in a] == list(range(1, 8))
    assert [e.data["i"] for e in a] == list(range(7))
    assert [e.seq for e in b] == [1, 2, 3]
    assert b[0].data == {} and b[0].type == "tock" and b[0].stream == "b"
    assert await store.last_seq("a") == 7
    assert await store.last_seqs(["a", "b", "none"]) == {"a": 7, "b": 3, "none": 0}
    assert [e.seq for e in await store.events_after("a", 4, 2)] == [5, 6]
    assert await store.events_after("a", 7) == []


async def test_concurrent_appends_in_one_process_get_distinct_contiguous_seqs(store):
    await asyncio.gather(*(store.append_event("s", "e", {"i": i}) for i in range(40)))
    events = await store.events_after("s")
    assert [e.seq for e in events] == list(range(1, 41))
    assert sorted(e.data["i"] for e in events) == list(range(40))


async def test_an_event_written_in_a_rolled_back_transaction_leaves_no_trace(store):
    await store.append_event("s", "kept")
    with pytest.raises(RuntimeError):
        async with store.write() as conn:
            await store.append_event("s", "lost", conn=conn)
            await store.set_value("k", 1, conn)
            raise RuntimeError("state change failed")
    assert [e.type for e in await store.events_after("s")] == ["kept"]
    assert await store.get_value("k") is None
    event = await store.append_event("s", "next")
    assert event.seq == 2


# -- key/value -------------------------------------------------------------------------------


async def test_values_round_trip_and_compare_and_set_checks_the_current_value(store):
    assert await store.get_value("cfg", "dflt") == "dflt"
    await store.set_value("cfg", {"a": [1, 2]})
    assert await store.get_value("cfg") == {"a": [1, 2]}
    assert await store.compare_and_set("cfg", {"a": [1, 2]}, {"a": 3}) is True
    assert await store.compare_and_set("cfg", {"a": [1, 2]}, {"a": 4}) is False
    assert await store.get_value("cfg") == {"a": 3}
    assert await store.compare_and_set("fresh", None, 1) is True
    assert await store.get_value("fresh") == 1


# -- once-only keys --------------------------------------------------------------------------


async def test_once_is_true_exactly_once_per_scope_and_key(store):
    assert await store.once("delivery", "k1", {"to": "a"}) is True
    assert await store.once("delivery", "k1", {"to": "b"}) is False
    assert await store.once("other", "k1") is True
    assert await store.once_value("delivery", "k1") == {"to": "a"}
    assert await store.once_value("delivery", "missing") is None


async def test_a_schedule_tick_fires_once(store):
    assert await store.fire_tick("nightly", 1_000) is True
    assert await store.fire_tick("nightly", 1_000) is False
    assert await store.fire_tick("nightly", 2_000) is True
    assert await store.fire_tick("hourly", 1_000) is True


async def test_concurrent_once_calls_in_one_process_have_one_winner(store):
    results = await asyncio.gather(*(store.once("race", "same") for _ in range(10)))
    assert results.count(True) == 1


# -- leases ----------------------------------------------------------------------------------


async def test_another_owner_cannot_take_an_unexpired_lease_but_can_after_expiry(store):
    assert await store.acquire_lease("run:1", "worker-a", ttl_ms=60_000) is True
    assert await store.acquire_lease("run:1", "worker-b", ttl_ms=60_000) is False
    assert await store.lease_holder("run:1") == "worker-a"
    assert await store.heartbeat("run:1", "worker-a", 60_000) is True  # renewal by the holder
    await store.release_lease("run:1", "worker-b")  # not the holder: no effect
    assert await store.lease_holder("run:1") == "worker-a"

    assert await store.acquire_lease("run:2", "worker-a", ttl_ms=1) is True

    async def lapsed() -> bool:
        return await store.lease_holder("run:2") is None

    await wait_for(lapsed)
    assert await store.acquire_lease("run:2", "worker-b", ttl_ms=60_000) is True
    assert await store.lease_holder("run:2") == "worker-b"
    assert await store.acquire_lease("run:2", "worker-a", ttl_ms=60_000) is False


async def test_a_released_lease_can_be_taken_by_another_owner(store):
    assert await store.acquire_lease("job", "a", 60_000) is True
    await store.release_lease("job", "a")
    assert await store.lease_holder("job") is None
    assert await store.acquire_lease("job", "b", 60_000) is True


async def test_sweep_removes_only_lapsed_leases_under_the_prefix(store):
    await store.acquire_lease("run:live", "a", 60_000)
    await store.acquire_lease("run:dead1", "a", 1)
    await store.acquire_lease("run:dead2", "b", 1)
    await store.acquire_lease("other:dead", "a", 1)

    async def all_lapsed() -> bool:
        return all(
            [await store.lease_holder(n) is None for n in ("run:dead1", "run:dead2", "other:dead")]
        )

    await wait_for(all_lapsed)
    assert sorted(await store.sweep_stale_leases("run:")) == ["run:dead1", "run:dead2"]
    assert await store.sweep_stale_leases("run:") == []
    assert await store.lease_holder("run:live") == "a"
    leases = {r[0] for r in await _lease_names(store)}
    assert leases == {"run:live", "other:dead"}


async def _lease_names(store: Store) -> list[tuple[str]]:
    async with store.read() as conn:
        return [tuple(r) for r in await conn.exec_driver_sql("SELECT name FROM gateway_leases")]


# -- auth sessions ---------------------------------------------------------------------------


async def test_auth_sessions_persist_revoke_count_and_purge(store_url):
    store = Store(store_url)
    await store.open()
    one = await store.create_auth_session("h1", "admin", 60_000, "cli")
    await store.create_auth_session("h2", "admin", 60_000, None)
    await store.create_auth_session("h3", "ops", 1, None)
    await store.close()

    # A restart does not log anyone out.
    store = Store(store_url)
    await store.open()
    try:
        got = await store.get_auth_session("h1")
        assert got == one
        assert got is not None and got.active(got.created_ms + 1)
        assert await store.get_auth_session("nope") is None

        async def h3_expired() -> bool:
            s = await store.get_auth_session("h3")
            return s is not None and not s.active(_now())

        await wait_for(h3_expired)
        assert await store.auth_session_counts() == {
            "active_sessions": 2,
            "total_sessions_issued": 3,
        }
        assert await store.revoke_auth_sessions("h1") == 1
        assert await store.revoke_auth_sessions("h1") == 0
        revoked = await store.get_auth_session("h1")
        assert revoked is not None and revoked.revoked_ms is not None
        assert not revoked.active(revoked.created_ms + 1)
        assert await store.revoke_auth_sessions(None) == 2  # h2 and h3 (expired, not revoked)
        counts = await store.auth_session_counts()
        assert counts == {"active_sessions": 0, "total_sessions_issued": 3}
        assert await store.purge_expired_auth_sessions(_now() + 120_000) == 3
        assert await store.get_auth_session("h2") is None
    finally:
        await store.close()


def _now() -> int:
    from host.storage import now_ms

    return now_ms()


# -- several processes on one store ---------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import asyncio, json, os, sys, time
    from pathlib import Path
    from host.storage import Store

    url, name, go_file, out_file = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]

    async def main():
        store = Store(url, synchronous="normal")
        while not os.path.exists(go_file):
            time.sleep(0.005)
        # Every process opens (and so migrates) at the same moment.
        await store.open()
        seqs, once_won, ticks_won, leases_won, increments = [], [], [], [], 0
        for i in range(200):
            event = await store.append_event("shared", "wrote", {"by": name, "i": i})
            seqs.append(event.seq)
            if i % 2 == 0:
                k = i // 2
                if await store.once("race", f"key-{k}"):
                    once_won.append(k)
                if await store.fire_tick("sched", 1_000 * k):
                    ticks_won.append(k)
                if await store.acquire_lease(f"lease-{k}", name, 600_000):
                    leases_won.append(k)
            # A read-modify-write: a lost update would show as a final count below the
            # number of successful increments.
            current = await store.get_value("counter")
            if await store.compare_and_set("counter", current, (current or 0) + 1):
                increments += 1
        applied = [f"{ns}#{v}" for ns, v, _ in store.applied]
        await store.close()
        Path(out_file).write_text(json.dumps({
            "seqs": seqs, "once": once_won, "ticks": ticks_won, "leases": leases_won,
            "increments": increments, "applied": applied,
        }))

    asyncio.run(main())
    """
)


@pytest.mark.empty_store
async def test_processes_sharing_a_store_never_duplicate_seqs_keys_or_updates(tmp_path, store_url):
    names = ["p0", "p1", "p2"]
    go = tmp_path / "go"
    outs = {n: tmp_path / f"{n}.json" for n in names}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, store_url, n, str(go), str(outs[n])],
            stderr=subprocess.PIPE,
        )
        for n in names
    ]
    go.write_text("go")
    for proc in procs:
        _, err = await asyncio.to_thread(proc.communicate, timeout=100)
        assert proc.returncode == 0, err.decode()
    results = {n: json.loads(outs[n].read_text()) for n in names}

    # Migrations ran once, in exactly one of the processes (under the migration lock).
    applied = [r["applied"] for r in results.values()]
    assert sorted(applied, key=len) == [[], [], [f"{ns}#{v}" for ns, v in HOST]]
    rows = await db_rows(store_url, "SELECT namespace, version FROM schema_migrations")
    assert sorted(rows) == HOST

    # Event seqs: exactly 1..600, each handed to exactly one writer, in each writer's order.
    all_seqs = [s for r in results.values() for s in r["seqs"]]
    assert sorted(all_seqs) == list(range(1, 601))
    for r in results.values():
        assert r["seqs"] == sorted(r["seqs"])
    by = json_field(store_url, "data", "by")
    stored = await db_rows(store_url, f"SELECT seq, {by} FROM gateway_events ORDER BY seq")
    assert [seq for seq, _ in stored] == list(range(1, 601))
    for n in names:
        assert [seq for seq, who in stored if who == n] == results[n]["seqs"]
    assert await db_rows(
        store_url, "SELECT last_seq FROM gateway_event_streams WHERE stream = 'shared'"
    ) == [(600,)]

    # Each once() key, each tick and each lease was won by exactly one process.
    for field in ("once", "ticks", "leases"):
        won = [set(results[n][field]) for n in names]
        assert set().union(*won) == set(range(100)), field
        assert sum(len(w) for w in won) == 100, field
        for i, a in enumerate(won):
            for b in won[i + 1 :]:
                assert not a & b, field

    # Every successful compare-and-set counted: no update was lost.
    increments = sum(r["increments"] for r in results.values())
    assert increments >= 200
    store = Store(store_url)
    await store.open()
    try:
        assert await store.get_value("counter") == increments
    finally:
        await store.close()


# -- PostgreSQL: notifications of new events -------------------------------------------------


class Heard:
    """What a stream listener reported: stream names, in order, and gaps."""

    def __init__(self) -> None:
        self.streams: list[str] = []
        self.gaps = 0
        self.changed = asyncio.Event()

    def stream(self, name: str) -> None:
        self.streams.append(name)
        self.changed.set()

    def gap(self) -> None:
        self.gaps += 1
        self.changed.set()

    async def until(self, condition, timeout: float = 20) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


async def test_a_listener_hears_the_streams_another_store_appends_to_once_per_commit(
    postgres_url,
):
    writer, reader = Store(postgres_url), Store(postgres_url)
    await writer.open()
    await reader.open()
    heard = Heard()
    listener = reader.stream_listener(heard.stream, heard.gap)
    assert listener is not None
    await listener.start()
    try:
        assert listener.connected.is_set()
        async with writer.write() as conn:
            for i in range(5):
                await writer.append_event("run:a", "step", {"i": i}, conn=conn)
            await writer.append_event("run:b", "step", conn=conn)
        await heard.until(lambda: {"run:a", "run:b"} <= set(heard.streams))
        await writer.append_event("run:a", "done")
        await heard.until(lambda: heard.streams.count("run:a") == 2)
        # A transaction is one notification per stream, however many events it added.
        assert sorted(heard.streams) == ["run:a", "run:a", "run:b"]

        # A rolled-back append notifies nobody.
        with pytest.raises(RuntimeError):
            async with writer.write() as conn:
                await writer.append_event("run:lost", "step", conn=conn)
                raise RuntimeError("state change failed")
        await writer.append_event("run:c", "step")
        await heard.until(lambda: "run:c" in heard.streams)
        assert "run:lost" not in heard.streams
    finally:
        await listener.close()
        await reader.close()
        await writer.close()


async def test_a_listener_whose_connection_is_cut_reconnects_and_reports_the_gap(postgres_url):
    store = Store(postgres_url)
    await store.open()
    heard = Heard()
    listener = store.stream_listener(heard.stream, heard.gap)
    assert listener is not None
    await listener.start()
    try:
        async with store.write() as conn:
            cut = await conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query LIKE 'LISTEN %' AND pid <> pg_backend_pid()"
            )
            assert cut.scalars().all() == [True]
        await heard.until(lambda: heard.gaps == 1)
        assert listener.connections == 2
        await store.append_event("after", "e")
        await heard.until(lambda: "after" in heard.streams)
    finally:
        await listener.close()
        await store.close()


async def test_a_sqlite_store_has_no_listener_its_readers_poll(state_dir):
    store = Store(sqlite_url(state_dir))
    assert store.stream_listener(lambda _s: None, lambda: None) is None


def test_a_store_never_shows_its_database_password(postgres_url):
    store = Store(postgres_url)
    password = sa.engine.make_url(postgres_url).password
    assert password and password not in repr(store)
    assert "***" in repr(store)
