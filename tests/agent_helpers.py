"""What the agent session and bridge tests share: a reader of an open SSE response of
the Quart test client, a poll-until helper, and the configuration of the test ACP agent
(``tests/acp_agent.py``, run as a subprocess)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

AGENT_SCRIPT = Path(__file__).with_name("acp_agent.py")


def agent_config(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """``[agents.<id>]`` of the test agent, its workspaces under ``tmp_path/work``."""
    config: dict[str, Any] = {
        "command": [sys.executable, str(AGENT_SCRIPT)],
        "cwd": str(tmp_path / "work"),
        "start_timeout_seconds": 30,
        "permission_timeout_seconds": 30,
    }
    config.update(overrides)
    return config


async def until(check: Any, what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


class SSEReader:
    """The events of an open SSE response, one block at a time."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.buf = b""
        self.ended = False

    async def next_block(self, timeout: float = 20) -> dict[str, str]:
        while b"\n\n" not in self.buf:
            if self.ended:
                raise EOFError("stream ended")
            chunk = await asyncio.wait_for(self.conn.receive(), timeout)
            if chunk == b"":
                self.ended = True
            self.buf += chunk
        raw, self.buf = self.buf.split(b"\n\n", 1)
        fields: dict[str, str] = {}
        for line in raw.decode().split("\n"):
            if not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value[1:] if value.startswith(" ") else value
        return fields

    async def next_event(self, timeout: float = 20) -> dict[str, Any]:
        """The next stored event: ``{"id", "type", "data"}`` (its ``data`` parsed)."""
        while True:
            block = await self.next_block(timeout)
            if "id" in block and "data" in block:
                body = json.loads(block["data"])
                return {"id": int(block["id"]), "type": block.get("event"), **body}

    async def until_type(self, wanted: str, timeout: float = 30) -> list[dict[str, Any]]:
        """Events up to and including the first of type ``wanted``."""
        seen = []
        while True:
            event = await self.next_event(timeout)
            seen.append(event)
            if event["type"] == wanted:
                return seen


@asynccontextmanager
async def sse(client: Any, path: str, headers: dict[str, str]) -> AsyncIterator[SSEReader]:
    async with client.request(path, headers=headers) as conn:
        await conn.send_complete()
        try:
            yield SSEReader(conn)
        finally:
            await conn.disconnect()
