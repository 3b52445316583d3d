"""The sessions plugin's tables and their migrations (namespace ``sessions``).

A session is named by its key within its owner (``UNIQUE(owner, key)``): two principals
may each keep a session ``support``. Messages are append-only rows ordered by a
per-session ``seq`` (``UNIQUE(session_id, seq)``: an append that raced another would
fail rather than share a number). Memory entries carry ``search_text`` (summary, facts
and tags), indexed for full-text search by the store's own engine: an FTS5 table kept
in step by triggers on SQLite, a generated ``tsvector`` column with a GIN index on
PostgreSQL (``search.py`` queries either).
"""

from __future__ import annotations

import sqlalchemy as sa

from host.api import Migration

NAMESPACE = "sessions"
metadata = sa.MetaData()

sessions = sa.Table(
    "sessions_sessions",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("owner", sa.String(300), nullable=False),
    sa.Column("key", sa.String(128), nullable=False),
    sa.Column("source", sa.String(40), nullable=False),  # api, chat, responses, pipeline, ...
    sa.Column("user", sa.String(256), nullable=True),  # the end user a client named
    sa.Column("head_id", sa.String(32), nullable=True),
    sa.Column("next_seq", sa.Integer, nullable=False),
    sa.Column("message_count", sa.Integer, nullable=False),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("document", sa.Text, nullable=True),  # the free-text memory document
    sa.Column("document_updated_ms", sa.BigInteger, nullable=True),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("updated_ms", sa.BigInteger, nullable=False, index=True),  # last activity
    sa.UniqueConstraint("owner", "key", name="uq_sessions_owner_key"),
)

messages = sa.Table(
    "sessions_messages",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("session_id", sa.String(32), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("parent_id", sa.String(32), nullable=True),
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("session_id", "seq", name="uq_sessions_messages_seq"),
)

memory = sa.Table(
    "sessions_memory",
    metadata,
    # ``n`` is the FTS5 rowid on SQLite.
    sa.Column("n", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("session_id", sa.String(32), nullable=False),
    sa.Column("entry_id", sa.String(128), nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("tags", sa.JSON, nullable=False),
    # ``|a|b|``: a tag filter is a LIKE on it, portable and index-free.
    sa.Column("tags_text", sa.Text, nullable=False),
    sa.Column("facts", sa.JSON, nullable=False),
    sa.Column("memory_type", sa.String(20), nullable=False),
    sa.Column("importance", sa.Float, nullable=False),
    sa.Column("workspace_id", sa.String(128), nullable=True),
    sa.Column("channel_id", sa.String(128), nullable=True),
    sa.Column("actor_id", sa.String(128), nullable=True),
    sa.Column("relations", sa.JSON, nullable=False),
    sa.Column("source_event_key", sa.String(256), nullable=True),
    sa.Column("search_text", sa.Text, nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
    sa.Column("last_accessed_ms", sa.BigInteger, nullable=True),
    sa.Column("access_count", sa.Integer, nullable=False),
    sa.Column("deleted_ms", sa.BigInteger, nullable=True),
    sa.UniqueConstraint("session_id", "entry_id", name="uq_sessions_memory_entry"),
)

sa.Index("ix_sessions_messages_session", messages.c.session_id, messages.c.seq)
sa.Index("ix_sessions_memory_session", memory.c.session_id, memory.c.updated_ms)
sa.Index("ix_sessions_sessions_owner", sessions.c.owner, sessions.c.updated_ms)

_SQLITE_FTS = [
    "CREATE VIRTUAL TABLE IF NOT EXISTS sessions_memory_fts USING fts5("
    "search_text, content='sessions_memory', content_rowid='n', tokenize='porter unicode61')",
    "CREATE TRIGGER IF NOT EXISTS sessions_memory_ai AFTER INSERT ON sessions_memory BEGIN "
    "INSERT INTO sessions_memory_fts(rowid, search_text) VALUES (new.n, new.search_text); END",
    "CREATE TRIGGER IF NOT EXISTS sessions_memory_ad AFTER DELETE ON sessions_memory BEGIN "
    "INSERT INTO sessions_memory_fts(sessions_memory_fts, rowid, search_text) "
    "VALUES ('delete', old.n, old.search_text); END",
    "CREATE TRIGGER IF NOT EXISTS sessions_memory_au AFTER UPDATE OF search_text "
    "ON sessions_memory BEGIN "
    "INSERT INTO sessions_memory_fts(sessions_memory_fts, rowid, search_text) "
    "VALUES ('delete', old.n, old.search_text); "
    "INSERT INTO sessions_memory_fts(rowid, search_text) VALUES (new.n, new.search_text); END",
]

_POSTGRES_FTS = [
    "ALTER TABLE sessions_memory ADD COLUMN IF NOT EXISTS search_vector tsvector "
    "GENERATED ALWAYS AS (to_tsvector('english', search_text)) STORED",
    "CREATE INDEX IF NOT EXISTS ix_sessions_memory_fts ON sessions_memory "
    "USING GIN (search_vector)",
]


def _full_text(conn: sa.Connection) -> None:
    statements = _SQLITE_FTS if conn.dialect.name == "sqlite" else _POSTGRES_FTS
    for statement in statements:
        conn.execute(sa.text(statement))


MIGRATIONS: tuple[Migration, ...] = (
    Migration.create_tables(
        NAMESPACE, 1, "sessions, messages, memory entries", [sessions, messages, memory]
    ),
    Migration(NAMESPACE, 2, "memory full-text search (FTS5 / tsvector + GIN)", _full_text),
)
