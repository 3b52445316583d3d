"""The channels plugin's tables: each channel's lifecycle state, and the messages that
went through a channel (inbound and outbound)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from host.api import Migration, Store, now_ms
from plugins.channels.contract import ChannelState

NAMESPACE = "channels"
metadata = sa.MetaData()

states = sa.Table(
    "channels_state",
    metadata,
    sa.Column("channel", sa.String(100), primary_key=True),
    sa.Column("running", sa.Boolean, nullable=False),
    sa.Column("logged_in", sa.Boolean, nullable=False),
    sa.Column("detail", sa.JSON, nullable=False),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=True),
)
messages = sa.Table(
    "channels_messages",
    metadata,
    sa.Column("n", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("channel", sa.String(100), nullable=False),
    sa.Column("direction", sa.String(10), nullable=False),  # in | out
    sa.Column("session_key", sa.String(200), nullable=False),
    sa.Column("delivery", sa.String(200), nullable=True),
    sa.Column("status", sa.String(40), nullable=False),
    sa.Column("body", sa.JSON, nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False, index=True),
)
MIGRATIONS = (
    Migration.create_tables(NAMESPACE, 1, "channel states and messages", [states, messages]),
)


async def load(store: Store, channel: str) -> ChannelState:
    async with store.read() as conn:
        row = (await conn.execute(sa.select(states).where(states.c.channel == channel))).first()
    if row is None:
        return ChannelState()
    return ChannelState(row.running, row.logged_in, row.detail, row.updated_ms, row.updated_by)


async def save(store: Store, channel: str, state: ChannelState) -> None:
    values = {
        "channel": channel,
        "running": state.running,
        "logged_in": state.logged_in,
        "detail": state.detail,
        "updated_ms": state.updated_ms or now_ms(),
        "updated_by": state.updated_by,
    }
    async with store.write() as conn:
        await conn.execute(store.dialect.upsert(states, ["channel"], values))


async def record_message(store: Store, **values: Any) -> None:
    async with store.write() as conn:
        await conn.execute(messages.insert().values(created_ms=now_ms(), **values))
