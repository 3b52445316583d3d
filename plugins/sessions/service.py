"""Sessions and their messages in the store: what the routes, the conversation recorder,
the step kinds and other plugins (through ``contract.SessionsService``) call.

Every method takes the owner (a principal key) explicitly; deciding who may name which
owner is the routes' job (``access.py``). Every write is committed before the method
returns. Appends to one session are serialised on the session's row (``FOR UPDATE`` on
PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` write lock already makes them one at a time),
so concurrent appends each get the next ``seq`` and the head moves without a lost update.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from host.api import GatewayContext, GatewayError, now_ms, scan_text
from plugins.sessions import errors, records
from plugins.sessions.config import SessionsConfig
from plugins.sessions.contract import NewMessage, SessionsService
from plugins.sessions.memory import MemoryStore
from plugins.sessions.metrics import SessionsMetrics
from plugins.sessions.models import (
    KEY_PATTERN,
    GraphQuery,
    MemoryEntryRecord,
    MemoryEntryRequest,
    MemoryGraph,
    MemoryQuery,
    MemoryView,
    MessageRecord,
    SessionDetail,
    SessionList,
    SessionListQuery,
    SessionSummary,
)
from plugins.sessions.tables import messages, sessions

_KEY = re.compile(KEY_PATTERN)
ROLES = ("system", "user", "assistant", "tool")


def check_key(key: str, param: str = "session_key") -> str:
    """``key`` when it is a valid session key; 400 ``invalid_session_key`` naming ``param``."""
    if not isinstance(key, str) or not _KEY.match(key):
        raise errors.invalid_key(str(key), param)
    return key


def new_id() -> str:
    return uuid.uuid4().hex


class SessionsStore(SessionsService):
    """The sessions plugin's data, in the gateway's store (and the service other plugins
    call)."""

    def __init__(
        self, gateway: GatewayContext, config: SessionsConfig, metrics: SessionsMetrics
    ) -> None:
        self.gateway = gateway
        self.config = config
        self.metrics = metrics
        self.memory = MemoryStore(self)
        self._write_lock = asyncio.Lock()

    @property
    def store(self) -> Any:
        return self.gateway.store

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction. On SQLite the plugin's writers of this process queue
        here, on the event loop, rather than in SQLite's busy handler (which sleeps 1, 2,
        5 ... 100 ms between tries while the write lock is often free again): SQLite
        takes one writer at a time anyway. Other processes' writers still meet at
        SQLite's lock. On PostgreSQL the session row lock orders appends, and writes to
        different sessions go in parallel."""
        if self.store.dialect.name != "sqlite":
            async with self.store.write() as conn:
                yield conn
            return
        async with self._write_lock, self.store.write() as conn:
            yield conn

    # -- lookups -------------------------------------------------------------------------

    async def row(self, conn: AsyncConnection, owner: str, key: str) -> Any:
        query = sa.select(sessions).where(sessions.c.owner == owner, sessions.c.key == key)
        return (await conn.execute(query)).first()

    async def owners_of(self, key: str) -> list[str]:
        """Every owner with a session ``key`` (for read-all holders naming no owner)."""
        query = sa.select(sessions.c.owner).where(sessions.c.key == key).order_by(sessions.c.owner)
        async with self.store.read() as conn:
            return [r.owner for r in (await conn.execute(query)).all()]

    async def exists(self, owner: str, key: str) -> bool:
        async with self.store.read() as conn:
            return await self.row(conn, owner, key) is not None

    async def ensure(
        self,
        conn: AsyncConnection,
        owner: str,
        key: str,
        source: str,
        user: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> tuple[Any, bool]:
        """The session's row, created if it is not there, locked for this transaction;
        and whether it was created."""
        check_key(key)
        locked = self.store.dialect.lock(
            sa.select(sessions).where(sessions.c.owner == owner, sessions.c.key == key)
        )
        found = (await conn.execute(locked)).first()
        if found is not None:
            return found, False
        now = now_ms()
        session_id = new_id()
        insert = self.store.dialect.insert_ignore(sessions).values(
            id=session_id,
            owner=owner,
            key=key,
            source=source,
            user=user,
            head_id=None,
            next_seq=1,
            message_count=0,
            metadata=metadata or {},
            document=None,
            document_updated_ms=None,
            created_ms=now,
            updated_ms=now,
        )
        await conn.execute(insert)
        row = (await conn.execute(locked)).one()
        created = row.id == session_id
        if created:
            self.metrics.sessions_created.labels(source).inc()
        return row, created

    async def locked(self, conn: AsyncConnection, owner: str, key: str) -> Any:
        """The session's row locked for this transaction; 404 when there is none."""
        query = self.store.dialect.lock(
            sa.select(sessions).where(sessions.c.owner == owner, sessions.c.key == key)
        )
        row = (await conn.execute(query)).first()
        if row is None:
            raise errors.session_not_found(key)
        return row

    # -- appends -------------------------------------------------------------------------

    async def scanned(self, key: str, items: Sequence[NewMessage]) -> list[NewMessage]:
        """``items`` as the safety scanners leave them: 400 ``content_blocked`` for a
        blocked one (nothing is written), a redacted one's text replaced. Checks the size
        bound first (413)."""
        limit = self.config.max_content_chars
        out = []
        for item in items:
            if item.role not in ROLES:
                raise GatewayError(
                    400,
                    "invalid_request_body",
                    f"role must be one of {', '.join(ROLES)} (got {item.role!r})",
                    param="role",
                )
            if len(item.content) > limit:
                raise errors.too_large("content", len(item.content), limit, "max_content_chars")
            result = await scan_text(
                self.gateway,
                item.content,
                "input",
                {"stage": "session_append", "session_key": key},
            )
            if result.blocked:
                reasons = "; ".join(f["reason"] for f in result.findings if f.get("reason"))
                raise GatewayError(
                    400,
                    "content_blocked",
                    "a safety scanner blocked this message" + (f": {reasons}" if reasons else ""),
                    param="content",
                )
            out.append(NewMessage(item.role, result.text, item.metadata))
        return out

    async def append(
        self,
        owner: str,
        key: str,
        items: Sequence[NewMessage],
        *,
        source: str = "api",
        parent_id: str | None = None,
        user: str | None = None,
    ) -> tuple[list[MessageRecord], SessionSummary]:
        """Append ``items`` in order under ``parent_id`` (default: the head), creating the
        session if need be; the last one becomes the head."""
        check_key(key)
        items = await self.scanned(key, items)
        async with self.write() as conn:
            row, _ = await self.ensure(conn, owner, key, source, user)
            if parent_id is not None:
                await self._require_message(conn, row.id, parent_id)
            stored, row = await self._insert(conn, row, items, parent_id or row.head_id)
        return stored, records.session(row)

    async def _require_message(self, conn: AsyncConnection, session_id: str, mid: str) -> None:
        query = sa.select(messages.c.id).where(
            messages.c.session_id == session_id, messages.c.id == mid
        )
        if (await conn.execute(query)).first() is None:
            raise errors.message_not_found(mid)

    async def _insert(
        self, conn: AsyncConnection, row: Any, items: Sequence[NewMessage], parent: str | None
    ) -> tuple[list[MessageRecord], Any]:
        """Insert ``items`` as a chain under ``parent`` and move the head to the last one;
        the caller holds the session row's lock."""
        now = now_ms()
        seq = row.next_seq
        stored: list[MessageRecord] = []
        values = []
        for item in items:
            mid = new_id()
            values.append(
                {
                    "id": mid,
                    "session_id": row.id,
                    "seq": seq,
                    "parent_id": parent,
                    "role": item.role,
                    "content": item.content,
                    "metadata": item.metadata,
                    "created_ms": now,
                }
            )
            stored.append(
                MessageRecord(**{k: v for k, v in values[-1].items() if k != "session_id"})
            )
            parent, seq = mid, seq + 1
        if values:
            await conn.execute(sa.insert(messages), values)
        update = (
            sa.update(sessions)
            .where(sessions.c.id == row.id)
            .values(
                head_id=parent,
                next_seq=seq,
                message_count=sessions.c.message_count + len(values),
                updated_ms=now,
            )
        )
        await conn.execute(update)
        # The row as the update left it (this transaction holds its lock).
        fresh = SimpleNamespace(
            **{
                **row._mapping,
                "head_id": parent,
                "next_seq": seq,
                "message_count": row.message_count + len(values),
                "updated_ms": now,
            }
        )
        for item in items:
            self.metrics.messages.labels(row.source, item.role).inc()
        return stored, fresh

    async def record_exchange(
        self,
        owner: str,
        key: str,
        sent: Sequence[NewMessage],
        answer: Sequence[NewMessage],
        *,
        source: str,
        user: str | None,
        resend_history: bool,
        metadata: dict[str, Any] | None = None,
    ) -> SessionSummary:
        """Keep one model exchange. A chat client sends the whole conversation each turn
        (``resend_history``): only what the session does not hold yet is appended, and a
        history the client changed continues as a branch from where it parts from the
        stored conversation. A Responses chain sends only the new input."""
        check_key(key)
        sent = await self.scanned(key, sent)
        answer = await self.scanned(key, answer)
        async with self.write() as conn:
            row, _ = await self.ensure(conn, owner, key, source, user, metadata)
            parent = row.head_id
            new = list(sent)
            if resend_history and row.head_id is not None:
                lineage = await self._lineage_rows(conn, row.id, row.head_id)
                common = 0
                for stored_row, item in zip(lineage, sent, strict=False):
                    if (stored_row.role, stored_row.content) != (item.role, item.content):
                        break
                    common += 1
                parent = lineage[common - 1].id if common else None
                new = list(sent[common:])
            _, row = await self._insert(conn, row, [*new, *answer], parent)
        return records.session(row)

    # -- reading -------------------------------------------------------------------------

    async def _lineage_ids(
        self, conn: AsyncConnection, session_id: str, head: str | None
    ) -> list[str]:
        if head is None:
            return []
        query = sa.select(messages.c.id, messages.c.parent_id).where(
            messages.c.session_id == session_id
        )
        parents = {r.id: r.parent_id for r in (await conn.execute(query)).all()}
        chain: list[str] = []
        cursor: str | None = head
        while cursor is not None and cursor in parents and len(chain) <= len(parents):
            chain.append(cursor)
            cursor = parents[cursor]
        chain.reverse()
        return chain

    async def _lineage_rows(
        self, conn: AsyncConnection, session_id: str, head: str | None
    ) -> list[Any]:
        ids = await self._lineage_ids(conn, session_id, head)
        if not ids:
            return []
        rows: dict[str, Any] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            query = sa.select(messages).where(messages.c.id.in_(chunk))
            rows.update({r.id: r for r in (await conn.execute(query)).all()})
        return [rows[i] for i in ids]

    async def detail(
        self, owner: str, key: str, after_seq: int = 0, limit: int = 200
    ) -> SessionDetail:
        async with self.store.read() as conn:
            row = await self.row(conn, owner, key)
            if row is None:
                raise errors.session_not_found(key)
            lineage = await self._lineage_rows(conn, row.id, row.head_id)
            page = (
                await conn.execute(
                    sa.select(messages)
                    .where(messages.c.session_id == row.id, messages.c.seq > after_seq)
                    .order_by(messages.c.seq)
                    .limit(limit + 1)
                )
            ).all()
        more = len(page) > limit
        page = page[:limit]
        return SessionDetail(
            **records.session(row).model_dump(),
            lineage=[r.id for r in lineage],
            messages=[records.message(r) for r in lineage],
            entries=[records.message(r) for r in page],
            next_after_seq=page[-1].seq if more else None,
        )

    async def conversation(self, owner: str, key: str) -> list[MessageRecord]:
        """The current conversation (root to head); 404 when there is no such session."""
        async with self.store.read() as conn:
            row = await self.row(conn, owner, key)
            if row is None:
                raise errors.session_not_found(key)
            return [records.message(r) for r in await self._lineage_rows(conn, row.id, row.head_id)]

    async def summary(self, owner: str, key: str) -> SessionSummary:
        async with self.store.read() as conn:
            row = await self.row(conn, owner, key)
        if row is None:
            raise errors.session_not_found(key)
        return records.session(row)

    async def list(self, visible: sa.ColumnElement[bool], query: SessionListQuery) -> SessionList:
        where = [visible]
        if query.source is not None:
            where.append(sessions.c.source == query.source)
        if query.user is not None:
            where.append(sessions.c.user == query.user)
        column = sessions.c.updated_ms if query.sort == "last_activity" else sessions.c.created_ms
        order = (
            [column.desc(), sessions.c.id.desc()]
            if query.order == "desc"
            else [column, sessions.c.id]
        )
        async with self.store.read() as conn:
            total = (
                await conn.execute(sa.select(sa.func.count()).select_from(sessions).where(*where))
            ).scalar_one()
            rows = (
                await conn.execute(
                    sa.select(sessions)
                    .where(*where)
                    .order_by(*order)
                    .offset(query.offset)
                    .limit(query.limit)
                )
            ).all()
        end = query.offset + len(rows)
        return SessionList(
            sessions=[records.session(r) for r in rows],
            total=total,
            next_offset=end if end < total else None,
        )

    # -- reset and branch ----------------------------------------------------------------

    async def reset(self, owner: str, key: str) -> SessionSummary:
        """Start the conversation afresh: the head goes; the messages stay in the store
        (append-only), as an earlier branch."""
        async with self.write() as conn:
            row = await self.locked(conn, owner, key)
            now = now_ms()
            await conn.execute(
                sa.update(sessions)
                .where(sessions.c.id == row.id)
                .values(head_id=None, updated_ms=now)
            )
            fresh = (await conn.execute(sa.select(sessions).where(sessions.c.id == row.id))).one()
        return records.session(fresh)

    async def branch(
        self,
        owner: str,
        key: str,
        at: str | None,
        new_owner: str,
        new_key: str | None,
    ) -> SessionDetail:
        """A new session (``new_owner``'s) holding a copy of the conversation up to
        message ``at`` (default: the head); 409 ``session_exists`` if ``new_key`` is taken."""
        target_key = new_key or f"{key[:90]}.branch-{uuid.uuid4().hex[:12]}"
        check_key(target_key, "new_session_key")
        async with self.write() as conn:
            row = await self.locked(conn, owner, key)
            point = at or row.head_id
            if at is not None:
                await self._require_message(conn, row.id, at)
            lineage = await self._lineage_rows(conn, row.id, point)
            if await self.row(conn, new_owner, target_key) is not None:
                raise GatewayError(
                    409,
                    "session_exists",
                    f"a session {target_key!r} exists",
                    param="new_session_key",
                )
            origin = {"session_key": key, "session_id": row.id, "message_id": point}
            fresh, _ = await self.ensure(
                conn, new_owner, target_key, row.source, row.user, {"branched_from": origin}
            )
            copies = [
                NewMessage(r.role, r.content, {**(r.metadata or {}), "copied_from": r.id})
                for r in lineage
            ]
            await self._insert(conn, fresh, copies, None)
        return await self.detail(new_owner, target_key)

    # -- the rest of the service -----------------------------------------------------------

    async def list_sessions(self, owner: str, limit: int = 50, offset: int = 0) -> SessionList:
        return await self.list(
            sessions.c.owner == owner, SessionListQuery(limit=limit, offset=offset)
        )

    async def branch_session(
        self, owner: str, session_key: str, at: str | None = None, new_key: str | None = None
    ) -> SessionDetail:
        return await self.branch(owner, session_key, at, owner, new_key)

    async def session(self, owner: str, session_key: str) -> SessionDetail:
        return await self.detail(owner, session_key)

    async def put_memory(
        self, owner: str, session_key: str, entry_id: str, entry: MemoryEntryRequest
    ) -> tuple[MemoryEntryRecord, bool]:
        return await self.memory.put_entry(owner, session_key, entry_id, entry)

    async def memory_entry(self, owner: str, session_key: str, entry_id: str) -> MemoryEntryRecord:
        return await self.memory.get_entry(owner, session_key, entry_id)

    async def delete_memory(self, owner: str, session_key: str, entry_id: str) -> None:
        await self.memory.delete_entry(owner, session_key, entry_id)

    async def search_memory(self, owner: str, session_key: str, query: MemoryQuery) -> MemoryView:
        return await self.memory.view(owner, session_key, query)

    async def put_document(self, owner: str, session_key: str, document: str) -> MemoryView:
        return await self.memory.put_document(owner, session_key, document)

    async def memory_graph(self, owner: str, session_key: str, max_nodes: int = 200) -> MemoryGraph:
        summary = await self.summary(owner, session_key)
        query = GraphQuery(max_nodes=max_nodes)
        return await self.memory.graph([summary.session_id], query, qualified=False)
