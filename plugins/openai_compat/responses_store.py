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

MIGRATIONS = (Migration.create_tables("openai_compat", 1, "stored responses", [responses]),)


async def save(store: Store, response: dict[str, Any], conversation: list[dict[str, Any]]) -> None:
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
        return bool(result.rowcount)
