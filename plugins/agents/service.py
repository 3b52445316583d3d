"""Agent sessions: the gateway's record of each ACP session, the agent processes of this
gateway process, and what the routes, the bridge and the pipeline step call (the
``AgentSessions`` service, ``contract.py``).

A session's events go on its stream ``agent_session:<id>`` in the order they happened:
one lock per session orders the appends (the ACP package runs each notification in a
task of its own). Permission requests become approvals in the pipelines plugin's
approvals queue (``ApprovalQueue``) and go to the editor holding the session at
``/acp`` (``permissions.py``), unless the agent's policy answers them. A ``url`` agent
runs over WebSocket (``remote.py``) and is otherwise handled like a stdio one.

An agent process belongs to the gateway process that started it: a session whose
process is gone (the agent exited, the gateway restarted) is ``attached: false`` and is
started again, with ``session/load`` when the agent offers it, by ``resume`` or by its
next prompt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from quart import Quart
from sqlalchemy.ext.asyncio import AsyncConnection

from host.api import (
    Event,
    GatewayContext,
    GatewayError,
    Principal,
    context,
    has_service,
    now_ms,
    owned_by,
    require_owner,
    service,
)
from plugins.agents.config import AgentConfig, PluginConfig
from plugins.agents.errors import AgentStartError
from plugins.agents.gates import GATE_ACT_ALL, GATE_READ_ALL
from plugins.agents.models import AgentSession
from plugins.agents.permissions import Answer, Editor, ask_editor_only, race
from plugins.agents.tables import sessions
from plugins.agents.workspace import session_workspace
from plugins.pipelines.contract import ApprovalQueue

if TYPE_CHECKING:  # the runtimes import the ACP package: on the first agent, not at start
    from plugins.agents.runtime import AgentRuntime

log = logging.getLogger("gateway.agents")

SOURCE = "agent_session"
OPEN_STATES = ("active", "idle")
END_EVENTS = frozenset({"session.closed", "session.expired"})
Listener = Callable[[Event], Awaitable[None]]


def stream_of(session_id: str) -> str:
    return f"agent_session:{session_id}"


def not_found(session_id: str) -> GatewayError:
    return GatewayError(404, "session_not_found", f"no agent session {session_id!r}")


@dataclass(frozen=True)
class PromptOutcome:
    """How a prompt ended: the agent's stop reason and the text it answered."""

    session_id: str
    stop_reason: str
    text: str


def _choose(options: list[dict[str, Any]], allow: bool) -> str | None:
    kinds = ("allow_once", "allow_always") if allow else ("reject_once", "reject_always")
    for kind in kinds:
        for option in options:
            if option.get("kind") == kind:
                return str(option.get("optionId"))
    return None


class _Sink:
    """What one session's agent reports, turned into events and approvals."""

    def __init__(
        self, sessions_: AgentSessions, session_id: str, agent_id: str, row: dict[str, Any]
    ) -> None:
        self.sessions = sessions_
        self.session_id = session_id
        self.agent_id = agent_id
        self.owner = row.get("owner")
        self.run_id = row.get("run_id")
        self.runtime: AgentRuntime | None = None

    async def event(self, type_: str, data: dict[str, Any]) -> None:
        await self.sessions.publish(self.session_id, type_, data)

    async def permission(
        self, tool_call: dict[str, Any], options: list[dict[str, Any]]
    ) -> str | None:
        config = self.sessions.agents.get(self.agent_id)
        kind = tool_call.get("kind")
        base = {"tool_call": tool_call, "options": options}
        if config is not None and kind in config.auto_deny:
            await self.event("permission.resolved", {**base, "decision": "denied", "by": "policy"})
            return _choose(options, allow=False)
        if config is not None and kind in config.auto_approve:
            await self.event(
                "permission.resolved", {**base, "decision": "approved", "by": "policy"}
            )
            return _choose(options, allow=True)
        app = self.sessions.app
        has_queue = has_service(ApprovalQueue, app=app)
        timeout = config.permission_timeout_seconds if config is not None else 300.0
        policy = config.permissions if config is not None else "queue"
        editor = self.sessions.editors.get(self.session_id) if policy != "queue" else None
        if editor is not None and (policy == "editor" or not has_queue):
            await self.event("permission.requested", {**base, "asked": ["editor"]})
            answer = await ask_editor_only(editor, tool_call, options, timeout)
            if answer is not None:
                await self._resolved(answer, None)
                return answer.option
        if not has_queue:
            reason = "no approvals queue (the pipelines plugin is not running): refused"
            await self.event(
                "permission.resolved", {**base, "decision": "denied", "reason": reason}
            )
            return _choose(options, allow=False)
        queue = service(ApprovalQueue, app=app)
        title = tool_call.get("title") or tool_call.get("toolCallId") or "use a tool"
        approval_id = await queue.create(
            source=SOURCE,
            subject=self.session_id,
            message=f"agent {self.agent_id!r} asks: {title}",
            owner=self.owner,
            details={"agent": self.agent_id, **base},
            run_id=self.run_id,
        )
        if editor is not None and policy == "both":
            asked = {"approval_id": approval_id, "asked": ["queue", "editor"]}
            await self.event("permission.requested", {**base, **asked})
            answer = await race(
                queue,
                approval_id,
                editor,
                tool_call,
                options,
                timeout,
                lambda allow: _choose(options, allow=allow),
            )
            await self._resolved(answer, approval_id)
            return answer.option
        await self.event("permission.requested", {**base, "approval_id": approval_id})
        decision = await queue.wait(approval_id, timeout)
        answer = Answer(
            _choose(options, allow=decision.approved),
            decision.status,
            "queue",
            decision.approver,
            decision.reason,
        )
        await self._resolved(answer, approval_id)
        return answer.option

    async def _resolved(self, answer: Answer, approval_id: str | None) -> None:
        outcome = "success" if answer.decision == "approved" else "refused"
        await self.event(
            "permission.resolved",
            {
                "approval_id": approval_id,
                "decision": answer.decision,
                "by": answer.by,
                "approver": answer.approver,
                "reason": answer.reason,
                "audit": {
                    "action": "agent.permission",
                    "target": self.session_id,
                    "outcome": outcome,
                    "reason_code": None if outcome == "success" else answer.decision,
                    "actor": answer.approver,
                },
            },
        )

    def exited(self, returncode: int | None, stderr: str) -> None:
        self.sessions.spawn(
            self.sessions.agent_exited(self.session_id, self.runtime, returncode, stderr)
        )


class AgentSessions:
    """Open, prompt, resume and close agent sessions (the ``AgentSessions`` service)."""

    def __init__(self, app: Quart, plugin: PluginConfig, agents: dict[str, AgentConfig]) -> None:
        self.app = app
        self.plugin = plugin
        self.agents = agents
        self.live: dict[str, AgentRuntime] = {}
        self.prompting: dict[str, asyncio.Task[str] | None] = {}
        self.listeners: dict[str, list[Listener]] = {}
        # The editors connected to sessions at /acp: asked the sessions' permissions.
        self.editors: dict[str, Editor] = {}
        self._order: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self.closing = False

    @property
    def gateway(self) -> GatewayContext:
        return context(self.app)

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settled(self, session_id: str) -> None:
        """Await the end of the session's running prompt, if one runs in this process
        (one that is still starting: a moment)."""
        if session_id not in self.prompting:
            return
        task = self.prompting.get(session_id)
        if task is None:
            await asyncio.sleep(0.1)
        else:
            await asyncio.wait([task])

    def agent_ids(self) -> list[str]:
        return sorted(self.agents)

    # -- events ---------------------------------------------------------------------------

    async def publish(self, session_id: str, type_: str, data: dict[str, Any]) -> Event:
        lock = self._order.setdefault(session_id, asyncio.Lock())
        async with lock:
            event = await self.gateway.hub.publish(stream_of(session_id), type_, data)
            await self._tell(session_id, event)
        return event

    async def _tell(self, session_id: str, event: Event) -> None:
        for listener in list(self.listeners.get(session_id, ())):
            try:
                await listener(event)
            except Exception:
                log.exception("listener of agent session %s failed", session_id)

    async def _transition(
        self,
        session_id: str,
        state: str,
        only_from: tuple[str, ...],
        type_: str,
        data: dict[str, Any],
        always: bool = True,
    ) -> bool:
        """Move the session to ``state`` (if it is in ``only_from``) and append the event
        that reports it in the same transaction, in the session's event order; with
        ``always`` the event is appended also when the state did not move."""
        store = self.gateway.store
        event: Event | None = None
        async with self._order.setdefault(session_id, asyncio.Lock()):
            async with store.write() as conn:
                changed = await conn.execute(
                    sessions.update()
                    .where(sessions.c.id == session_id, sessions.c.state.in_(only_from))
                    .values(state=state, last_seen_ms=now_ms())
                )
                moved = bool(changed.rowcount)
                if moved or always:
                    event = await store.append_event(stream_of(session_id), type_, data, conn)
            if event is not None:
                await self.gateway.hub.notify(event)
                await self._tell(session_id, event)
        return moved

    # -- records --------------------------------------------------------------------------

    async def _row(self, conn: AsyncConnection, session_id: str) -> Any:
        row = (await conn.execute(sa.select(sessions).where(sessions.c.id == session_id))).first()
        if row is None:
            raise not_found(session_id)
        return row

    def record(self, row: Any) -> AgentSession:
        runtime = self.live.get(row.id)
        return AgentSession(
            **{k: v for k, v in row._mapping.items() if k in AgentSession.model_fields},
            attached=runtime is not None and runtime.alive,
        )

    async def get(self, session_id: str, reader: Principal | None = None) -> AgentSession:
        async with self.gateway.store.read() as conn:
            row = await self._row(conn, session_id)
        if reader is not None:
            require_owner(
                reader, row.owner, read_all=GATE_READ_ALL, not_found=not_found(session_id)
            )
        return self.record(row)

    async def list_sessions(
        self, reader: Principal, state: str | None, agent: str | None, limit: int
    ) -> list[AgentSession]:
        stmt = (
            sa.select(sessions)
            .where(owned_by(sessions.c.owner, reader, GATE_READ_ALL))
            .order_by(sessions.c.created_ms.desc())
            .limit(limit)
        )
        if state is not None:
            stmt = stmt.where(sessions.c.state == state)
        if agent is not None:
            stmt = stmt.where(sessions.c.agent_id == agent)
        async with self.gateway.store.read() as conn:
            rows = (await conn.execute(stmt)).all()
        return [self.record(r) for r in rows]

    async def _acting(self, session_id: str, principal: Principal | None) -> Any:
        async with self.gateway.store.read() as conn:
            row = await self._row(conn, session_id)
        if principal is not None:
            require_owner(
                principal,
                row.owner,
                read_all=GATE_READ_ALL,
                act_all=GATE_ACT_ALL,
                not_found=not_found(session_id),
                action="acting on another principal's agent session",
            )
        return row

    def _config(self, agent_id: str) -> AgentConfig:
        config = self.agents.get(agent_id)
        if config is None:
            known = ", ".join(self.agent_ids()) or "none"
            raise GatewayError(
                404,
                "agent_not_found",
                f"no agent {agent_id!r} is configured ([agents.{agent_id}] in gateway.toml; "
                f"configured: {known})",
            )
        return config

    async def _live_config(self, agent_id: str) -> AgentConfig:
        """A deployed spec (the deploy plugin's kind ``acp``) wins over the configured
        one; a stopped agent is refused (409 ``agent_stopped``), on every replica alike."""
        from plugins.agents.deploy_kind import deployed

        return await deployed(self.app, agent_id) or self._config(agent_id)

    def _not_draining(self) -> None:
        if self.closing or self.gateway.hub.draining:
            raise GatewayError(503, "draining", "the gateway is shutting down")

    # -- opening --------------------------------------------------------------------------

    async def open(
        self,
        agent_id: str,
        *,
        owner: str | None,
        created_by: str | None,
        workspace: str | None = None,
        metadata: dict[str, Any] | None = None,
        run_id: str | None = None,
    ) -> AgentSession:
        """Start the agent and open a session in ``workspace`` (a folder of the agent's
        root). 404 ``agent_not_found``, 400 ``invalid_workspace``, 409
        ``too_many_sessions`` at the agent's ``max_sessions``, 502 ``agent_start_failed``
        when the agent cannot start or open its session: then nothing is stored and no
        process is left."""
        self._not_draining()
        config = await self._live_config(agent_id)
        settings = self.gateway.settings
        root = config.root(agent_id, settings.state_dir, settings.config_dir)
        try:
            folder = await asyncio.to_thread(session_workspace, root, workspace)
        except (ValueError, OSError) as exc:
            raise GatewayError(
                400, "invalid_workspace", f"workspace: {exc}", details={"param": "workspace"}
            ) from None
        async with self.gateway.store.read() as conn:
            await self._room(conn, agent_id, config)
        session_id = "ags_" + uuid.uuid4().hex
        values = {"owner": owner, "run_id": run_id}
        sink = _Sink(self, session_id, agent_id, values)
        from plugins.agents.remote import make_runtime

        runtime = make_runtime(agent_id, config, folder, sink)
        sink.runtime = runtime
        try:
            await runtime.start()
        except AgentStartError as exc:
            raise GatewayError(
                502, "agent_start_failed", f"agent {agent_id!r} could not start: {exc}"
            ) from None
        try:
            ts = now_ms()
            store = self.gateway.store
            async with store.write() as conn:
                await store.dialect.serialize(conn, f"agents-open:{agent_id}")
                await self._room(conn, agent_id, config)
                await conn.execute(
                    sessions.insert().values(
                        id=session_id,
                        agent_id=agent_id,
                        acp_session_id=runtime.acp_session_id,
                        workspace=str(folder),
                        state="idle",
                        owner=owner,
                        created_by=created_by,
                        run_id=run_id,
                        metadata=metadata,
                        created_ms=ts,
                        last_seen_ms=ts,
                    )
                )
                data = {
                    "agent_id": agent_id,
                    "workspace": str(folder),
                    "acp_session_id": runtime.acp_session_id,
                    **runtime.where(),
                }
                event = await store.append_event(
                    stream_of(session_id), "session.opened", data, conn
                )
                row = await self._row(conn, session_id)
        except BaseException:
            await runtime.stop()
            raise
        self.live[session_id] = runtime
        await self.gateway.hub.notify(event)
        return self.record(row)

    async def _room(self, conn: AsyncConnection, agent_id: str, config: AgentConfig) -> None:
        count = (
            await conn.execute(
                sa.select(sa.func.count())
                .select_from(sessions)
                .where(sessions.c.agent_id == agent_id, sessions.c.state.in_(OPEN_STATES))
            )
        ).scalar_one()
        if count >= config.max_sessions:
            raise GatewayError(
                409,
                "too_many_sessions",
                f"agent {agent_id!r} has {count} open sessions, the most allowed "
                f"(agents.{agent_id}.max_sessions = {config.max_sessions}); close or prune one",
            )

    async def _attach(self, row: Any) -> AgentRuntime:
        """Start the session's agent again (``session/load`` when the agent offers it)."""
        config = await self._live_config(row.agent_id)
        sink = _Sink(self, row.id, row.agent_id, {"owner": row.owner, "run_id": row.run_id})
        from plugins.agents.remote import make_runtime

        runtime = make_runtime(row.agent_id, config, Path(row.workspace), sink)
        sink.runtime = runtime
        try:
            await runtime.start(resume_id=row.acp_session_id)
        except AgentStartError as exc:
            raise GatewayError(
                502, "agent_start_failed", f"agent {row.agent_id!r} could not start: {exc}"
            ) from None
        self.live[row.id] = runtime
        async with self.gateway.store.write() as conn:
            await conn.execute(
                sessions.update()
                .where(sessions.c.id == row.id)
                .values(acp_session_id=runtime.acp_session_id, last_seen_ms=now_ms())
            )
        await self.publish(
            row.id,
            "session.resumed",
            {
                "acp_session_id": runtime.acp_session_id,
                "loaded": runtime.loaded,
                **runtime.where(),
            },
        )
        return runtime

    async def resume(self, session_id: str, principal: Principal | None) -> AgentSession:
        """Re-attach: start the agent again if its process is gone (it loads the session
        when it can); an attached session is answered as it is. 409 ``session_closed``."""
        self._not_draining()
        row = await self._acting(session_id, principal)
        _refuse_ended(row)
        runtime = self.live.get(session_id)
        if runtime is None or not runtime.alive:
            if session_id in self.prompting:
                raise _busy(session_id)
            self.prompting[session_id] = None  # no prompt may start while it attaches
            try:
                await self._attach(row)
            finally:
                self.prompting.pop(session_id, None)
        return await self.get(session_id)

    # -- prompting ------------------------------------------------------------------------

    async def start_prompt(
        self, session_id: str, text: str, principal: Principal | None
    ) -> tuple[asyncio.Task[str], int]:
        """Send ``text`` as the session's next prompt; returns the task that ends with the
        agent's stop reason and the stream position before it. 409 ``session_closed``,
        409 ``prompt_in_progress``; a detached session is attached first (502
        ``agent_start_failed`` if its agent cannot start)."""
        self._not_draining()
        row = await self._acting(session_id, principal)
        _refuse_ended(row)
        if session_id in self.prompting:
            raise _busy(session_id)
        self.prompting[session_id] = None
        try:
            runtime = self.live.get(session_id)
            if runtime is None or not runtime.alive:
                runtime = await self._attach(row)
            position = await self.gateway.store.last_seq(stream_of(session_id))
            started = {"text": text}
            if not await self._transition(
                session_id, "active", ("idle",), "prompt.started", started, always=False
            ):
                raise _busy(session_id)  # another gateway process prompts it (or closed it)
        except BaseException:
            self.prompting.pop(session_id, None)
            raise
        task = asyncio.create_task(self._run_prompt(session_id, runtime, text))
        # A prompt started over HTTP has no awaiter: its failure is its prompt.failed event.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        self.prompting[session_id] = task
        return task, position

    async def _run_prompt(self, session_id: str, runtime: AgentRuntime, text: str) -> str:
        try:
            stop_reason = await runtime.prompt(text)
        except BaseException as exc:
            if isinstance(exc, TimeoutError):
                error = f"the prompt took longer than {runtime.config.prompt_timeout_seconds:g} s"
            elif self.closing or runtime.stopping:
                error = "the session's agent was stopped"
            elif isinstance(exc, ConnectionError):
                error = getattr(runtime, "lost", None) or "the agent exited during the prompt"
            else:
                error = f"{type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):
                await self._transition(
                    session_id, "idle", ("active",), "prompt.failed", {"error": error}
                )
            self.prompting.pop(session_id, None)
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise GatewayError(502, "agent_prompt_failed", error) from None
        done = {"stop_reason": stop_reason}
        await self._transition(session_id, "idle", ("active",), "prompt.completed", done)
        self.prompting.pop(session_id, None)
        return stop_reason

    async def prompt(
        self, session_id: str, text: str, on_event: Listener | None = None
    ) -> PromptOutcome:
        """Send a prompt and await the agent's turn (for the bridge and the pipeline
        step); ``on_event`` sees each of the session's events meanwhile. GatewayError 502
        ``agent_prompt_failed`` when the agent fails or exits."""
        parts: list[str] = []

        async def listen(event: Event) -> None:
            update = event.data.get("update") or {}
            if (
                event.type == "session.update"
                and update.get("sessionUpdate") == "agent_message_chunk"
            ):
                content = update.get("content") or {}
                if content.get("type") == "text":
                    parts.append(str(content.get("text", "")))
            if on_event is not None:
                await on_event(event)

        self.listeners.setdefault(session_id, []).append(listen)
        try:
            task, _ = await self.start_prompt(session_id, text, None)
            stop_reason = await task
        finally:
            found = self.listeners.get(session_id, [])
            if listen in found:
                found.remove(listen)
        return PromptOutcome(session_id, stop_reason, "".join(parts))

    # -- ending ---------------------------------------------------------------------------

    async def close(
        self,
        session_id: str,
        principal: Principal | None = None,
        reason: str | None = None,
        state: str = "closed",
    ) -> AgentSession:
        """Stop the session's agent and mark it ``closed`` (or ``expired``); its pending
        permission requests are withdrawn. An ended session is answered as it is."""
        row = await self._acting(session_id, principal)
        if row.state not in OPEN_STATES:
            return self.record(row)
        # The process first: once the session reads closed, its agent no longer runs.
        await self._stop(session_id)
        ts = now_ms()
        store = self.gateway.store
        data = {"reason": reason, "by": principal.name if principal else None}
        event: Event | None = None
        # The state and the event that reports it in one transaction, in the session's
        # event order.
        async with self._order.setdefault(session_id, asyncio.Lock()):
            async with store.write() as conn:
                changed = await conn.execute(
                    sessions.update()
                    .where(sessions.c.id == session_id, sessions.c.state.in_(OPEN_STATES))
                    .values(state=state, closed_ms=ts, last_seen_ms=ts, close_reason=reason)
                )
                if changed.rowcount:
                    stream = stream_of(session_id)
                    event = await store.append_event(stream, f"session.{state}", data, conn)
            if event is not None:
                await self.gateway.hub.notify(event)
        if event is not None and has_service(ApprovalQueue, app=self.app):
            await service(ApprovalQueue, app=self.app).cancel_subject(
                SOURCE, session_id, f"the agent session was {state}"
            )
        return await self.get(session_id)

    async def _stop(self, session_id: str) -> None:
        runtime = self.live.pop(session_id, None)
        if runtime is not None:
            await runtime.stop()
        task = self.prompting.get(session_id)
        if task is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(task), 10)

    async def agent_exited(
        self, session_id: str, runtime: AgentRuntime | None, returncode: int | None, stderr: str
    ) -> None:
        """The agent's process ended on its own: the session stays open but detached."""
        if runtime is not None and self.live.get(session_id) is runtime:
            del self.live[session_id]
        with contextlib.suppress(Exception):
            data = {"returncode": returncode, "stderr": stderr[-2000:]}
            if lost := getattr(runtime, "lost", None):
                data["reason"] = lost
            await self.publish(session_id, "session.agent_exited", data)
            if has_service(ApprovalQueue, app=self.app):
                await service(ApprovalQueue, app=self.app).cancel_subject(
                    SOURCE, session_id, "the agent exited"
                )

    async def expire_idle(self, principal: Principal | None = None) -> list[str]:
        """Expire the idle sessions past their agent's ``idle_ttl_seconds`` (``principal``:
        only those it may act on)."""
        stmt = sa.select(sessions.c.id, sessions.c.agent_id, sessions.c.last_seen_ms).where(
            sessions.c.state == "idle"
        )
        if principal is not None:
            stmt = stmt.where(owned_by(sessions.c.owner, principal, GATE_ACT_ALL))
        async with self.gateway.store.read() as conn:
            rows = (await conn.execute(stmt)).all()
        now = now_ms()
        expired = []
        for row in rows:
            config = self.agents.get(row.agent_id)
            ttl = (
                config.idle_ttl_seconds
                if config is not None
                else AgentConfig.model_fields["idle_ttl_seconds"].default
            )
            if row.last_seen_ms + ttl * 1000 <= now and row.id not in self.prompting:
                record = await self.close(row.id, None, "idle past its TTL", state="expired")
                if record.state == "expired":
                    expired.append(row.id)
        return expired

    async def prune(
        self, principal: Principal, older_than_seconds: float | None
    ) -> tuple[list[str], list[str]]:
        """Expire idle sessions past their TTL, then remove the closed and expired ones
        (last active ``older_than_seconds`` ago, if given) with their events."""
        expired = await self.expire_idle(principal)
        stmt = sa.select(sessions.c.id).where(
            sessions.c.state.in_(("closed", "expired")),
            owned_by(sessions.c.owner, principal, GATE_ACT_ALL),
        )
        if older_than_seconds is not None:
            cutoff = now_ms() - int(older_than_seconds * 1000)
            stmt = stmt.where(sessions.c.last_seen_ms <= cutoff)
        store = self.gateway.store
        async with store.write() as conn:
            ids = list((await conn.execute(stmt.order_by(sessions.c.created_ms))).scalars().all())
            if ids:
                await conn.execute(sessions.delete().where(sessions.c.id.in_(ids)))
        await store.delete_streams([stream_of(i) for i in ids], 1000)
        for session_id in ids:
            self._order.pop(session_id, None)
        return ids, expired

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Sessions left ``active`` by a gateway that stopped mid-prompt are idle now."""
        async with self.gateway.store.read() as conn:
            stale = (
                (await conn.execute(sa.select(sessions.c.id).where(sessions.c.state == "active")))
                .scalars()
                .all()
            )
        for session_id in stale:
            error = {"error": "the gateway stopped during the prompt"}
            if await self._transition(
                session_id, "idle", ("active",), "prompt.failed", error, always=False
            ):
                if has_service(ApprovalQueue, app=self.app):
                    await service(ApprovalQueue, app=self.app).cancel_subject(
                        SOURCE, session_id, "the gateway stopped during the prompt"
                    )
        self._sweeper = asyncio.create_task(self._sweep(), name="agents-sweeper")

    async def _sweep(self) -> None:
        while not self.closing:
            await asyncio.sleep(self.plugin.sweep_seconds)
            try:
                await self.expire_idle()
                await self._stop_ended()
            except Exception:
                log.exception("expiring idle agent sessions failed")

    async def _stop_ended(self) -> None:
        """Stop the agents of sessions another gateway process closed or expired."""
        if not self.live:
            return
        stmt = sa.select(sessions.c.id).where(
            sessions.c.id.in_(list(self.live)), sessions.c.state.not_in(OPEN_STATES)
        )
        async with self.gateway.store.read() as conn:
            ended = (await conn.execute(stmt)).scalars().all()
        for session_id in ended:
            await self._stop(session_id)

    async def stop(self) -> None:
        """Stop every agent process of this gateway process (their sessions stay open,
        detached: a later gateway resumes them)."""
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(BaseException):
                await self._sweeper
        runtimes = list(self.live.values())
        self.live.clear()
        await asyncio.gather(*(r.stop() for r in runtimes), return_exceptions=True)
        prompts = [t for t in self.prompting.values() if t is not None]
        if prompts:
            await asyncio.wait(prompts, timeout=10)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)

    def pids(self) -> list[int]:
        """The agent processes running now (for status and tests)."""
        return [r.pid for r in self.live.values() if r.pid is not None and r.alive]


def _refuse_ended(row: Any) -> None:
    if row.state not in OPEN_STATES:
        raise GatewayError(
            409, "session_closed", f"agent session {row.id!r} is {row.state}: open a new one"
        )


def _busy(session_id: str) -> GatewayError:
    return GatewayError(
        409,
        "prompt_in_progress",
        f"agent session {session_id!r} is busy with a prompt: wait for prompt.completed",
    )


__all__ = ["AgentSessions", "PromptOutcome", "stream_of"]
