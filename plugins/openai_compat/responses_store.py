"""Stored responses: the response object and the conversation it ends, so that
``previous_response_id`` continues a conversation across restarts."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from host.api import Migration, Store
from host.storage import now_ms

metadata = sa.MetaData()

responses = sa.Table(
    "openai_responses",
    metadata,
    sa.Column("id", sa.String(100), primary_key=True),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("conversation", sa.JSON, nullable=False),
    sa.Column("response", sa.JSON, nullable=False),
)

# The session key of a stored response (see conversations.py): a continuation keeps it.
response_sessions = sa.Table(
    "openai_response_sessions",
    metadata,
    sa.Column("response_id", sa.String(100), primary_key=True),
    sa.Column("session_key", sa.Text, nullable=False),
)

MIGRATIONS = (
    Migration.create_tables("openai_compat", 1, "stored responses", [responses]),
    Migration.create_tables("openai_compat", 2, "session keys", [response_sessions]),
)


async def save(
    store: Store,
    response: dict[str, Any],
    conversation: list[dict[str, Any]],
    session_key: str | None = None,
) -> None:
    async with store.write() as conn:
        await conn.execute(
            responses.insert().values(
                id=response["id"],
                created_ms=now_ms(),
                model=response["model"],
                conversation=conversation,
                response=response,
            )
        )
        if session_key is not None:
            await conn.execute(
                response_sessions.insert().values(
                    response_id=response["id"], session_key=session_key
                )
            )


async def session_key(store: Store, response_id: str) -> str | None:
    async with store.read() as conn:
        return (
            await conn.execute(
                sa.select(response_sessions.c.session_key).where(
                    response_sessions.c.response_id == response_id
                )
            )
        ).scalar()


async def load(
    store: Store, response_id: str
) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    async with store.read() as conn:
        row = (
            await conn.execute(
                sa.select(responses.c.response, responses.c.conversation).where(
                    responses.c.id == response_id
                )
            )
        ).first()
    return (row.response, row.conversation) if row is not None else None


async def delete(store: Store, response_id: str) -> bool:
    async with store.write() as conn:
        result = await conn.execute(responses.delete().where(responses.c.id == response_id))
        await conn.execute(
            response_sessions.delete().where(response_sessions.c.response_id == response_id)
        )
        return bool(result.rowcount)
