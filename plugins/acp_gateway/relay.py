"""The gateway as an ACP agent for one remote editor: what the editor's connection asks
(``initialize``, ``session/new``, ``session/load``, ``session/prompt``,
``session/cancel``, ``session/close``) is done through the agents plugin's
``AgentSessions`` service, so each session is an agent session like any other: recorded
with its event stream, its permission requests in the shared approvals queue and sent
to this editor (``[agents.<id>] permissions``, ``plugins/agents/permissions.py``; or
answered by the agent's policy), its files and terminals confined to its workspace.

On the way the prompt's text is scanned (stage ``agent_prompt``, as the agents plugin's
prompt route does) and the updates' text too (stage ``agent_update``), as one growing
text per kind with a held-back tail so that a match split over two updates is seen
whole before any of it is sent (``update_scan.py``): after a block nothing more of
that turn reaches the editor, the agent's turn is cancelled and the
prompt answers an error. An agent that exits ends the editor's connection with an error;
a dropped editor leaves its sessions open (resumable with ``session/load`` until their
agent's ``idle_ttl_seconds``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from acp import PROTOCOL_VERSION, RequestError
from acp.schema import (
    AgentCapabilities,
    AllowedOutcome,
    CloseSessionResponse,
    Implementation,
    InitializeResponse,
    LoadSessionResponse,
    NewSessionResponse,
    PermissionOption,
    PromptResponse,
    ResumeSessionResponse,
    SessionNotification,
    ToolCallUpdate,
)

from host.api import (
    GATEWAY_VERSION,
    Event,
    GatewayContext,
    GatewayError,
    Principal,
    owner_key,
    scan_text,
)
from plugins.acp_gateway.transport import CLOSE_AGENT_GONE
from plugins.acp_gateway.update_scan import Blocked, UpdateScan, active
from plugins.agents.contract import AgentSessions, Editor, stream_of

log = logging.getLogger("gateway.acp_gateway")

# JSON-RPC error codes of the gateway's refusals (the server-error range, -32000..-32099).
CODE_REFUSED = -32000
CODE_BLOCKED = -32001
CODE_AGENT_FAILED = -32002


class Link(Protocol):
    """The editor's side of a connection: a WebSocket (``transport.py``) or HTTP
    (``http_transport.py``)."""

    closed: bool
    asked: dict[tuple[str, str], Any]

    def end(self, code: int, reason: str) -> None: ...

    def end_after_error(self, code: int, reason: str) -> None: ...

    async def withdraw(self, session_id: str, tool_call_id: str) -> None: ...


def audit(
    action: str, target: str | None, actor: str, outcome: str = "success", reason: str | None = None
) -> dict[str, Any]:
    """The ``audit`` field the audit plugin turns into a record."""
    return {
        "action": action,
        "target": target,
        "outcome": outcome,
        "reason_code": reason,
        "actor": actor,
    }


def refusal(exc: GatewayError) -> RequestError:
    """A gateway error as the editor reads it: the gateway's code and status in ``data``."""
    code = CODE_AGENT_FAILED if exc.status >= 500 else CODE_REFUSED
    return RequestError(code, exc.message, {"code": exc.code, "status": exc.status})


class GatewayAgent:
    """One editor's connection, relayed to the agent ``agent_id`` (``acp.interfaces.Agent``)."""

    def __init__(
        self,
        gateway: GatewayContext,
        sessions: AgentSessions,
        principal: Principal,
        agent_id: str,
        connection_id: str,
        transport: Link,
    ) -> None:
        self.gateway = gateway
        self.sessions = sessions
        self.principal = principal
        self.agent_id = agent_id
        self.connection_id = connection_id
        self.transport = transport
        self.client: Any = None
        self.attached: dict[str, Any] = {}  # session id -> its listener
        self.blocked: set[str] = set()  # sessions whose running turn a safety block ended
        self.prompting: set[str] = set()
        self.scans: dict[str, UpdateScan] = {}  # session id -> the scan of its updates
        self.turns: set[str] = set()  # sessions whose turn runs (their updates may grow)
        self.asking: dict[str, Editor] = {}  # session id -> this editor, asked permissions

    def on_connect(self, conn: Any) -> None:
        self.client = conn

    # -- the audit trail ------------------------------------------------------------------

    async def record(self, session_id: str | None, type_: str, data: dict[str, Any]) -> None:
        """An event of this connection (on the session's stream when there is one)."""
        stream = stream_of(session_id) if session_id else f"acp_connection:{self.connection_id}"
        payload = {"connection_id": self.connection_id, "agent_id": self.agent_id, **data}
        await self.gateway.hub.publish(stream, type_, payload)

    # -- the agent interface --------------------------------------------------------------

    async def initialize(self, protocol_version: int, **kwargs: Any) -> InitializeResponse:
        return InitializeResponse(
            protocol_version=PROTOCOL_VERSION,
            agent_capabilities=AgentCapabilities(load_session=True),
            agent_info=Implementation(
                name="agent-gateway",
                title=f"agent-gateway: {self.agent_id}",
                version=GATEWAY_VERSION,
            ),
        )

    async def new_session(self, cwd: str, **kwargs: Any) -> NewSessionResponse:
        """Open an agent session in a workspace of the agent's root (the editor's ``cwd`` is
        a path on its own machine: kept as metadata, never used as a folder here)."""
        try:
            record = await self.sessions.open(
                self.agent_id,
                owner=owner_key(self.principal),
                created_by=self.principal.name,
                metadata={"via": "acp", "connection_id": self.connection_id, "editor_cwd": cwd},
            )
        except GatewayError as exc:
            await self.record(
                None,
                "acp.session_refused",
                {"error": exc.code, "audit": self._audit("acp.session.open", None, exc.code)},
            )
            raise refusal(exc) from None
        self._attach(record.id)
        await self.record(
            record.id,
            "acp.session_opened",
            {"audit": self._audit("acp.session.open", record.id)},
        )
        return NewSessionResponse(session_id=record.id)

    async def load_session(
        self, cwd: str, session_id: str, **kwargs: Any
    ) -> LoadSessionResponse | None:
        await self._resume(session_id)
        return LoadSessionResponse()

    async def resume_session(
        self, session_id: str, cwd: str, **kwargs: Any
    ) -> ResumeSessionResponse:
        await self._resume(session_id)
        return ResumeSessionResponse()

    async def _resume(self, session_id: str) -> None:
        """Re-attach a session of this principal (another's reads as not found), starting
        its agent again if it is gone; its updates come to this connection from now on."""
        try:
            record = await self.sessions.get(session_id, self.principal)
            if record.agent_id != self.agent_id:
                raise GatewayError(
                    404, "session_not_found", f"no agent session {session_id!r} of this agent"
                )
            self._attach(session_id)
            await self.sessions.resume(session_id, self.principal)
        except GatewayError as exc:
            self._detach(session_id)
            raise refusal(exc) from None
        await self.record(
            session_id,
            "acp.session_resumed",
            {"audit": self._audit("acp.session.resume", session_id)},
        )

    async def prompt(self, session_id: str, prompt: list[Any], **kwargs: Any) -> PromptResponse:
        if session_id not in self.attached:
            raise RequestError(
                CODE_REFUSED,
                f"session {session_id!r} is not open on this connection: session/load it first",
                {"code": "session_not_attached", "status": 409},
            )
        text = self._text_of(prompt)
        scan = await scan_text(
            self.gateway,
            text,
            "input",
            {"stage": "agent_prompt", "session_id": session_id, "surface": "acp"},
        )
        if scan.blocked:
            reasons = "; ".join(f["reason"] for f in scan.findings if f.get("reason")) or "blocked"
            raise RequestError(
                CODE_BLOCKED,
                f"the prompt was blocked: {reasons}",
                {"code": "content_blocked", "status": 400},
            )
        self.blocked.discard(session_id)
        self.prompting.add(session_id)
        try:
            task, _ = await self.sessions.start_prompt(session_id, scan.text, self.principal)
            # Shielded: an editor that drops mid-turn leaves the turn running; it ends
            # on the session's events and the session is loaded back afterwards.
            stop_reason = await asyncio.shield(task)
        except GatewayError as exc:
            raise refusal(exc) from None
        finally:
            self.prompting.discard(session_id)
        if session_id in self.blocked:
            raise RequestError(
                CODE_BLOCKED,
                "the agent's answer was blocked by the safety scan",
                {"code": "content_blocked", "status": 502},
            )
        return PromptResponse(stop_reason=stop_reason)

    async def cancel(self, session_id: str, **kwargs: Any) -> None:
        runtime = self.sessions.live.get(session_id)
        if session_id in self.attached and runtime is not None:
            await runtime.cancel()

    async def close_session(self, session_id: str, **kwargs: Any) -> CloseSessionResponse:
        try:
            await self.sessions.close(session_id, self.principal, "closed by the editor")
        except GatewayError as exc:
            raise refusal(exc) from None
        self._detach(session_id)
        return CloseSessionResponse()

    async def authenticate(self, method_id: str, **kwargs: Any) -> None:
        return None  # the connection was authenticated before it was accepted

    # -- relaying the agent's updates -----------------------------------------------------

    @staticmethod
    def _text_of(prompt: list[Any]) -> str:
        parts = []
        for block in prompt:
            if getattr(block, "type", None) != "text":
                raise RequestError.invalid_params(
                    {"message": "only text content blocks are relayed to gateway agents"}
                )
            parts.append(block.text)
        return "\n".join(parts)

    def _attach(self, session_id: str) -> None:
        if session_id in self.attached:
            return

        async def listen(event: Event) -> None:
            await self._relay(session_id, event)

        self.attached[session_id] = listen
        self.sessions.listeners.setdefault(session_id, []).append(listen)

        async def ask(tool_call: dict[str, Any], options: list[dict[str, Any]]) -> str | None:
            return await self._ask(session_id, tool_call, options)

        async def withdraw(tool_call: dict[str, Any]) -> None:
            await self.transport.withdraw(session_id, str(tool_call.get("toolCallId")))

        # The latest editor to attach a session is the one asked.
        editor = self.asking[session_id] = Editor(self.principal.name, ask, withdraw)
        self.sessions.editors[session_id] = editor

    async def _ask(
        self, session_id: str, tool_call: dict[str, Any], options: list[dict[str, Any]]
    ) -> str | None:
        """Ask the editor (``session/request_permission``): the option it chose, None
        when it cancelled; raises when it cannot answer (gone, or does not implement it)."""
        if self.client is None or self.transport.closed:
            raise ConnectionError("the editor is not connected")
        response = await self.client.request_permission(
            session_id=session_id,
            tool_call=ToolCallUpdate.model_validate(tool_call),
            options=[PermissionOption.model_validate(o) for o in options],
        )
        self.transport.asked.pop((session_id, str(tool_call.get("toolCallId"))), None)
        outcome = response.outcome
        offered = {str(o.get("optionId")) for o in options}
        if isinstance(outcome, AllowedOutcome) and outcome.option_id in offered:
            return outcome.option_id
        return None

    def _detach(self, session_id: str) -> None:
        mine = self.asking.pop(session_id, None)
        if mine is not None and self.sessions.editors.get(session_id) is mine:
            del self.sessions.editors[session_id]
        listen = self.attached.pop(session_id, None)
        found = self.sessions.listeners.get(session_id, [])
        if listen is not None and listen in found:
            found.remove(listen)

    def detach_all(self) -> None:
        for session_id in list(self.attached):
            self._detach(session_id)

    async def _relay(self, session_id: str, event: Event) -> None:
        if event.type == "session.agent_exited":
            self._agent_gone(session_id, event.data)
            return
        if self.client is None:
            return
        if event.type == "prompt.started":
            self.turns.add(session_id)
            return
        if event.type in ("prompt.completed", "prompt.failed"):
            self.turns.discard(session_id)
            await self._send(session_id, await self._scanned(session_id, None))
            return
        if event.type != "session.update" or session_id in self.blocked:
            return
        update = dict(event.data.get("update") or {})
        await self._send(session_id, await self._scanned(session_id, update))

    async def _send(self, session_id: str, updates: list[dict[str, Any]]) -> None:
        for update in updates:
            note = SessionNotification.model_validate({"sessionId": session_id, "update": update})
            try:
                await self.client.session_update(session_id=session_id, update=note.update)
            except Exception as exc:  # a dropped editor: the session goes on without it
                log.info("ACP connection %s: update not relayed: %s", self.connection_id, exc)
                return

    async def _scanned(
        self, session_id: str, update: dict[str, Any] | None
    ) -> list[dict[str, Any]]:
        """What of ``update`` may reach the editor now (``None``: the turn ended, release
        what is held); nothing, and the turn cancelled, once the scan blocks."""
        if session_id in self.blocked:
            return []
        if not active(self.gateway):
            return [update] if update is not None else []
        scan = self.scans.get(session_id)
        if scan is None:
            info = {"stage": "agent_update", "session_id": session_id, "surface": "acp"}
            scan = self.scans[session_id] = UpdateScan(self.gateway, info)
        try:
            out = await scan.feed(update) if update is not None else []
            if session_id not in self.turns:  # no more of it may follow: nothing is held
                out += await scan.finish()
        except Blocked:
            self.blocked.add(session_id)
            runtime = self.sessions.live.get(session_id)
            if runtime is not None:
                self.sessions.spawn(runtime.cancel())
            return []
        return out

    def _agent_gone(self, session_id: str, data: dict[str, Any]) -> None:
        if data.get("reason"):
            # A remote agent's connection dropped: the session's next prompt connects
            # again (a running prompt fails with the reason), the editor stays.
            return
        reason = f"agent {self.agent_id!r} exited (status {data.get('returncode')})"
        if session_id in self.prompting:
            self.transport.end_after_error(CLOSE_AGENT_GONE, reason)
        else:
            self.transport.end(CLOSE_AGENT_GONE, reason)

    def _audit(self, action: str, target: str | None, reason: str | None = None) -> dict[str, Any]:
        outcome = "success" if reason is None else "refused"
        return audit(action, target, self.principal.name, outcome, reason)
