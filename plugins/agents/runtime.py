"""One running ACP agent: the subprocess, the ACP connection to it (the
``agent-client-protocol`` package's client side), and the client methods the agent calls
back (session updates, permission requests, files, terminals).

What the agent does is reported to a :class:`Sink` (the session service), which turns it
into the session's events and approvals. The agent's files and terminals are confined to
the session's workspace (``workspace.py``). Stopping closes the agent's stdin, waits,
then terminates and kills it (the package's transport does that), and kills every
terminal's process group: nothing is left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Protocol, cast

from acp import (
    PROTOCOL_VERSION,
    Client,
    RequestError,
    spawn_agent_process,
    text_block,
)
from acp.schema import (
    AllowedOutcome,
    ClientCapabilities,
    CreateTerminalResponse,
    DeniedOutcome,
    EnvVariable,
    FileSystemCapabilities,
    Implementation,
    KillTerminalResponse,
    PermissionOption,
    ReadTextFileResponse,
    ReleaseTerminalResponse,
    RequestPermissionResponse,
    TerminalExitStatus,
    TerminalOutputResponse,
    ToolCallUpdate,
    WaitForTerminalExitResponse,
    WriteTextFileResponse,
)

from host.api import GATEWAY_VERSION
from plugins.agents.config import AgentConfig
from plugins.agents.errors import AgentStartError
from plugins.agents.workspace import OutsideWorkspace, confine

STDERR_TAIL = 4000
TERMINAL_OUTPUT_MAX = 1_000_000


class Sink(Protocol):
    async def event(self, type_: str, data: dict[str, Any]) -> None: ...

    async def permission(
        self, tool_call: dict[str, Any], options: list[dict[str, Any]]
    ) -> str | None: ...

    def exited(self, returncode: int | None, stderr: str) -> None: ...


def dump(model: Any) -> Any:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


class _Terminal:
    def __init__(self, proc: asyncio.subprocess.Process, limit: int) -> None:
        self.proc = proc
        self.limit = limit
        self.output = bytearray()
        self.truncated = False
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while chunk := await self.proc.stdout.read(65536):
            self.output += chunk
            if len(self.output) > self.limit:
                # Keep the end: what a command printed last says most about how it ended.
                del self.output[: len(self.output) - self.limit]
                self.truncated = True

    def status(self) -> TerminalExitStatus | None:
        code = self.proc.returncode
        if code is None:
            return None
        if code < 0:
            return TerminalExitStatus(exit_code=None, signal=signal.Signals(-code).name)
        return TerminalExitStatus(exit_code=code, signal=None)

    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    async def close(self) -> None:
        self.kill()
        with contextlib.suppress(Exception):
            await self.proc.wait()
        self.reader.cancel()
        with contextlib.suppress(BaseException):
            await self.reader


class GatewayClient:
    """The ACP client methods the agent calls (``acp.interfaces.Client``)."""

    def __init__(self, runtime: AgentRuntime) -> None:
        self.runtime = runtime

    @property
    def sink(self) -> Sink:
        return self.runtime.sink

    async def session_update(self, session_id: str, update: Any, **kwargs: Any) -> None:
        kind = getattr(update, "session_update", "unknown")
        await self.sink.event("session.update", {"kind": kind, "update": dump(update)})

    async def request_permission(
        self,
        session_id: str,
        tool_call: ToolCallUpdate,
        options: list[PermissionOption],
        **kwargs: Any,
    ) -> RequestPermissionResponse:
        chosen = await self.sink.permission(dump(tool_call), [dump(o) for o in options])
        if chosen is None:
            return RequestPermissionResponse(outcome=DeniedOutcome(outcome="cancelled"))
        return RequestPermissionResponse(
            outcome=AllowedOutcome(outcome="selected", option_id=chosen)
        )

    async def _confined(self, path: str, action: str) -> Path:
        try:
            return confine(self.runtime.workspace, path)
        except OutsideWorkspace as exc:
            await self.sink.event(
                "file.refused", {"path": path, "action": action, "reason": str(exc)}
            )
            raise RequestError.invalid_params({"path": path, "details": str(exc)}) from None

    def _shown(self, target: Path) -> str:
        return str(target.relative_to(self.runtime.workspace))

    async def read_text_file(
        self,
        session_id: str,
        path: str,
        line: int | None = None,
        limit: int | None = None,
        **kwargs: Any,
    ) -> ReadTextFileResponse:
        target = await self._confined(path, "read")
        try:
            text = await asyncio.to_thread(target.read_text, errors="replace")
        except OSError as exc:
            raise RequestError.resource_not_found(str(path)) from exc
        if line is not None or limit is not None:
            lines = text.splitlines(keepends=True)
            start = max((line or 1) - 1, 0)
            end = start + limit if limit is not None else None
            text = "".join(lines[start:end])
        await self.sink.event("file.read", {"path": self._shown(target), "chars": len(text)})
        return ReadTextFileResponse(content=text)

    async def write_text_file(
        self, session_id: str, path: str, content: str, **kwargs: Any
    ) -> WriteTextFileResponse:
        target = await self._confined(path, "write")
        try:
            await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
            await asyncio.to_thread(target.write_text, content)
        except OSError as exc:
            raise RequestError.internal_error({"path": path, "details": str(exc)}) from exc
        await self.sink.event("file.written", {"path": self._shown(target), "chars": len(content)})
        return WriteTextFileResponse()

    async def create_terminal(
        self,
        session_id: str,
        command: str,
        args: list[str] | None = None,
        env: list[EnvVariable] | None = None,
        cwd: str | None = None,
        output_byte_limit: int | None = None,
        **kwargs: Any,
    ) -> CreateTerminalResponse:
        runtime = self.runtime
        if not runtime.config.terminal:
            raise RequestError.method_not_found("terminal/create")
        where = await self._confined(cwd or ".", "terminal")
        extra = {v.name: v.value for v in env or []}
        proc = await asyncio.create_subprocess_exec(
            command,
            *(args or []),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=str(where),
            env={**runtime.environment, **extra},
            start_new_session=True,  # its own process group: killed whole at the end
        )
        limit = min(output_byte_limit or TERMINAL_OUTPUT_MAX, TERMINAL_OUTPUT_MAX)
        terminal_id = f"term-{len(runtime.terminals) + 1}"
        runtime.terminals[terminal_id] = _Terminal(proc, limit)
        await self.sink.event(
            "terminal.created",
            {
                "terminal_id": terminal_id,
                "command": [command, *(args or [])],
                "cwd": self._shown(where),
                "pid": proc.pid,
            },
        )
        return CreateTerminalResponse(terminal_id=terminal_id)

    def _terminal(self, terminal_id: str) -> _Terminal:
        found = self.runtime.terminals.get(terminal_id)
        if found is None:
            raise RequestError.resource_not_found(terminal_id)
        return found

    async def terminal_output(
        self, session_id: str, terminal_id: str, **kwargs: Any
    ) -> TerminalOutputResponse:
        term = self._terminal(terminal_id)
        text = bytes(term.output).decode(errors="replace")
        return TerminalOutputResponse(
            output=text, truncated=term.truncated, exit_status=term.status()
        )

    async def wait_for_terminal_exit(
        self, session_id: str, terminal_id: str, **kwargs: Any
    ) -> WaitForTerminalExitResponse:
        term = self._terminal(terminal_id)
        await term.proc.wait()
        status = term.status()
        return WaitForTerminalExitResponse(
            exit_code=status.exit_code if status else None, signal=status.signal if status else None
        )

    async def kill_terminal(
        self, session_id: str, terminal_id: str, **kwargs: Any
    ) -> KillTerminalResponse:
        self._terminal(terminal_id).kill()
        return KillTerminalResponse()

    async def release_terminal(
        self, session_id: str, terminal_id: str, **kwargs: Any
    ) -> ReleaseTerminalResponse:
        term = self.runtime.terminals.pop(terminal_id, None)
        if term is not None:
            await term.close()
        return ReleaseTerminalResponse()

    async def ext_method(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        raise RequestError.method_not_found(method)

    async def ext_notification(self, method: str, params: dict[str, Any]) -> None:
        return None


class AgentRuntime:
    """The agent process of one session."""

    def __init__(self, agent_id: str, config: AgentConfig, workspace: Path, sink: Sink) -> None:
        self.agent_id = agent_id
        self.config = config
        self.workspace = workspace
        self.sink = sink
        self.terminals: dict[str, _Terminal] = {}
        self.acp_session_id: str | None = None
        self.loaded = False
        self.stopping = False
        self._stack: AsyncExitStack | None = None
        self._conn: Any = None
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr = bytearray()
        self._tasks: list[asyncio.Task[Any]] = []

    @property
    def environment(self) -> dict[str, str]:
        from acp import default_environment

        return {**default_environment(), **self.config.env}

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def stderr_tail(self) -> str:
        return bytes(self._stderr[-STDERR_TAIL:]).decode(errors="replace").strip()

    async def start(self, resume_id: str | None = None) -> None:
        """Start the agent, initialize ACP and open its session: ``session/load`` of
        ``resume_id`` when the agent offers loading, else a new session. AgentStartError
        (and nothing left running) when any of it fails."""
        stack = AsyncExitStack()
        try:
            async with asyncio.timeout(self.config.start_timeout_seconds):
                conn = self._conn = await self._connect(stack)
                capabilities = ClientCapabilities(
                    fs=FileSystemCapabilities(read_text_file=True, write_text_file=True),
                    terminal=self.config.terminal,
                )
                init = await conn.initialize(
                    protocol_version=PROTOCOL_VERSION,
                    client_capabilities=capabilities,
                    client_info=Implementation(name="agent-gateway", version=GATEWAY_VERSION),
                )
                can_load = bool(init.agent_capabilities and init.agent_capabilities.load_session)
                if resume_id is not None and can_load:
                    await conn.load_session(
                        cwd=str(self.workspace), session_id=resume_id, mcp_servers=[]
                    )
                    self.acp_session_id, self.loaded = resume_id, True
                else:
                    opened = await conn.new_session(cwd=str(self.workspace), mcp_servers=[])
                    self.acp_session_id = opened.session_id
        except BaseException as exc:
            self.stopping = True
            with contextlib.suppress(BaseException):
                await stack.aclose()
            await self._end_tasks()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise AgentStartError(self._why(exc)) from None
        self._stack = stack
        self._tasks.append(asyncio.create_task(self._watch()))

    async def _connect(self, stack: AsyncExitStack) -> Any:
        """Start the agent's process; its ACP connection (closed with ``stack``)."""
        command = self.config.command or []
        conn, proc = await stack.enter_async_context(
            spawn_agent_process(
                lambda _agent: cast(Client, GatewayClient(self)),
                command[0],
                *command[1:],
                env=self.config.env,
                cwd=self.workspace,
            )
        )
        self._proc = proc
        self._tasks.append(asyncio.create_task(self._read_stderr(proc)))
        return conn

    def where(self) -> dict[str, Any]:
        """Where the agent runs, for the session's events."""
        return {"pid": self.pid}

    def _why(self, exc: BaseException) -> str:
        command = (self.config.command or ["?"])[0]
        if isinstance(exc, FileNotFoundError):
            return f"command {command!r} was not found"
        if isinstance(exc, PermissionError):
            return f"command {command!r} may not be run: {exc}"
        if isinstance(exc, TimeoutError):
            what = f"it did not open its session within {self.config.start_timeout_seconds:g} s"
        elif self._proc is not None and self._proc.returncode is not None:
            what = f"it exited with status {self._proc.returncode}"
        elif isinstance(exc, RequestError):
            what = f"it refused: {exc}"
        else:
            what = f"{type(exc).__name__}: {exc}"
        tail = self.stderr_tail()
        return f"{what}{f' (stderr: {tail[-500:]})' if tail else ''}"

    async def _read_stderr(self, proc: asyncio.subprocess.Process) -> None:
        if proc.stderr is None:
            return
        while chunk := await proc.stderr.read(65536):
            self._stderr += chunk
            if len(self._stderr) > 4 * STDERR_TAIL:
                del self._stderr[: len(self._stderr) - STDERR_TAIL]

    async def _watch(self) -> None:
        assert self._proc is not None
        code = await self._proc.wait()
        if not self.stopping:
            await asyncio.sleep(0)  # let the stderr reader take the last lines
            self.sink.exited(code, self.stderr_tail())

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None and not self.stopping

    async def prompt(self, text: str) -> str:
        """Send a prompt and await the end of the agent's turn; its stop reason. Past
        ``prompt_timeout_seconds`` the turn is cancelled (``session/cancel``)."""
        try:
            async with asyncio.timeout(self.config.prompt_timeout_seconds):
                response = await self._conn.prompt(
                    session_id=self.acp_session_id, prompt=[text_block(text)]
                )
        except TimeoutError:
            with contextlib.suppress(Exception):
                await self._conn.cancel(session_id=self.acp_session_id)
            raise
        return str(response.stop_reason)

    async def cancel(self) -> None:
        if self._conn is not None and self.alive:
            with contextlib.suppress(Exception):
                await self._conn.cancel(session_id=self.acp_session_id)

    async def stop(self) -> None:
        """Stop the agent and its terminals; returns once none of them runs."""
        self.stopping = True
        for term in list(self.terminals.values()):
            await term.close()
        self.terminals.clear()
        if self._stack is not None:
            stack, self._stack = self._stack, None
            with contextlib.suppress(BaseException):
                await stack.aclose()
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            await self._proc.wait()
        await self._end_tasks()

    async def _end_tasks(self) -> None:
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        for task in self._tasks:
            if task is not current:
                with contextlib.suppress(BaseException):
                    await task
        self._tasks.clear()
