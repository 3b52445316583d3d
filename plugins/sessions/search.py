"""Memory search: full-text search in the store behind one interface, and the shipped
ranking.

The text rank comes from the store's own engine: SQLite FTS5's ``bm25`` (the
``sessions_memory_fts`` table, kept in step by triggers) or PostgreSQL's ``ts_rank``
over the generated ``search_vector`` column (GIN index). Entries holding every word
of the query are taken first; when they are fewer than the search's ``limit``, entries
holding some of the words join them (OR; the engine ranks more, and rarer, words
higher). The best
``candidate_pool`` matches are then blended: ``text_weight`` x text rank (scaled to the
best match) + ``importance_weight`` x importance + ``recency_weight`` x recency (halving
every ``recency_half_life_days`` since the last update), plus ``ranker_weight`` x the
score of each ranker a plugin registers (``gateway_register_memory_rankers``: embedding
similarity, say). With a ranker registered the pool also holds the latest entries that
match no word, so a ranker can find what the words miss.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from host.api import GatewayContext, now_ms
from plugins.sessions.config import SessionsConfig
from plugins.sessions.contract import MemoryCandidate
from plugins.sessions.tables import memory

RANKERS = "memory_rankers"
# The sessions searched: their ids, or a SELECT of ids (every session a principal sees).
Scope = list[str] | sa.Select[Any]
_WORD = re.compile(r"\w+")
_DAY_MS = 86_400_000


def terms(query: str | None) -> list[str]:
    """The query's words (at most 32), lower-cased: nothing of the engines' query syntax."""
    return [w.lower() for w in _WORD.findall(query or "")][:32]


@dataclass(frozen=True)
class Filters:
    memory_type: str | None = None
    workspace_id: str | None = None
    channel_id: str | None = None
    actor_id: str | None = None
    tags: tuple[str, ...] = ()

    @classmethod
    def of(cls, query: Any) -> Filters:
        raw = getattr(query, "tags", None) or ""
        return cls(
            memory_type=query.memory_type,
            workspace_id=query.workspace_id,
            channel_id=query.channel_id,
            actor_id=query.actor_id,
            tags=tuple(t.strip() for t in raw.split(",") if t.strip()),
        )

    def where(self, scope: Scope, deleted: bool = False) -> list[sa.ColumnElement[bool]]:
        found: list[sa.ColumnElement[bool]] = [
            memory.c.session_id.in_(scope),
            memory.c.deleted_ms.is_not(None) if deleted else memory.c.deleted_ms.is_(None),
        ]
        for column, value in (
            (memory.c.memory_type, self.memory_type),
            (memory.c.workspace_id, self.workspace_id),
            (memory.c.channel_id, self.channel_id),
            (memory.c.actor_id, self.actor_id),
        ):
            if value is not None:
                found.append(column == value)
        for tag in self.tags:
            escaped = tag.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            found.append(memory.c.tags_text.like(f"%|{escaped}|%", escape="\\"))
        return found


async def latest(
    conn: AsyncConnection, scope: Scope, filters: Filters, limit: int, deleted: bool
) -> list[Any]:
    query = (
        sa.select(memory)
        .where(*filters.where(scope, deleted))
        .order_by(memory.c.updated_ms.desc(), memory.c.n.desc())
        .limit(limit)
    )
    return list((await conn.execute(query)).all())


async def by_importance(
    conn: AsyncConnection, scope: Scope, filters: Filters, limit: int
) -> list[Any]:
    query = (
        sa.select(memory)
        .where(*filters.where(scope))
        .order_by(memory.c.importance.desc(), memory.c.updated_ms.desc(), memory.c.n)
        .limit(limit)
    )
    return list((await conn.execute(query)).all())


async def text_matches(
    conn: AsyncConnection,
    scope: Scope,
    words: list[str],
    filters: Filters,
    pool: int,
    every_word: bool = False,
) -> list[tuple[Any, float]]:
    """The best ``pool`` entries matching any of ``words`` (each of them with
    ``every_word``), with their text rank (higher is better) from the store's full-text
    engine."""
    if conn.dialect.name == "sqlite":
        fts = sa.table("sessions_memory_fts", sa.column("rowid"))
        match = (" AND " if every_word else " OR ").join(f'"{w}"' for w in words)
        bm25 = sa.func.bm25(sa.literal_column("sessions_memory_fts"))
        query = (
            sa.select(memory, (-bm25).label("text_rank"))
            .join(fts, fts.c.rowid == memory.c.n)
            .where(sa.literal_column("sessions_memory_fts").op("MATCH")(match))
            .where(*filters.where(scope))
            .order_by(bm25)
            .limit(pool)
        )
    else:
        tsquery = sa.func.to_tsquery(
            sa.literal_column("'english'::regconfig"),
            sa.cast((" & " if every_word else " | ").join(words), sa.Text),
        )
        vector: sa.ColumnElement[Any] = sa.literal_column("sessions_memory.search_vector")
        rank = sa.func.ts_rank(vector, tsquery)
        query = (
            sa.select(memory, rank.label("text_rank"))
            .where(vector.op("@@")(tsquery))
            .where(*filters.where(scope))
            .order_by(rank.desc())
            .limit(pool)
        )
    return [(row, float(row.text_rank)) for row in (await conn.execute(query)).all()]


async def ranked(
    gateway: GatewayContext,
    config: SessionsConfig,
    scope: Scope,
    query: str,
    filters: Filters,
    limit: int,
) -> list[tuple[Any, float]]:
    """The ``limit`` best entries for ``query`` with their blended score, best first."""
    words = terms(query)
    rankers = _rankers(gateway)
    async with gateway.store.read() as conn:
        # Entries with every word first: a query with a common word ORed in would rank
        # most of the store; only when they are too few do entries with some words come.
        pool = config.candidate_pool
        matches = await text_matches(conn, scope, words, filters, pool, every_word=True)
        if len(matches) < limit and len(words) > 1:
            seen = {row.n for row, _ in matches}
            some = await text_matches(conn, scope, words, filters, pool)
            matches += [(row, rank) for row, rank in some if row.n not in seen][
                : pool - len(matches)
            ]
        if rankers:
            seen = {row.n for row, _ in matches}
            extra = await latest(conn, scope, filters, config.candidate_pool, False)
            matches += [(row, 0.0) for row in extra if row.n not in seen]
    if not matches:
        return []
    best = max(rank for _, rank in matches) or 1.0
    now = now_ms()
    scores = []
    for row, rank in matches:
        age_days = max(0, now - row.updated_ms) / _DAY_MS
        recency = 0.5 ** (age_days / config.recency_half_life_days)
        scores.append(
            config.text_weight * (rank / best)
            + config.importance_weight * row.importance
            + config.recency_weight * recency
        )
    if rankers:
        candidates = [
            MemoryCandidate(
                entry_id=row.entry_id,
                session_id=row.session_id,
                text=row.search_text,
                memory_type=row.memory_type,
                importance=row.importance,
                text_rank=rank / best,
            )
            for row, rank in matches
        ]
        for ranker in rankers:
            extra_scores = await ranker.score(query, candidates)
            if extra_scores is None:
                continue
            for i, value in enumerate(list(extra_scores)[: len(scores)]):
                scores[i] += config.ranker_weight * float(value)
    order = sorted(range(len(matches)), key=lambda i: (-scores[i], -matches[i][0].updated_ms))
    return [(matches[i][0], round(scores[i], 6)) for i in order[:limit]]


def _rankers(gateway: GatewayContext) -> list[Any]:
    registry = gateway.registries.get(RANKERS)
    return [registry[name] for name in registry] if registry is not None else []
