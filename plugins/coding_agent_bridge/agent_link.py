"""Bridge sessions served by an ACP agent the gateway runs (``agent`` at open): the
agents plugin's ``AgentSessions`` service opens the agent's session, each queued
follow-up is drained (claimed once, like any drain) and sent as the agent's next prompt,
and the agent's events are mirrored onto the bridge session's stream as ``agent.<type>``.

One dispatcher task per such session and gateway process sends its follow-ups one at a
time; a follow-up queued while a prompt runs waits for the next turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from quart import Quart

from host.api import Event, GatewayError, Principal, context, has_service, owner_key, service
from plugins.agents.contract import AGENT_GATE, AgentSessions
from plugins.coding_agent_bridge.api import BridgeAPI
from plugins.coding_agent_bridge.models import BridgeSession, OpenRequest

log = logging.getLogger("gateway.bridge")
DISPATCHER_KEY = "coding_agent_bridge.dispatcher"


def _agents(app: Quart) -> AgentSessions:
    return service(AgentSessions, app=app)  # 503 service_unavailable naming the plugin


async def open_with_agent(app: Quart, body: OpenRequest, principal: Principal) -> BridgeSession:
    """Reuse the caller's open session for the workspace, or start the agent and open one;
    if the agent cannot start nothing is stored (502 ``agent_start_failed``)."""
    api = BridgeAPI(app)
    found = await api.find_open(body.workspace, principal)
    if found is not None:
        return found
    assert body.agent is not None
    # Starting a process on the gateway's machine is the agents plugin's permission.
    context(app).auth.require_gate(principal, AGENT_GATE, "running an ACP agent")
    agents = _agents(app)
    opened = await agents.open(
        body.agent,
        owner=owner_key(principal),
        created_by=principal.name,
        workspace=body.workspace,
        metadata={"bridge": True, **(body.metadata or {})},
    )
    try:
        record = await api.open(
            body.workspace, principal, body.metadata, agent=body.agent, agent_session_id=opened.id
        )
    except BaseException:
        await agents.close(opened.id, None, "the bridge session was not opened")
        raise
    if record.agent_session_id != opened.id:  # another open of the workspace won the race
        await agents.close(opened.id, None, "the bridge session was reused")
    return record


async def stop(app: Quart, record: BridgeSession, reason: str) -> None:
    if record.agent_session_id is None or not has_service(AgentSessions, app=app):
        return
    with contextlib.suppress(GatewayError):
        await _agents(app).close(record.agent_session_id, None, reason)


def wake(app: Quart, session_id: str) -> None:
    dispatcher: Dispatcher | None = context(app).extras.get(DISPATCHER_KEY)
    if dispatcher is not None:
        dispatcher.wake(session_id)


class Dispatcher:
    def __init__(self, app: Quart) -> None:
        self.app = app
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.again: set[str] = set()
        self.stopping = False

    def wake(self, session_id: str) -> None:
        if self.stopping:
            return
        task = self.tasks.get(session_id)
        if task is not None and not task.done():
            self.again.add(session_id)
            return
        self.tasks[session_id] = asyncio.create_task(self._serve(session_id))

    async def _serve(self, session_id: str) -> None:
        api = BridgeAPI(self.app)
        try:
            while not self.stopping:
                self.again.discard(session_id)
                record = await api.get(session_id, None)
                if record.state != "open" or record.agent_session_id is None:
                    return
                # Someone prompts the agent directly: its turn first.
                await _agents(self.app).settled(record.agent_session_id)
                handed = await api.drain(session_id, None, 1, f"agent:{record.agent}")
                if not handed.followups:
                    if session_id in self.again:
                        continue
                    return
                await self._send(api, record, handed.followups[0].id, handed.followups[0].text)
        except GatewayError as exc:
            if exc.code not in ("session_closed", "session_not_found"):
                log.warning("bridge session %s: %s", session_id, exc.message)
        except Exception:
            log.exception("dispatching follow-ups of bridge session %s failed", session_id)

    async def _send(
        self, api: BridgeAPI, record: BridgeSession, followup_id: str, text: str
    ) -> None:
        session_id = record.session_id

        async def mirror(event: Event) -> None:
            data: dict[str, Any] = {"followup_id": followup_id, **event.data}
            with contextlib.suppress(GatewayError):
                await api.progress(session_id, None, f"agent.{event.type}", data)

        assert record.agent_session_id is not None
        try:
            await _agents(self.app).prompt(record.agent_session_id, text, on_event=mirror)
        except GatewayError as exc:
            data = {"followup_id": followup_id, "error": exc.message, "code": exc.code}
            with contextlib.suppress(GatewayError):
                await api.progress(session_id, None, "agent.followup_failed", data)
            if exc.code == "prompt_in_progress":
                # Someone prompted the agent just then: the follow-up goes back to the queue.
                await api.requeue(followup_id)
                self.again.add(session_id)
                await _agents(self.app).settled(record.agent_session_id)

    async def resume(self) -> None:
        """Send what was queued for the agent-served sessions while no gateway ran."""
        for session_id, _agent_session in await BridgeAPI(self.app).agent_backed():
            self.wake(session_id)

    async def stop(self) -> None:
        self.stopping = True
        tasks = [t for t in self.tasks.values() if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=10)
