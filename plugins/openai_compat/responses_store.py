"""Stored responses: the response object and the conversation it ends, so that
``previous_response_id`` continues a conversation across restarts.

A response belongs to the principal that stored it (``Principal.key``, e.g.
``token:reader``; host/auth/ownership.py): every lookup filters on it, so another caller
finds nothing (404, never a 403 that would confirm the id). ``allow_responses_read_all``
reads everyone's (an operator's view) and ``allow_responses_act_all`` deletes them; no gate
continues another principal's chain (``previous_response_id``): a continuation would put
their conversation into the caller's own response, a copy that outlives their delete.
Rows stored before ownership (``owner`` NULL) are read, continued and deleted only by
holders of those gates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from host.api import Migration, Principal, Store, now_ms, owned_by, owner_key

GATE_READ_ALL = "allow_responses_read_all"
GATE_ACT_ALL = "allow_responses_act_all"

metadata = sa.MetaData()

responses = sa.Table(
    "openai_responses",
    metadata,
    sa.Column("id", sa.String(100), primary_key=True),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("conversation", sa.JSON, nullable=False),
    sa.Column("response", sa.JSON, nullable=False),
    # The storing principal's key; NULL on rows stored before migration 3.
    sa.Column("owner", sa.String(300), nullable=True),
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
    # Rows stored before it keep owner NULL.
    Migration(
        "openai_compat",
        3,
        "response owners",
        lambda conn: Migration.ensure_column(conn, responses.c.owner),
    ),
)


@dataclass(frozen=True)
class Owner:
    """The caller, for whom responses are stored and looked up."""

    principal: Principal

    @classmethod
    def of(cls, principal: Principal) -> Owner:
        return cls(principal)

    @property
    def key(self) -> str:
        return owner_key(self.principal)

    def readable(self) -> sa.ColumnElement[bool]:
        """Its own responses; every one with the read-all gate."""
        return owned_by(responses.c.owner, self.principal, GATE_READ_ALL)

    def continuable(self) -> sa.ColumnElement[bool]:
        """Its own responses, and with the read-all gate the ownerless ones (nobody's
        chain); never another principal's."""
        mine = responses.c.owner == self.key
        if self.principal.has_gate(GATE_READ_ALL):
            return sa.or_(mine, responses.c.owner.is_(None))
        return mine


async def save(
    store: Store,
    owner: Owner,
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
                owner=owner.key,
            )
        )
        if session_key is not None:
            await conn.execute(
                response_sessions.insert().values(
                    response_id=response["id"], session_key=session_key
                )
            )


def _continuable(owner: Owner, response_id: str) -> sa.ColumnElement[bool]:
    return sa.and_(responses.c.id == response_id, owner.continuable())


async def session_key(store: Store, owner: Owner, response_id: str) -> str | None:
    """The session key of the stored response ``response_id`` that ``owner`` may
    continue, if it has one."""
    joined = response_sessions.join(responses, responses.c.id == response_sessions.c.response_id)
    async with store.read() as conn:
        return (
            await conn.execute(
                sa.select(response_sessions.c.session_key)
                .select_from(joined)
                .where(_continuable(owner, response_id))
            )
        ).scalar()


async def load(
    store: Store, owner: Owner, response_id: str, *, to_continue: bool = False
) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """The stored response and its conversation, if ``owner`` may read it (or, with
    ``to_continue``, continue it); None otherwise."""
    visible = owner.continuable() if to_continue else owner.readable()
    async with store.read() as conn:
        row = (
            await conn.execute(
                sa.select(responses.c.response, responses.c.conversation).where(
                    responses.c.id == response_id, visible
                )
            )
        ).first()
    return (row.response, row.conversation) if row is not None else None


async def owner_of(store: Store, response_id: str) -> tuple[bool, str | None]:
    """``(stored, owner)`` of ``response_id``, for the caller to check access."""
    async with store.read() as conn:
        row = (
            await conn.execute(sa.select(responses.c.owner).where(responses.c.id == response_id))
        ).first()
    return (row is not None, row.owner if row is not None else None)


async def delete(store: Store, response_id: str) -> bool:
    """Delete the stored response (access checked by the caller); False if none."""
    async with store.write() as conn:
        result = await conn.execute(responses.delete().where(responses.c.id == response_id))
        if not result.rowcount:
            return False
        await conn.execute(
            response_sessions.delete().where(response_sessions.c.response_id == response_id)
        )
        return True


async def prune(
    store: Store,
    before_ms: int | None,
    keep: int | None,
    batch_size: int,
    dry_run: bool = False,
) -> int:
    """Remove the stored responses created before ``before_ms`` and those older than the
    newest ``keep`` (with their session keys); returns how many went (or would). Every
    stored response holds its whole conversation, so a later one that continued it from
    a removed one still works."""
    rules: list[sa.ColumnElement[bool]] = []
    if before_ms is not None:
        rules.append(responses.c.created_ms < before_ms)
    if keep is not None:
        async with store.read() as conn:
            newest_dropped = (
                await conn.execute(
                    sa.select(responses.c.created_ms, responses.c.id)
                    .order_by(responses.c.created_ms.desc(), responses.c.id.desc())
                    .limit(1)
                    .offset(keep)
                )
            ).first()
        if newest_dropped is not None:
            rules.append(
                sa.tuple_(responses.c.created_ms, responses.c.id)
                <= sa.tuple_(newest_dropped.created_ms, newest_dropped.id)
            )
    if not rules:
        return 0
    due = sa.or_(*rules)
    if dry_run:
        return await store.count_where(responses, due)
    # Session keys first: a prune cut short leaves responses, never orphaned keys.
    sessions = response_sessions.c.response_id.in_(sa.select(responses.c.id).where(due))
    await store.delete_batched(
        response_sessions, sessions, [response_sessions.c.response_id], batch_size
    )
    return await store.delete_batched(responses, due, [responses.c.id], batch_size)
