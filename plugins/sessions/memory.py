"""Memory: a session's free-text document and its structured entries, with search and the
graph of their relations. Entries are soft-deleted (``deleted_ms``) and can be restored."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from host.api import now_ms
from plugins.sessions import errors, records, search
from plugins.sessions.models import (
    DEFAULT_IMPORTANCE,
    GraphEdge,
    GraphNode,
    GraphQuery,
    MemoryEntryRecord,
    MemoryEntryRequest,
    MemoryGraph,
    MemoryQuery,
    MemoryView,
)
from plugins.sessions.search import Scope
from plugins.sessions.tables import memory, sessions

if TYPE_CHECKING:
    from plugins.sessions.service import SessionsStore


class MemoryStore:
    def __init__(self, owner: SessionsStore) -> None:
        self.sessions = owner

    @property
    def store(self) -> Any:
        return self.sessions.store

    # -- the document --------------------------------------------------------------------

    async def put_document(self, owner: str, key: str, document: str) -> MemoryView:
        limit = self.sessions.config.max_document_chars
        if len(document) > limit:
            raise errors.too_large("document", len(document), limit, "max_document_chars")
        async with self.sessions.write() as conn:
            row, _ = await self.sessions.ensure(conn, owner, key, "api")
            now = now_ms()
            await conn.execute(
                sa.update(sessions)
                .where(sessions.c.id == row.id)
                .values(document=document, document_updated_ms=now, updated_ms=now)
            )
        self.sessions.metrics.memory_writes.labels("document").inc()
        return MemoryView(session_key=key, document=document, document_updated_ms=now, entries=[])

    # -- entries -------------------------------------------------------------------------

    async def put_entry(
        self, owner: str, key: str, entry_id: str, body: MemoryEntryRequest
    ) -> tuple[MemoryEntryRecord, bool]:
        """Create (True) or replace (False) an entry; a deleted one is replaced and restored."""
        from plugins.sessions.service import check_key

        check_key(entry_id, "entry_id")
        text = records.entry_text(body)
        limit = self.sessions.config.max_content_chars
        if len(text) > limit:
            raise errors.too_large("summary", len(text), limit, "max_content_chars")
        importance = (
            body.importance if body.importance is not None else DEFAULT_IMPORTANCE[body.memory_type]
        )
        now = now_ms()
        values: dict[str, Any] = {
            "summary": body.summary,
            "tags": list(body.tags),
            "tags_text": records.tags_text(list(body.tags)),
            "facts": list(body.facts),
            "memory_type": body.memory_type,
            "importance": importance,
            "workspace_id": body.scope.workspace_id,
            "channel_id": body.scope.channel_id,
            "actor_id": body.scope.actor_id,
            "relations": [r.model_dump() for r in body.relations],
            "source_event_key": body.source_event_key,
            "search_text": text,
            "updated_ms": now,
            "deleted_ms": None,
        }
        async with self.sessions.write() as conn:
            row, _ = await self.sessions.ensure(conn, owner, key, "api")
            current = await self._row(conn, row.id, entry_id)
            if current is None:
                await conn.execute(
                    sa.insert(memory).values(
                        session_id=row.id,
                        entry_id=entry_id,
                        created_ms=now,
                        last_accessed_ms=None,
                        access_count=0,
                        **values,
                    )
                )
            else:
                await conn.execute(
                    sa.update(memory).where(memory.c.n == current.n).values(**values)
                )
            await conn.execute(
                sa.update(sessions).where(sessions.c.id == row.id).values(updated_ms=now)
            )
            stored = await self._row(conn, row.id, entry_id)
        self.sessions.metrics.memory_writes.labels("create" if current is None else "replace").inc()
        return records.entry(stored, key), current is None

    async def _row(self, conn: AsyncConnection, session_id: str, entry_id: str) -> Any:
        query = sa.select(memory).where(
            memory.c.session_id == session_id, memory.c.entry_id == entry_id
        )
        return (await conn.execute(query)).first()

    async def _session(self, conn: AsyncConnection, owner: str, key: str) -> Any:
        row = await self.sessions.row(conn, owner, key)
        if row is None:
            raise errors.session_not_found(key)
        return row

    async def get_entry(
        self, owner: str, key: str, entry_id: str, *, deleted: bool = False, touch: bool = True
    ) -> MemoryEntryRecord:
        """The entry (a deleted one only with ``deleted``); a read counts as an access."""
        async with self.sessions.write() if touch else self.store.read() as conn:
            row = await self._session(conn, owner, key)
            entry = await self._row(conn, row.id, entry_id)
            if entry is None or (entry.deleted_ms is not None) != deleted:
                raise errors.entry_not_found(entry_id)
            if touch:
                await conn.execute(
                    sa.update(memory)
                    .where(memory.c.n == entry.n)
                    .values(last_accessed_ms=now_ms(), access_count=memory.c.access_count + 1)
                )
                entry = await self._row(conn, row.id, entry_id)
        return records.entry(entry, key)

    async def delete_entry(self, owner: str, key: str, entry_id: str) -> None:
        await self._set_deleted(owner, key, entry_id, now_ms())
        self.sessions.metrics.memory_writes.labels("delete").inc()

    async def restore_entry(self, owner: str, key: str, entry_id: str) -> MemoryEntryRecord:
        await self._set_deleted(owner, key, entry_id, None)
        self.sessions.metrics.memory_writes.labels("restore").inc()
        return await self.get_entry(owner, key, entry_id, touch=False)

    async def _set_deleted(self, owner: str, key: str, entry_id: str, when: int | None) -> None:
        async with self.sessions.write() as conn:
            row = await self._session(conn, owner, key)
            entry = await self._row(conn, row.id, entry_id)
            # Deleting a deleted entry, or restoring a live one, finds nothing to act on.
            if entry is None or (entry.deleted_ms is None) != (when is not None):
                raise errors.entry_not_found(entry_id)
            await conn.execute(
                sa.update(memory)
                .where(memory.c.n == entry.n)
                .values(deleted_ms=when, updated_ms=now_ms())
            )

    # -- reading, search -----------------------------------------------------------------

    async def view(self, owner: str, key: str, query: MemoryQuery) -> MemoryView:
        """The document and the entries: the latest first, or ranked by ``query.query``."""
        async with self.store.read() as conn:
            row = await self._session(conn, owner, key)
        found = await self.search([row.id], query)
        return MemoryView(
            session_key=key,
            document=row.document,
            document_updated_ms=row.document_updated_ms,
            entries=found,
            query=query.query,
        )

    async def search(self, scope: Scope, query: MemoryQuery) -> list[MemoryEntryRecord]:
        """Entries of the sessions in ``scope`` (ids, or a SELECT of ids)."""
        filters = search.Filters.of(query)
        if query.deleted or not search.terms(query.query):
            async with self.store.read() as conn:
                rows = await search.latest(conn, scope, filters, query.limit, query.deleted)
                keys = await self._keys(conn, rows)
            return [records.entry(r, keys[r.session_id]) for r in rows]
        started = time.perf_counter()
        ranked = await search.ranked(
            self.sessions.gateway,
            self.sessions.config,
            scope,
            query.query or "",
            filters,
            query.limit,
        )
        self.sessions.metrics.search_seconds.labels(self.store.dialect.name).observe(
            time.perf_counter() - started
        )
        async with self.store.read() as conn:
            keys = await self._keys(conn, [r for r, _ in ranked])
        return [records.entry(r, keys[r.session_id], score) for r, score in ranked]

    async def _keys(self, conn: AsyncConnection, rows: list[Any]) -> dict[str, str]:
        """Session keys by session id, for ``rows``' sessions."""
        ids = sorted({r.session_id for r in rows})
        keys: dict[str, str] = {}
        for start in range(0, len(ids), 500):
            query = sa.select(sessions.c.id, sessions.c.key).where(
                sessions.c.id.in_(ids[start : start + 500])
            )
            keys.update({r.id: r.key for r in (await conn.execute(query)).all()})
        return keys

    async def graph(self, scope: Scope, query: GraphQuery, qualified: bool) -> MemoryGraph:
        """Nodes (the most important entries first, at most ``max_nodes``) and the edges of
        their relations between them. ``qualified`` node ids name their session."""
        filters = search.Filters.of(query)
        async with self.store.read() as conn:
            rows = await search.by_importance(conn, scope, filters, query.max_nodes + 1)
            truncated = len(rows) > query.max_nodes
            rows = rows[: query.max_nodes]
            keys = await self._keys(conn, rows)

        def node_id(session_id: str, entry_id: str) -> str:
            return f"{session_id}/{entry_id}" if qualified else entry_id

        present = {(r.session_id, r.entry_id) for r in rows}
        wanted = {t.strip() for t in (query.relation_types or "").split(",") if t.strip()}
        nodes = []
        edges = []
        for r in rows:
            record = records.entry(r, keys[r.session_id])
            nodes.append(
                GraphNode(
                    id=node_id(r.session_id, r.entry_id),
                    entry_id=r.entry_id,
                    session_key=record.session_key,
                    summary=record.summary,
                    memory_type=record.memory_type,
                    importance=record.importance,
                    tags=record.tags,
                    scope=record.scope,
                )
            )
            for rel in record.relations:
                if (
                    r.session_id,
                    rel.target_id,
                ) not in present or rel.weight < query.min_edge_weight:
                    continue
                if wanted and rel.relation_type not in wanted:
                    continue
                edges.append(
                    GraphEdge(
                        source=node_id(r.session_id, r.entry_id),
                        target=node_id(r.session_id, rel.target_id),
                        relation_type=rel.relation_type,
                        weight=rel.weight,
                    )
                )
        return MemoryGraph(nodes=nodes, edges=edges, truncated=truncated)
