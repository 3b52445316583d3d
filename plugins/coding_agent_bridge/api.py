"""What the bridge's routes call: sessions, progress events, the follow-up queue.

Every change is one write transaction that checks the session's state in the same
transaction (so nothing is appended to a closed session, whichever process closed it)
and writes the event that reports it there too; live subscribers are woken after the
commit. Draining claims the oldest queued follow-ups with the store's claim (``FOR UPDATE
SKIP LOCKED`` on PostgreSQL, the write lock on SQLite) and marks them drained in the same
transaction: each follow-up is handed out once, whatever number of processes drain.
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from quart import Quart
from sqlalchemy.ext.asyncio import AsyncConnection

from host.api import (
    Event,
    GatewayContext,
    GatewayError,
    Principal,
    context,
    now_ms,
    owned_by,
    owner_key,
    require_owner,
)
from plugins.coding_agent_bridge.config import BridgeConfig
from plugins.coding_agent_bridge.gates import GATE_ACT_ALL, GATE_READ_ALL
from plugins.coding_agent_bridge.models import (
    BridgeSession,
    DrainResponse,
    Followup,
    ProgressEvent,
)
from plugins.coding_agent_bridge.tables import followups, sessions

CONFIG_KEY = "coding_agent_bridge.config"
END_EVENTS = frozenset({"session.closed", "session.expired"})


def stream_of(session_id: str) -> str:
    return f"bridge:{session_id}"


def not_found(session_id: str) -> GatewayError:
    return GatewayError(404, "session_not_found", f"no bridge session {session_id!r}")


def closed(session_id: str, state: str) -> GatewayError:
    return GatewayError(
        409, "session_closed", f"bridge session {session_id!r} is {state}: it takes nothing more"
    )


class BridgeAPI:
    def __init__(self, app: Quart) -> None:
        self.app = app

    @property
    def gateway(self) -> GatewayContext:
        return context(self.app)

    @property
    def config(self) -> BridgeConfig:
        found: BridgeConfig = self.gateway.extras.get(CONFIG_KEY) or BridgeConfig()
        return found

    # -- reading ------------------------------------------------------------------------

    async def _row(self, conn: AsyncConnection, session_id: str, lock: bool = False) -> Any:
        stmt = sa.select(sessions).where(sessions.c.id == session_id)
        if lock:
            stmt = self.gateway.store.dialect.lock(stmt)
        row = (await conn.execute(stmt)).first()
        if row is None:
            raise not_found(session_id)
        return row

    async def _record(self, conn: AsyncConnection, row: Any, reused: bool = False) -> BridgeSession:
        queued = (
            await conn.execute(
                sa.select(sa.func.count())
                .select_from(followups)
                .where(followups.c.session_id == row.id, followups.c.status == "queued")
            )
        ).scalar_one()
        return BridgeSession(
            session_id=row.id,
            workspace=row.workspace,
            agent=row.agent,
            agent_session_id=row.agent_session_id,
            state=row.state,
            owner=row.owner,
            created_by=row.created_by,
            metadata=row.metadata,
            created_ms=row.created_ms,
            last_seen_ms=row.last_seen_ms,
            closed_ms=row.closed_ms,
            close_reason=row.close_reason,
            followups_queued=int(queued),
            reused=reused,
        )

    async def _seq(self, record: BridgeSession) -> BridgeSession:
        """``record`` with its stream's last seq: read after the caller's connection is
        back in the pool (holding one while asking for another starves the pool when many
        requests do it at once)."""
        last = await self.gateway.store.last_seq(stream_of(record.session_id))
        return record.model_copy(update={"last_event_seq": last})

    async def get(self, session_id: str, reader: Principal | None) -> BridgeSession:
        """404 ``session_not_found``, also for another principal's session (``reader``
        None: the gateway itself)."""
        async with self.gateway.store.read() as conn:
            row = await self._row(conn, session_id)
            if reader is not None:
                require_owner(
                    reader, row.owner, read_all=GATE_READ_ALL, not_found=not_found(session_id)
                )
            record = await self._record(conn, row)
        return await self._seq(record)

    async def list_sessions(
        self, reader: Principal, state: str | None, limit: int
    ) -> list[BridgeSession]:
        stmt = (
            sa.select(sessions)
            .where(owned_by(sessions.c.owner, reader, GATE_READ_ALL))
            .order_by(sessions.c.created_ms.desc())
            .limit(limit)
        )
        if state is not None:
            stmt = stmt.where(sessions.c.state == state)
        async with self.gateway.store.read() as conn:
            rows = (await conn.execute(stmt)).all()
            records = [await self._record(conn, row) for row in rows]
        return [await self._seq(r) for r in records]

    async def readable(self, session_id: str, reader: Principal) -> None:
        await self.get(session_id, reader)

    # -- opening ------------------------------------------------------------------------

    async def find_open(self, workspace: str, principal: Principal) -> BridgeSession | None:
        """The caller's open session for ``workspace`` (its last-seen time is touched)."""
        store = self.gateway.store
        async with store.write() as conn:
            await store.dialect.serialize(conn, "bridge-open")
            row = await self._open_for(conn, workspace, owner_key(principal))
            if row is None:
                return None
            await conn.execute(
                sessions.update().where(sessions.c.id == row.id).values(last_seen_ms=now_ms())
            )
            record = await self._record(conn, await self._row(conn, row.id), reused=True)
        return await self._seq(record)

    async def _open_for(self, conn: AsyncConnection, workspace: str, owner: str) -> Any:
        stmt = sa.select(sessions).where(
            sessions.c.workspace == workspace,
            sessions.c.owner == owner,
            sessions.c.state == "open",
        )
        return (await conn.execute(stmt.order_by(sessions.c.created_ms).limit(1))).first()

    async def open(
        self,
        workspace: str,
        principal: Principal,
        metadata: dict[str, Any] | None,
        agent: str | None = None,
        agent_session_id: str | None = None,
    ) -> BridgeSession:
        """Open a session for ``workspace``, or reuse the caller's open one (``reused``);
        409 ``too_many_sessions`` at ``max_open_sessions``. Opening and the check are one
        step under a named lock, so two concurrent opens of one workspace make one
        session."""
        store, owner, ts = self.gateway.store, owner_key(principal), now_ms()
        event: Event | None = None
        async with store.write() as conn:
            await store.dialect.serialize(conn, "bridge-open")
            found = await self._open_for(conn, workspace, owner)
            if found is not None:
                await conn.execute(
                    sessions.update().where(sessions.c.id == found.id).values(last_seen_ms=ts)
                )
                record = await self._record(conn, await self._row(conn, found.id), reused=True)
            else:
                session_id = await self._insert(conn, workspace, principal, metadata, agent, ts)
                data = {"workspace": workspace, "agent": agent}
                data["agent_session_id"] = agent_session_id
                if agent_session_id is not None:
                    await conn.execute(
                        sessions.update()
                        .where(sessions.c.id == session_id)
                        .values(agent_session_id=agent_session_id)
                    )
                event = await store.append_event(
                    stream_of(session_id), "session.opened", data, conn
                )
                record = await self._record(conn, await self._row(conn, session_id))
        if event is not None:
            await self.gateway.hub.notify(event)
        return await self._seq(record)

    async def _insert(
        self,
        conn: AsyncConnection,
        workspace: str,
        principal: Principal,
        metadata: dict[str, Any] | None,
        agent: str | None,
        ts: int,
    ) -> str:
        """Insert an open session; 409 ``too_many_sessions`` at ``max_open_sessions``."""
        count = (
            await conn.execute(
                sa.select(sa.func.count()).select_from(sessions).where(sessions.c.state == "open")
            )
        ).scalar_one()
        maximum = self.config.max_open_sessions
        if count >= maximum:
            raise GatewayError(
                409,
                "too_many_sessions",
                f"{count} bridge sessions are open, the most allowed "
                f"(plugins.coding_agent_bridge.max_open_sessions = {maximum}); close or "
                "reap one first",
            )
        session_id = "bcs_" + uuid.uuid4().hex
        await conn.execute(
            sessions.insert().values(
                id=session_id,
                workspace=workspace,
                agent=agent,
                state="open",
                owner=owner_key(principal),
                created_by=principal.name,
                metadata=metadata,
                created_ms=ts,
                last_seen_ms=ts,
            )
        )
        return session_id

    # -- appending ----------------------------------------------------------------------

    async def _acting(
        self, conn: AsyncConnection, session_id: str, principal: Principal | None
    ) -> Any:
        """The session's row, locked; 404 unknown (or unreadable), 403 without the right
        to act, 409 ``session_closed`` unless open."""
        row = await self._row(conn, session_id, lock=True)
        if principal is not None:
            require_owner(
                principal,
                row.owner,
                read_all=GATE_READ_ALL,
                act_all=GATE_ACT_ALL,
                not_found=not_found(session_id),
                action="acting on another principal's bridge session",
            )
        if row.state != "open":
            raise closed(session_id, row.state)
        return row

    async def progress(
        self, session_id: str, principal: Principal | None, type_: str, data: dict[str, Any]
    ) -> ProgressEvent:
        """Append an event to an open session's stream (``principal`` None: the gateway
        itself, for an ACP agent's updates)."""
        store = self.gateway.store
        async with store.write() as conn:
            await self._acting(conn, session_id, principal)
            await conn.execute(
                sessions.update().where(sessions.c.id == session_id).values(last_seen_ms=now_ms())
            )
            event = await store.append_event(stream_of(session_id), type_, data, conn)
        await self.gateway.hub.notify(event)
        return _progress(session_id, event)

    async def queue(self, session_id: str, principal: Principal, text: str) -> tuple[Followup, int]:
        """Queue a follow-up; 409 ``session_closed``, 409 ``too_many_followups`` past
        ``max_followups_per_session``. Returns it and how many wait now."""
        store, ts = self.gateway.store, now_ms()
        async with store.write() as conn:
            row = await self._acting(conn, session_id, principal)
            waiting = await self._queued(conn, session_id)
            maximum = self.config.max_followups_per_session
            if waiting >= maximum:
                raise GatewayError(
                    409,
                    "too_many_followups",
                    f"{waiting} follow-ups wait in this session, the most allowed "
                    f"(plugins.coding_agent_bridge.max_followups_per_session = {maximum})",
                )
            values = {
                "id": "fup_" + uuid.uuid4().hex,
                "session_id": session_id,
                "text": text,
                "status": "queued",
                "created_by": principal.name,
                "created_ms": ts,
            }
            await conn.execute(followups.insert().values(**values))
            await conn.execute(
                sessions.update().where(sessions.c.id == row.id).values(last_seen_ms=ts)
            )
            data = {"followup_id": values["id"], "text": text}
            event = await store.append_event(stream_of(session_id), "followup.queued", data, conn)
        await self.gateway.hub.notify(event)
        return Followup(**values), waiting + 1

    async def _queued(self, conn: AsyncConnection, session_id: str) -> int:
        query = (
            sa.select(sa.func.count())
            .select_from(followups)
            .where(followups.c.session_id == session_id, followups.c.status == "queued")
        )
        return int((await conn.execute(query)).scalar_one())

    async def drain(
        self, session_id: str, principal: Principal | None, limit: int, by: str
    ) -> DrainResponse:
        """Hand over up to ``limit`` queued follow-ups, oldest first, each once."""
        store, ts = self.gateway.store, now_ms()
        async with store.write() as conn:
            await self._acting(conn, session_id, principal)
            claim = store.dialect.claim(
                sa.select(followups)
                .where(followups.c.session_id == session_id, followups.c.status == "queued")
                .order_by(followups.c.n)
                .limit(limit)
            )
            rows = (await conn.execute(claim)).all()
            ids = [r.id for r in rows]
            event: Event | None = None
            if ids:
                await conn.execute(
                    followups.update()
                    .where(followups.c.id.in_(ids), followups.c.status == "queued")
                    .values(status="drained", drained_ms=ts, drained_by=by)
                )
                await conn.execute(
                    sessions.update().where(sessions.c.id == session_id).values(last_seen_ms=ts)
                )
                data = {"followup_ids": ids, "by": by}
                event = await store.append_event(
                    stream_of(session_id), "followup.drained", data, conn
                )
            remaining = await self._queued(conn, session_id)
        if event is not None:
            await self.gateway.hub.notify(event)
        handed = [
            Followup(
                **{k: v for k, v in r._mapping.items() if k in Followup.model_fields},
            ).model_copy(update={"status": "drained", "drained_ms": ts, "drained_by": by})
            for r in rows
        ]
        return DrainResponse(session_id=session_id, followups=handed, remaining=remaining)

    async def requeue(self, followup_id: str) -> None:
        """Put a follow-up handed to an ACP agent that could not take it back in the
        queue, in its place (the oldest first)."""
        async with self.gateway.store.write() as conn:
            await conn.execute(
                followups.update()
                .where(followups.c.id == followup_id)
                .values(status="queued", drained_ms=None, drained_by=None)
            )

    # -- ending -------------------------------------------------------------------------

    async def end(
        self, session_id: str, principal: Principal | None, state: str, reason: str | None
    ) -> tuple[BridgeSession, bool]:
        """Close (``closed``) or expire (``expired``) a session; an ended session is
        answered as it is (False: nothing changed)."""
        store, ts = self.gateway.store, now_ms()
        async with store.write() as conn:
            row = await self._row(conn, session_id, lock=True)
            if principal is not None:
                require_owner(
                    principal,
                    row.owner,
                    read_all=GATE_READ_ALL,
                    act_all=GATE_ACT_ALL,
                    not_found=not_found(session_id),
                    action="closing another principal's bridge session",
                )
            event: Event | None = None
            if row.state == "open":
                await conn.execute(
                    sessions.update()
                    .where(sessions.c.id == session_id)
                    .values(state=state, closed_ms=ts, close_reason=reason)
                )
                data = {"reason": reason, "by": principal.name if principal else None}
                stream = stream_of(session_id)
                event = await store.append_event(stream, f"session.{state}", data, conn)
            record = await self._record(conn, await self._row(conn, session_id))
        if event is not None:
            await self.gateway.hub.notify(event)
        return await self._seq(record), event is not None

    async def idle_sessions(self, principal: Principal, idle_seconds: float) -> list[str]:
        """Ids of the open sessions idle for ``idle_seconds`` that ``principal`` may act on
        (its own; everyone's with the act-all gate)."""
        cutoff = now_ms() - int(idle_seconds * 1000)
        stmt = sa.select(sessions.c.id).where(
            sessions.c.state == "open",
            sessions.c.last_seen_ms <= cutoff,
            owned_by(sessions.c.owner, principal, GATE_ACT_ALL),
        )
        async with self.gateway.store.read() as conn:
            return list((await conn.execute(stmt.order_by(sessions.c.created_ms))).scalars().all())

    async def agent_backed(self) -> list[tuple[str, str]]:
        """``(session id, agent session id)`` of the open sessions an ACP agent serves."""
        stmt = sa.select(sessions.c.id, sessions.c.agent_session_id).where(
            sessions.c.state == "open", sessions.c.agent_session_id.is_not(None)
        )
        async with self.gateway.store.read() as conn:
            return [(r.id, r.agent_session_id) for r in (await conn.execute(stmt)).all()]


def _progress(session_id: str, event: Event) -> ProgressEvent:
    return ProgressEvent(
        session_id=session_id, seq=event.seq, type=event.type, ts_ms=event.ts_ms, data=event.data
    )
