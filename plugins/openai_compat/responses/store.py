"""Stored responses: the response object and the turn it adds to its conversation, so
that ``previous_response_id`` continues a conversation across restarts.

A chain is stored as links: each response keeps its own turn (the new input items and
its output) and the id of the response it continued, so every turn is stored once and a
chain grows linearly. Continuing walks the links back (one recursive query). Each row
carries its chain's length and bytes so far, for the caps (``chain_limits``), and the
id of its chain's first response, so retention removes whole chains, never the middle
of one. A deleted response that later turns link to is hidden but kept for them until
they go too. Rows stored before links (``chain_length`` NULL) hold their whole
conversation and still work.

A response belongs to the principal that stored it (``Principal.key``, e.g.
``token:reader``; host/auth/ownership.py): every lookup filters on it, so another caller
finds nothing (404, never a 403 that would confirm the id). ``allow_responses_read_all``
reads everyone's (an operator's view) and ``allow_responses_act_all`` deletes them; no gate
continues another principal's chain (``previous_response_id``): a continuation would put
their conversation into the caller's own response, a copy that outlives their delete.
Rows stored before ownership (``owner`` NULL) are read, continued and deleted only by
holders of those gates."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from host.api import Migration, Principal, Store, now_ms, owned_by, owner_key
from plugins.openai_compat.plugin_settings import bounded

# The caps of a chain (``[plugins.openai_compat]``): a continuation past one is a 400.
CHAIN_TURNS_SETTING = bounded(
    "responses_max_chain_turns", 100, 1, 10_000, "a whole number of responses", int
)
CHAIN_BYTES_SETTING = bounded(
    "responses_max_chain_bytes", 16 * 1024 * 1024, 65536, 1024**3, "a whole number of bytes", int
)

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
    # Links (migration 4); NULL on rows stored before, whose conversation is whole.
    sa.Column("previous_id", sa.String(100), nullable=True),
    sa.Column("chain_root", sa.String(100), nullable=True),
    sa.Column("chain_length", sa.Integer, nullable=True),
    sa.Column("chain_bytes", sa.BigInteger, nullable=True),
    sa.Column("deleted_ms", sa.BigInteger, nullable=True),
)

sa.Index("ix_openai_responses_previous_id", responses.c.previous_id)
sa.Index("ix_openai_responses_chain_root", responses.c.chain_root)

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
    Migration("openai_compat", 4, "response chains as links", lambda conn: _add_links(conn)),
)


def _add_links(conn: sa.Connection) -> None:
    for column in (
        responses.c.previous_id,
        responses.c.chain_root,
        responses.c.chain_length,
        responses.c.chain_bytes,
        responses.c.deleted_ms,
    ):
        Migration.ensure_column(conn, column)
    for index in responses.indexes:
        index.create(conn, checkfirst=True)


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
        return sa.and_(
            owned_by(responses.c.owner, self.principal, GATE_READ_ALL),
            responses.c.deleted_ms.is_(None),
        )

    def continuable(self) -> sa.ColumnElement[bool]:
        """Its own responses, and with the read-all gate the ownerless ones (nobody's
        chain); never another principal's."""
        mine: sa.ColumnElement[bool] = responses.c.owner == self.key
        if self.principal.has_gate(GATE_READ_ALL):
            mine = sa.or_(mine, responses.c.owner.is_(None))
        return sa.and_(mine, responses.c.deleted_ms.is_(None))


@dataclass(frozen=True)
class Chain:
    """A stored response to continue: its whole conversation, and its chain's size."""

    response_id: str
    conversation: list[dict[str, Any]]
    root: str
    length: int  # responses in the chain, this one included
    bytes: int  # of every turn stored in it


def turn_bytes(items: list[Any]) -> int:
    return len(json.dumps(items, separators=(",", ":"), default=str).encode())


async def save(
    store: Store,
    owner: Owner,
    response: dict[str, Any],
    turn: list[dict[str, Any]],
    session_key: str | None = None,
    previous: Chain | None = None,
) -> None:
    """Store ``response`` and its ``turn`` (the new input items and the output), linked
    to the ``previous`` response it continued."""
    size = turn_bytes(turn)
    async with store.write() as conn:
        await conn.execute(
            responses.insert().values(
                id=response["id"],
                created_ms=now_ms(),
                model=response["model"],
                conversation=turn,
                response=response,
                owner=owner.key,
                previous_id=previous.response_id if previous else None,
                chain_root=previous.root if previous else response["id"],
                chain_length=previous.length + 1 if previous else 1,
                chain_bytes=previous.bytes + size if previous else size,
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


async def load(store: Store, owner: Owner, response_id: str) -> dict[str, Any] | None:
    """The stored response, if ``owner`` may read it."""
    async with store.read() as conn:
        row = (
            await conn.execute(
                sa.select(responses.c.response).where(
                    responses.c.id == response_id, owner.readable()
                )
            )
        ).first()
    return row.response if row is not None else None


async def load_chain(store: Store, owner: Owner, response_id: str) -> Chain | None:
    """The conversation ``response_id`` ends, if ``owner`` may continue it: its turn
    and those it links back to, oldest first (None when it, or a link, is missing)."""
    r = responses.c
    start = (
        sa.select(r.id, r.previous_id, r.conversation, r.chain_length, r.chain_bytes, r.chain_root)
        .where(_continuable(owner, response_id))
        .cte("chain", recursive=True)
    )
    earlier = responses.alias("earlier")
    walk = start.union_all(
        sa.select(
            earlier.c.id,
            earlier.c.previous_id,
            earlier.c.conversation,
            earlier.c.chain_length,
            earlier.c.chain_bytes,
            earlier.c.chain_root,
        ).where(
            earlier.c.id == start.c.previous_id,
            # A row from before links holds its whole conversation: the walk ends there.
            start.c.chain_length.is_not(None),
        )
    )
    async with store.read() as conn:
        rows = (await conn.execute(sa.select(walk))).all()
    if not rows:
        return None
    by_id = {row.id: row for row in rows}
    turns: list[list[dict[str, Any]]] = []
    row = by_id[response_id]
    head = row
    while True:
        turns.append(row.conversation)
        if row.chain_length is None or row.previous_id is None:
            break
        found = by_id.get(row.previous_id)
        if found is None:
            return None  # a link is gone: the conversation cannot be rebuilt
        row = found
    conversation = [item for turn in reversed(turns) for item in turn]
    length = head.chain_length or 1
    size = head.chain_bytes if head.chain_bytes is not None else turn_bytes(conversation)
    return Chain(response_id, conversation, head.chain_root or response_id, length, size)


async def owner_of(store: Store, response_id: str) -> tuple[bool, str | None]:
    """``(stored, owner)`` of ``response_id``, for the caller to check access."""
    async with store.read() as conn:
        row = (
            await conn.execute(sa.select(responses.c.owner).where(responses.c.id == response_id))
        ).first()
    return (row is not None, row.owner if row is not None else None)


async def delete(store: Store, response_id: str) -> bool:
    """Delete the stored response (access checked by the caller); False if none. One
    that later turns link to is hidden, and goes with the last of them."""
    async with store.write() as conn:
        found = (
            await conn.execute(
                sa.select(responses.c.previous_id).where(
                    responses.c.id == response_id, responses.c.deleted_ms.is_(None)
                )
            )
        ).first()
        if found is None:
            return False
        await conn.execute(
            response_sessions.delete().where(response_sessions.c.response_id == response_id)
        )
        current: str | None = response_id
        while current is not None:
            if await _has_links(conn, current):
                await conn.execute(
                    responses.update().where(responses.c.id == current).values(deleted_ms=now_ms())
                )
                break
            parent = (
                await conn.execute(
                    sa.select(responses.c.previous_id).where(responses.c.id == current)
                )
            ).scalar()
            await conn.execute(responses.delete().where(responses.c.id == current))
            # An earlier response kept only for this one goes too.
            hidden = (
                await conn.execute(
                    sa.select(responses.c.id).where(
                        responses.c.id == parent, responses.c.deleted_ms.is_not(None)
                    )
                )
            ).scalar()
            current = hidden
        return True


async def _has_links(conn: Any, response_id: str) -> bool:
    found = await conn.execute(
        sa.select(responses.c.id).where(responses.c.previous_id == response_id).limit(1)
    )
    return found.first() is not None


async def prune(
    store: Store,
    before_ms: int | None,
    keep: int | None,
    batch_size: int,
    dry_run: bool = False,
) -> int:
    """Remove the chains of stored responses whose newest response was created before
    ``before_ms``, or is older than the newest ``keep`` responses (with their session
    keys); returns how many responses went (or would). A chain goes whole: a later turn
    never loses the turns it links to."""
    chain = sa.func.coalesce(responses.c.chain_root, responses.c.id)
    newest = sa.func.max(responses.c.created_ms)
    rules: list[sa.ColumnElement[bool]] = []
    if before_ms is not None:
        rules.append(newest < before_ms)
    if keep is not None:
        async with store.read() as conn:
            newest_dropped = (
                await conn.execute(
                    sa.select(responses.c.created_ms)
                    .order_by(responses.c.created_ms.desc(), responses.c.id.desc())
                    .limit(1)
                    .offset(keep)
                )
            ).first()
        if newest_dropped is not None:
            rules.append(newest <= newest_dropped.created_ms)
    if not rules:
        return 0
    due_chains = sa.select(chain).group_by(chain).having(sa.or_(*rules))
    due = chain.in_(due_chains)
    if dry_run:
        return await store.count_where(responses, due)
    # Session keys first: a prune cut short leaves responses, never orphaned keys.
    sessions = response_sessions.c.response_id.in_(sa.select(responses.c.id).where(due))
    await store.delete_batched(
        response_sessions, sessions, [response_sessions.c.response_id], batch_size
    )
    return await store.delete_batched(responses, due, [responses.c.id], batch_size)
