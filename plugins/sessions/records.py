"""Rows to records, and the text a message or an entry carries (for the size bound, the
safety scan and the search index)."""

from __future__ import annotations

from typing import Any

from plugins.sessions.models import (
    MemoryEntryRecord,
    MemoryEntryRequest,
    MemoryRelation,
    MemoryScope,
    MessageRecord,
    SessionSummary,
)


def message(row: Any) -> MessageRecord:
    return MessageRecord(
        id=row.id,
        seq=row.seq,
        parent_id=row.parent_id,
        role=row.role,
        content=row.content,
        metadata=row.metadata or {},
        created_ms=row.created_ms,
    )


def session(row: Any) -> SessionSummary:
    return SessionSummary(
        session_key=row.key,
        session_id=row.id,
        owner=row.owner,
        source=row.source,
        user=row.user,
        head_id=row.head_id,
        message_count=row.message_count,
        metadata=row.metadata or {},
        created_ms=row.created_ms,
        last_activity_ms=row.updated_ms,
    )


def entry(row: Any, session_key: str, score: float | None = None) -> MemoryEntryRecord:
    return MemoryEntryRecord(
        entry_id=row.entry_id,
        session_key=session_key,
        summary=row.summary,
        tags=list(row.tags or []),
        facts=list(row.facts or []),
        memory_type=row.memory_type,
        importance=row.importance,
        scope=MemoryScope(
            workspace_id=row.workspace_id, channel_id=row.channel_id, actor_id=row.actor_id
        ),
        relations=[MemoryRelation.model_validate(r) for r in row.relations or []],
        source_event_key=row.source_event_key,
        created_ms=row.created_ms,
        updated_ms=row.updated_ms,
        last_accessed_ms=row.last_accessed_ms,
        access_count=row.access_count,
        deleted_ms=row.deleted_ms,
        score=score,
    )


def entry_text(body: MemoryEntryRequest) -> str:
    """What full-text search indexes: the summary, the facts and the tags."""
    return "\n".join([body.summary, *body.facts, " ".join(body.tags)]).strip()


def tags_text(tags: list[str]) -> str:
    return "|" + "|".join(tags) + "|" if tags else ""


def flatten_content(content: Any) -> str:
    """A chat message's content as text: a string, or the text parts of a part list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict):
                text = part.get("text") or part.get("refusal")
                if isinstance(text, str):
                    parts.append(text)
            elif isinstance(part, str):
                parts.append(part)
        return "".join(parts)
    return str(content)
