"""A small real ACP agent for the tests, written with the ``agent-client-protocol``
package and run by the gateway as a subprocess (stdio). What it does depends on the
prompt's text:

- ``read <path>``: announces a tool call, asks permission, then reads the file through
  the client (``fs/read_text_file``) and answers its content (or why it could not);
- ``write <path> <text>``: asks permission, then writes the file through the client;
- ``history``: answers how many prompts the session had before (a loaded session
  remembers: its history is kept in ``.acp-test-agent/<session id>.json`` in its cwd);
- ``run <cwd> <command...>``: runs the command in a terminal (``terminal/create`` with
  that working directory), awaits its exit and answers its output;
- ``spawn``: starts ``sleep 300`` in a terminal and leaves it running;
- ``crash``: exits at once with status 3, mid-prompt;
- ``sleep``: waits until the prompt is cancelled;
- ``chunks <a>|<b>|...``: answers the parts, one update each;
- anything else: echoes the text back in three streamed chunks.

It offers ``session/load``: loading replays the session's history as updates.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from acp import (
    PROTOCOL_VERSION,
    Client,
    RequestError,
    run_agent,
    start_read_tool_call,
    update_agent_message_text,
    update_tool_call,
    update_user_message_text,
)
from acp.schema import (
    AgentCapabilities,
    AllowedOutcome,
    InitializeResponse,
    LoadSessionResponse,
    NewSessionResponse,
    PermissionOption,
    PromptResponse,
    ToolCallUpdate,
)


class TestAgent:
    def __init__(self) -> None:
        self.client: Client | None = None
        self.cwd: dict[str, Path] = {}

    def on_connect(self, conn: Client) -> None:
        self.client = conn

    async def initialize(self, protocol_version: int, **kwargs: Any) -> InitializeResponse:
        return InitializeResponse(
            protocol_version=PROTOCOL_VERSION,
            agent_capabilities=AgentCapabilities(load_session=True),
        )

    def _history_file(self, session_id: str) -> Path:
        folder = self.cwd[session_id] / ".acp-test-agent"
        folder.mkdir(exist_ok=True)
        return folder / f"{session_id}.json"

    def _history(self, session_id: str) -> list[dict[str, str]]:
        path = self._history_file(session_id)
        return json.loads(path.read_text()) if path.exists() else []

    async def new_session(self, cwd: str, **kwargs: Any) -> NewSessionResponse:
        session_id = "s-" + uuid.uuid4().hex[:12]
        self.cwd[session_id] = Path(cwd)
        self._history_file(session_id).write_text("[]")
        return NewSessionResponse(session_id=session_id)

    async def load_session(self, cwd: str, session_id: str, **kwargs: Any) -> LoadSessionResponse:
        self.cwd[session_id] = Path(cwd)
        if not self._history_file(session_id).exists():
            raise RequestError.resource_not_found(session_id)
        assert self.client is not None
        for turn in self._history(session_id):
            await self.client.session_update(session_id, update_user_message_text(turn["prompt"]))
            await self.client.session_update(session_id, update_agent_message_text(turn["answer"]))
        return LoadSessionResponse()

    async def _say(self, session_id: str, text: str) -> None:
        assert self.client is not None
        await self.client.session_update(session_id, update_agent_message_text(text))

    async def _allowed(self, session_id: str, call_id: str, title: str, kind: Any) -> bool:
        assert self.client is not None
        options = [
            PermissionOption(option_id="yes", name="Allow once", kind="allow_once"),
            PermissionOption(option_id="no", name="Reject", kind="reject_once"),
        ]
        answer = await self.client.request_permission(
            session_id=session_id,
            tool_call=ToolCallUpdate(tool_call_id=call_id, title=title, kind=kind),
            options=options,
        )
        return isinstance(answer.outcome, AllowedOutcome) and answer.outcome.option_id == "yes"

    async def prompt(self, prompt: list[Any], session_id: str, **kwargs: Any) -> PromptResponse:
        assert self.client is not None
        text = " ".join(getattr(block, "text", "") for block in prompt).strip()
        history = self._history(session_id)
        answer = await self._answer(session_id, text, len(history))
        history.append({"prompt": text, "answer": answer})
        self._history_file(session_id).write_text(json.dumps(history))
        return PromptResponse(stop_reason="end_turn")

    async def _answer(self, session_id: str, text: str, before: int) -> str:
        assert self.client is not None
        command, _, rest = text.partition(" ")
        if command == "crash":
            os._exit(3)
        if command == "sleep":
            await asyncio.sleep(3600)
        if command == "chunks":
            for part in rest.split("|"):
                await self._say(session_id, part)
            return rest.replace("|", "")
        if command == "history":
            answer = f"{before} prompts before"
            await self._say(session_id, answer)
            return answer
        if command == "read":
            call = start_read_tool_call("call-1", f"Read {rest}", rest)
            await self.client.session_update(session_id, call)
            if not await self._allowed(session_id, "call-1", f"Read {rest}", "read"):
                answer = "permission denied"
            else:
                try:
                    found = await self.client.read_text_file(session_id=session_id, path=rest)
                    answer = f"content: {found.content}"
                except RequestError as exc:
                    answer = f"read failed: {exc}"
            done = update_tool_call("call-1", status="completed")
            await self.client.session_update(session_id, done)
            await self._say(session_id, answer)
            return answer
        if command in ("run", "spawn"):
            where, _, line = rest.partition(" ")
            argv = line.split() if command == "run" else ["sleep", "300"]
            try:
                term = await self.client.create_terminal(
                    session_id=session_id,
                    command=argv[0],
                    args=argv[1:],
                    cwd=where if command == "run" else None,
                )
            except RequestError as exc:
                answer = f"terminal refused: {exc}"
                await self._say(session_id, answer)
                return answer
            if command == "spawn":
                answer = f"spawned {term.terminal_id}"
            else:
                await self.client.wait_for_terminal_exit(
                    session_id=session_id, terminal_id=term.terminal_id
                )
                out = await self.client.terminal_output(
                    session_id=session_id, terminal_id=term.terminal_id
                )
                await self.client.release_terminal(
                    session_id=session_id, terminal_id=term.terminal_id
                )
                code = out.exit_status.exit_code if out.exit_status else None
                answer = f"exit {code}: {out.output.strip()}"
            await self._say(session_id, answer)
            return answer
        if command == "write":
            path, _, content = rest.partition(" ")
            if not await self._allowed(session_id, "call-2", f"Write {path}", "edit"):
                answer = "permission denied"
            else:
                try:
                    await self.client.write_text_file(
                        session_id=session_id, path=path, content=content
                    )
                    answer = f"wrote {path}"
                except RequestError as exc:
                    answer = f"write failed: {exc}"
            await self._say(session_id, answer)
            return answer
        for part in ("echo:", f" {text}", " (done)"):
            await self._say(session_id, part)
        return f"echo: {text} (done)"

    async def cancel(self, session_id: str, **kwargs: Any) -> None:
        return None


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--fail":
        print("this agent refuses to start", file=sys.stderr)
        sys.exit(2)
    asyncio.run(run_agent(TestAgent()))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
