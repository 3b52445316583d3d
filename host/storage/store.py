"""The async store: SQLAlchemy 2 Core over aiosqlite (SQLite, the embedded default) or
asyncpg (PostgreSQL, for several replicas on one database), one interface for both.

Domain-level methods only; plugins that need tables of their own contribute migrations
and use :meth:`Store.write` / :meth:`Store.read` with Core statements, going through
:attr:`Store.dialect` for the few dialect-specific constructs (claims, row locks,
insert-or-ignore; see :mod:`host.storage.dialect`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from host.state_dir import FILE_MODE
from host.storage import tables
from host.storage.dialect import Dialect, for_url
from host.storage.migrations import HOST_MIGRATIONS, Migration, pending
from host.storage.notify import StreamListener
from host.storage.records import AuthSession, Event, now_ms
from host.storage.urls import display_url

if TYPE_CHECKING:
    from host.settings import Settings

log = logging.getLogger("gateway.store")


class StoreError(Exception):
    pass


def _private_sqlite_files(url: str) -> None:
    """Create the database file 0600 before SQLite does (it would make it 0644 under the
    usual umask), so that the ``-wal`` and ``-shm`` files, which SQLite creates with the
    database file's mode, are 0600 too; tighten the files of an older store."""
    database = sa.engine.make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if not path.parent.is_dir():
        return  # SQLite says so, in its own words
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if stat.S_IMODE(file.stat().st_mode) & 0o077:
                os.chmod(file, FILE_MODE)
        except FileNotFoundError:
            continue
        except PermissionError:
            log.warning("%s is open to other users and not ours to chmod", file)


class Store:
    def __init__(
        self,
        url: str,
        *,
        synchronous: str = "full",
        busy_timeout_ms: int = 10_000,
        pool_size: int = 5,
    ) -> None:
        self.url = url
        self.dialect: Dialect = for_url(url)
        self._synchronous = synchronous.upper()
        self._busy_timeout_ms = busy_timeout_ms
        self._pool_size = pool_size
        self._engine: AsyncEngine | None = None
        self._volatile: AsyncEngine | None = None
        self.applied: list[tuple[str, int, str]] = []

    @classmethod
    def for_settings(cls, settings: Settings) -> Store:
        """The store ``settings`` name (``[storage]``; SQLite in the state directory by
        default)."""
        storage = settings.storage
        return cls(
            storage.resolved_url(settings.state_dir),
            synchronous=storage.synchronous,
            busy_timeout_ms=storage.busy_timeout_ms,
            pool_size=storage.pool_size,
        )

    def __repr__(self) -> str:
        return f"Store({display_url(self.url)!r})"

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise StoreError("the store is not open")
        return self._engine

    async def open(self, migrations: Sequence[Migration] = ()) -> None:
        """Connect and apply the pending migrations (the host's and ``migrations``)."""
        if self._engine is not None:
            return
        self.connect()
        try:
            await self.migrate([*HOST_MIGRATIONS, *migrations])
        except BaseException:
            # Not half-open: a later open() must migrate again, not find an engine.
            await self.close()
            raise

    def connect(self) -> None:
        """Make the engine without migrating (``gateway db check``); :meth:`open` is the
        usual way in."""
        if self._engine is not None:
            return
        if self.dialect.name == "sqlite":
            _private_sqlite_files(self.url)
            engine = create_async_engine(self.url)
            self._setup_sqlite(engine.sync_engine)
        else:
            # pre-ping: a replica outlives a database restart or failover without
            # handing a dead pooled connection to a request.
            engine = create_async_engine(
                self.url,
                pool_size=self._pool_size,
                max_overflow=self._pool_size,
                pool_pre_ping=True,
            )
        self._engine = engine

    def _setup_sqlite(self, engine: sa.Engine, synchronous: str | None = None) -> None:
        sync, busy = synchronous or self._synchronous, self._busy_timeout_ms

        @sa_event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Take over transaction control from pysqlite so BEGIN IMMEDIATE is ours to say.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout = {int(busy)}")
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute(f"PRAGMA synchronous = {sync}")
            cur.execute("PRAGMA foreign_keys = ON")
            cur.close()

        @sa_event.listens_for(engine, "begin")
        def _on_begin(conn: sa.Connection) -> None:
            mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
            conn.exec_driver_sql(f"BEGIN {mode}")

    async def close(self) -> None:
        if self._volatile is not None:
            await self._volatile.dispose()
            self._volatile = None
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction; on SQLite it holds the write lock from its first statement,
        which is what makes a read-then-write claim safe across processes."""
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(sqlite_begin="IMMEDIATE")
            async with conn.begin():
                yield conn

    async def execute_volatile(self, statement: sa.Executable) -> list[sa.Row[Any]]:
        """Run one statement that decides by itself (an ``INSERT ... ON CONFLICT ...
        RETURNING``) and return its rows, on a connection whose commit does not wait for
        the disk (PostgreSQL: autocommit with ``synchronous_commit = off``; SQLite:
        ``synchronous = NORMAL`` in WAL mode). For counters such as rate limits, written
        on every request, which a crash may set back by a moment but never corrupt. Its
        own small pool, without a ping per checkout: a connection the database dropped
        is replaced and the statement tried once more."""
        if self._volatile is None:
            url = self.engine.url  # the store must be open
            if self.dialect.name == "sqlite":
                engine = create_async_engine(url)
                self._setup_sqlite(engine.sync_engine, synchronous="NORMAL")
            else:
                engine = create_async_engine(
                    url,
                    pool_size=self._pool_size,
                    max_overflow=self._pool_size,
                    isolation_level="AUTOCOMMIT",
                    connect_args={"server_settings": {"synchronous_commit": "off"}},
                )
            self._volatile = engine
        for attempt in (1, 2):
            try:
                async with self._volatile.connect() as conn:
                    if self.dialect.name == "sqlite":
                        conn = await conn.execution_options(sqlite_begin="IMMEDIATE")
                        async with conn.begin():
                            return list(await conn.execute(statement))
                    return list(await conn.execute(statement))
            except sa.exc.DBAPIError as exc:
                if attempt == 2 or not exc.connection_invalidated:
                    raise
        raise AssertionError("unreachable")

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn, conn.begin():
            yield conn

    # -- migrations -----------------------------------------------------------------------

    async def migrate(self, migrations: Sequence[Migration]) -> list[tuple[str, int, str]]:
        """Apply the pending ``migrations`` in one transaction, under a lock that makes
        processes starting together on one store take turns: the first applies them,
        the others then find nothing to do."""
        todo = list(_unique(migrations).values())
        if self.dialect.name == "sqlite":
            # In one worker thread on the standard driver: through aiosqlite every
            # statement of a new store's few hundred would hop threads twice.
            done = await asyncio.to_thread(self._migrate_sqlite, todo)
        else:
            async with self.write() as conn:
                await self.dialect.serialize(conn, "migrations")
                done = await conn.run_sync(lambda c: _apply(c, todo))
        if done:
            log.info("applied migrations: %s", ", ".join(f"{n}#{v}" for n, v, _ in done))
        self.applied = done
        return done

    def _migrate_sqlite(self, todo: list[Migration]) -> list[tuple[str, int, str]]:
        url = sa.engine.make_url(self.url).set(drivername="sqlite")
        engine = sa.create_engine(url, poolclass=NullPool)
        self._setup_sqlite(engine)
        try:
            with engine.connect() as conn:
                conn = conn.execution_options(sqlite_begin="IMMEDIATE")
                with conn.begin():
                    return _apply(conn, todo)
        finally:
            engine.dispose()

    async def migration_status(
        self, migrations: Sequence[Migration]
    ) -> tuple[list[Migration], list[tuple[str, int]]]:
        """Without changing anything: the migrations of the host and ``migrations`` that
        the store lacks, and the ones it has that none of them is (a store upgraded by
        a newer gateway, or by a plugin that is not loaded)."""
        seen = _unique([*HOST_MIGRATIONS, *migrations])
        async with self.read() as conn:
            exists = await conn.run_sync(
                lambda c: sa.inspect(c).has_table(tables.schema_migrations.name)
            )
            applied = await self._applied(conn) if exists else set()
        unknown = sorted(applied - set(seen))
        return pending(applied, list(seen.values())), unknown

    async def _applied(self, conn: AsyncConnection) -> set[tuple[str, int]]:
        t = tables.schema_migrations
        rows = await conn.execute(sa.select(t.c.namespace, t.c.version))
        return {(r.namespace, int(r.version)) for r in rows}

    async def schema_versions(self) -> dict[str, int]:
        t = tables.schema_migrations
        async with self.read() as conn:
            rows = await conn.execute(
                sa.select(t.c.namespace, sa.func.max(t.c.version)).group_by(t.c.namespace)
            )
            return {ns: int(v) for ns, v in rows}

    # -- key/value ------------------------------------------------------------------------

    async def get_value(self, key: str, default: Any = None) -> Any:
        async with self.read() as conn:
            row = await conn.execute(sa.select(tables.kv.c.value).where(tables.kv.c.key == key))
            value = row.scalar_one_or_none()
        return default if value is None else value

    async def set_value(self, key: str, value: Any, conn: AsyncConnection | None = None) -> None:
        stmt = self.dialect.upsert(
            tables.kv, ["key"], {"key": key, "value": value, "updated_ms": now_ms()}
        )
        if conn is not None:
            await conn.execute(stmt)
            return
        async with self.write() as c:
            await c.execute(stmt)

    async def compare_and_set(self, key: str, expected: Any, new: Any) -> bool:
        """Set ``key`` to ``new`` only if it currently equals ``expected``."""
        t = tables.kv
        async with self.write() as conn:
            if expected is None:
                # An absent key: the first to insert it wins (a row lock cannot hold a
                # row that is not there yet).
                created = await conn.execute(
                    self.dialect.insert_ignore(t).values(key=key, value=new, updated_ms=now_ms())
                )
                if created.rowcount:
                    return True
            row = await conn.execute(self.dialect.lock(sa.select(t.c.value).where(t.c.key == key)))
            current = row.scalar_one_or_none()
            if current != expected:
                return False
            await self.set_value(key, new, conn)
            return True

    # -- events ---------------------------------------------------------------------------

    async def append_event(
        self,
        stream: str,
        type: str,
        data: dict[str, Any] | None = None,
        conn: AsyncConnection | None = None,
    ) -> Event:
        """Append to a stream. Pass ``conn`` to write in the same transaction as the state
        change the event reports; publish it (``EventHub.notify``) after that commits."""
        if conn is None:
            async with self.write() as c:
                return await self.append_event(stream, type, data, c)
        ts = now_ms()
        t = tables.event_streams
        bump = (
            self.dialect.insert(t)
            .values(stream=stream, last_seq=1, updated_ms=ts)
            .on_conflict_do_update(
                index_elements=["stream"], set_={"last_seq": t.c.last_seq + 1, "updated_ms": ts}
            )
            .returning(t.c.last_seq)
        )
        seq = int((await conn.execute(bump)).scalar_one())
        payload = data or {}
        await conn.execute(
            tables.events.insert().values(stream=stream, seq=seq, type=type, ts_ms=ts, data=payload)
        )
        return Event(stream, seq, type, ts, payload)

    async def events_after(self, stream: str, after: int = 0, limit: int = 1000) -> list[Event]:
        t = tables.events
        async with self.read() as conn:
            rows = await conn.execute(
                sa.select(t.c.seq, t.c.type, t.c.ts_ms, t.c.data)
                .where(t.c.stream == stream, t.c.seq > after)
                .order_by(t.c.seq)
                .limit(limit)
            )
            return [Event(stream, int(r.seq), r.type, int(r.ts_ms), r.data) for r in rows]

    async def last_seq(self, stream: str) -> int:
        t = tables.event_streams
        async with self.read() as conn:
            row = await conn.execute(sa.select(t.c.last_seq).where(t.c.stream == stream))
            return int(row.scalar_one_or_none() or 0)

    async def last_seqs(self, streams: Sequence[str]) -> dict[str, int]:
        if not streams:
            return {}
        t = tables.event_streams
        async with self.read() as conn:
            rows = await conn.execute(
                sa.select(t.c.stream, t.c.last_seq).where(t.c.stream.in_(list(streams)))
            )
            found = {r.stream: int(r.last_seq) for r in rows}
        return {s: found.get(s, 0) for s in streams}

    # -- once-only keys (ticks, deliveries, idempotency) -----------------------------------

    async def once(
        self, scope: str, key: str, value: Any = None, conn: AsyncConnection | None = None
    ) -> bool:
        """Record ``(scope, key)``; True only for the caller that recorded it first."""
        if conn is None:
            async with self.write() as c:
                return await self.once(scope, key, value, c)
        stmt = self.dialect.insert_ignore(tables.once_keys).values(
            scope=scope, key=key, value=value, created_ms=now_ms()
        )
        result = await conn.execute(stmt)
        return bool(result.rowcount)

    async def once_value(self, scope: str, key: str) -> Any:
        t = tables.once_keys
        async with self.read() as conn:
            row = await conn.execute(sa.select(t.c.value).where(t.c.scope == scope, t.c.key == key))
            return row.scalar_one_or_none()

    async def fire_tick(self, schedule_id: str, tick_time_ms: int) -> bool:
        """True for exactly one caller per (schedule, tick), in any number of processes."""
        return await self.once("tick", f"{schedule_id}@{tick_time_ms}")

    # -- leases ---------------------------------------------------------------------------

    async def acquire_lease(self, name: str, owner: str, ttl_ms: int) -> bool:
        """Take or renew ``name`` for ``owner`` unless another owner holds it unexpired.
        One statement decides, so two processes never both take it."""
        t = tables.leases
        now = now_ms()
        stmt = self.dialect.insert(t).values(name=name, owner=owner, expires_ms=now + ttl_ms)
        stmt = stmt.on_conflict_do_update(
            index_elements=["name"],
            set_={"owner": owner, "expires_ms": now + ttl_ms},
            where=sa.or_(t.c.owner == owner, t.c.expires_ms <= now),
        ).returning(t.c.name)
        async with self.write() as conn:
            return (await conn.execute(stmt)).first() is not None

    heartbeat = acquire_lease

    async def release_lease(self, name: str, owner: str) -> None:
        t = tables.leases
        async with self.write() as conn:
            await conn.execute(t.delete().where(t.c.name == name, t.c.owner == owner))

    async def lease_holder(self, name: str) -> str | None:
        t = tables.leases
        async with self.read() as conn:
            row = (
                await conn.execute(sa.select(t.c.owner, t.c.expires_ms).where(t.c.name == name))
            ).first()
        return row.owner if row is not None and row.expires_ms > now_ms() else None

    async def sweep_stale_leases(self, prefix: str) -> list[str]:
        """Delete lapsed leases whose name starts with ``prefix``; returns their names."""
        t = tables.leases
        # One DELETE ... RETURNING: each lapsed lease goes to exactly one sweeper, and a
        # lease renewed meanwhile is not taken.
        stmt = (
            t.delete()
            .where(t.c.name.startswith(prefix, autoescape=True), t.c.expires_ms <= now_ms())
            .returning(t.c.name)
        )
        async with self.write() as conn:
            return [r.name for r in await conn.execute(stmt)]

    # -- auth sessions --------------------------------------------------------------------

    async def create_auth_session(
        self,
        token_hash: str,
        principal: str,
        ttl_ms: int,
        client: str | None,
        credential_fp: str | None = None,
    ) -> AuthSession:
        now = now_ms()
        record = AuthSession(token_hash, principal, now, now + ttl_ms, None, client, credential_fp)
        async with self.write() as conn:
            await conn.execute(
                tables.auth_sessions.insert().values(
                    token_hash=token_hash,
                    principal=principal,
                    created_ms=now,
                    expires_ms=record.expires_ms,
                    client=client,
                    credential_fp=credential_fp,
                )
            )
            await conn.execute(
                self.dialect.insert(tables.kv)
                .values(key="auth.sessions_issued", value=1, updated_ms=now)
                .on_conflict_do_update(
                    index_elements=["key"],
                    set_={
                        "value": self.dialect.json_increment(tables.kv.c.value),
                        "updated_ms": now,
                    },
                )
            )
        return record

    async def get_auth_session(self, token_hash: str) -> AuthSession | None:
        t = tables.auth_sessions
        async with self.read() as conn:
            row = (await conn.execute(sa.select(t).where(t.c.token_hash == token_hash))).first()
        return AuthSession(**row._asdict()) if row is not None else None

    async def revoke_auth_sessions(self, token_hash: str | None = None) -> int:
        """Revoke one session, or every active one when ``token_hash`` is None."""
        t = tables.auth_sessions
        stmt = t.update().where(t.c.revoked_ms.is_(None)).values(revoked_ms=now_ms())
        if token_hash is not None:
            stmt = stmt.where(t.c.token_hash == token_hash)
        async with self.write() as conn:
            return int((await conn.execute(stmt)).rowcount)

    async def delete_auth_sessions(
        self, token_hash: str | None = None, keep_principals: Collection[str] | None = None
    ) -> int:
        """Delete one session (``token_hash``), or every session whose principal is not in
        ``keep_principals`` (all of them when it is None)."""
        t = tables.auth_sessions
        stmt = t.delete()
        if token_hash is not None:
            stmt = stmt.where(t.c.token_hash == token_hash)
        elif keep_principals is not None:
            stmt = stmt.where(t.c.principal.not_in(list(keep_principals)))
        async with self.write() as conn:
            return int((await conn.execute(stmt)).rowcount)

    async def auth_session_counts(self) -> dict[str, int]:
        t = tables.auth_sessions
        now = now_ms()
        async with self.read() as conn:
            active = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(t)
                    .where(t.c.revoked_ms.is_(None), t.c.expires_ms > now)
                )
            ).scalar_one()
            issued = (
                await conn.execute(
                    sa.select(tables.kv.c.value).where(tables.kv.c.key == "auth.sessions_issued")
                )
            ).scalar_one_or_none()
        return {"active_sessions": int(active), "total_sessions_issued": int(issued or 0)}

    async def purge_expired_auth_sessions(
        self, older_than_ms: int, batch_size: int = 1000, dry_run: bool = False
    ) -> int:
        """Delete the sessions that expired before ``older_than_ms`` (revoked ones too, once
        expired); with ``dry_run`` only count them."""
        t = tables.auth_sessions
        where = t.c.expires_ms < older_than_ms
        if dry_run:
            return await self.count_where(t, where)
        return await self.delete_batched(t, where, [t.c.token_hash], batch_size)

    # -- retention ------------------------------------------------------------------------

    async def count_where(self, table: sa.Table, where: sa.ColumnElement[bool]) -> int:
        async with self.read() as conn:
            stmt = sa.select(sa.func.count()).select_from(table).where(where)
            return int((await conn.execute(stmt)).scalar_one())

    async def delete_batched(
        self,
        table: sa.Table,
        where: sa.ColumnElement[bool],
        keys: Sequence[sa.ColumnElement[Any]],
        batch_size: int,
    ) -> int:
        """Delete the rows of ``table`` matching ``where``, at most ``batch_size`` per write
        transaction (rows chosen by their primary key columns ``keys``), so that no other
        writer, in this process or another, waits on the lock for long. Returns how many
        rows went. Safe to run in several processes at once: each batch deletes what is
        still there."""
        chosen = sa.select(*keys).where(where).limit(batch_size)
        target = keys[0].in_(chosen) if len(keys) == 1 else sa.tuple_(*keys).in_(chosen)
        total = 0
        while True:
            async with self.write() as conn:
                removed = int((await conn.execute(table.delete().where(target))).rowcount)
            total += removed
            if removed < batch_size:
                return total

    async def prune_stream(
        self,
        stream: str,
        *,
        before_ms: int | None,
        keep_last: int | None,
        batch_size: int,
        dry_run: bool = False,
    ) -> int:
        """Delete the events of ``stream`` older than ``before_ms`` and those beyond its
        newest ``keep_last``. The stream's position stays: its seqs are never reused."""
        t = tables.events
        rules = []
        if before_ms is not None:
            rules.append(t.c.ts_ms < before_ms)
        if keep_last is not None:
            rules.append(t.c.seq <= await self.last_seq(stream) - keep_last)
        if not rules:
            return 0
        where = sa.and_(t.c.stream == stream, sa.or_(*rules))
        if dry_run:
            return await self.count_where(t, where)
        return await self.delete_batched(t, where, [t.c.stream, t.c.seq], batch_size)

    async def delete_streams(
        self, streams: Sequence[str], batch_size: int, dry_run: bool = False
    ) -> int:
        """Delete every event of ``streams`` and the streams themselves (for streams whose
        object is gone: a stream deleted this way must never be appended to again, as its
        seqs would start over). Returns how many events went."""
        if not streams:
            return 0
        t = tables.events
        where = t.c.stream.in_(list(streams))
        if dry_run:
            return await self.count_where(t, where)
        removed = await self.delete_batched(t, where, [t.c.stream, t.c.seq], batch_size)
        positions = tables.event_streams
        async with self.write() as conn:
            await conn.execute(positions.delete().where(positions.c.stream.in_(list(streams))))
        return removed

    async def prune_once_keys(
        self, scope: str, before_ms: int, batch_size: int, dry_run: bool = False
    ) -> int:
        """Forget the once-only keys of ``scope`` recorded before ``before_ms`` (for keys
        that can never come again, such as the ticks of a schedule long past)."""
        t = tables.once_keys
        where = sa.and_(t.c.scope == scope, t.c.created_ms < before_ms)
        if dry_run:
            return await self.count_where(t, where)
        return await self.delete_batched(t, where, [t.c.scope, t.c.key], batch_size)

    # -- cross-process notifications ------------------------------------------------------

    def stream_listener(
        self, on_stream: Callable[[str], None], on_gap: Callable[[], None]
    ) -> StreamListener | None:
        """A listener for the streams other processes append to (PostgreSQL's
        ``LISTEN``; see :mod:`host.storage.notify`), not yet started; None on SQLite,
        where other processes' events are found by polling."""
        if self.dialect.name != "postgresql":
            return None
        return StreamListener(self.url, on_stream, on_gap)


def _unique(migrations: Sequence[Migration]) -> dict[tuple[str, int], Migration]:
    seen: dict[tuple[str, int], Migration] = {}
    for m in migrations:
        if (m.namespace, m.version) in seen:
            raise StoreError(f"migration {m.namespace}#{m.version} is defined twice")
        seen[(m.namespace, m.version)] = m
    return seen


def _apply(conn: sa.Connection, migrations: list[Migration]) -> list[tuple[str, int, str]]:
    """Apply the ``migrations`` ``conn``'s store lacks, in ``conn``'s transaction (which
    holds the migrations lock); what it applied."""
    t = tables.schema_migrations
    t.create(conn, checkfirst=True)
    applied = {
        (r.namespace, int(r.version)) for r in conn.execute(sa.select(t.c.namespace, t.c.version))
    }
    done: list[tuple[str, int, str]] = []
    for m in pending(applied, migrations):
        m.upgrade(conn)
        conn.execute(
            t.insert().values(
                namespace=m.namespace, version=m.version, name=m.name, applied_ms=now_ms()
            )
        )
        done.append((m.namespace, m.version, m.name))
    return done
