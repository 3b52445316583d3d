"""A scripted HTTP/1.1 server on loopback for client tests: each request is answered as
the test says, and connections are counted (opened, and closed by the client)."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

Answer = Callable[[bytes, asyncio.StreamWriter], Awaitable[bool]]
"""Gets the request head and body; writes the answer; returns False to close."""


class ScriptedServer:
    def __init__(self, answer: Answer, ssl_context: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.ssl_context = ssl_context
        self.connections = 0
        self.closed_by_client = 0
        self.requests: list[bytes] = []
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def __aenter__(self) -> ScriptedServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    self.closed_by_client += 1
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                if not await self.answer(request, writer):
                    return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            writer.close()


def fixed(body: bytes, *, status: int = 200, chunked: bool = False) -> Answer:
    async def answer(request: bytes, writer: asyncio.StreamWriter) -> bool:
        head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
        if chunked:
            half = len(body) // 2
            parts = [body[:half], body[half:]]
            payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts if p) + b"0\r\n\r\n"
            writer.write(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode() + payload)
        else:
            writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        return True

    return answer


def held_until(
    count: int, answer: Answer | None = None, release: asyncio.Event | None = None
) -> Answer:
    """``answer`` (default ``{}``) once ``count`` requests are in, so that a burst opens
    ``count`` connections; then, with ``release``, each connection is closed once it is
    set (an upstream whose idle timeout passed)."""
    arrived = 0
    everyone = asyncio.Event()
    reply = answer or fixed(b"{}")

    async def held(request: bytes, writer: asyncio.StreamWriter) -> bool:
        nonlocal arrived
        arrived += 1
        if arrived == count:
            everyone.set()
        await everyone.wait()
        await reply(request, writer)
        if release is None:
            return True
        await release.wait()
        return False

    return held


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Poll ``condition`` until it holds (TimeoutError after ``seconds``)."""
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.02)


# /proc/net/tcp's "st" column: the states of a connection that is open on this side.
ESTABLISHED, CLOSE_WAIT = "01", "08"


def sockets_to(port: int, *states: str) -> int:
    """How many of this machine's TCP sockets to ``port`` (by remote port, from
    /proc/net/tcp) are in one of ``states``: CLOSE_WAIT, the upstream closed and this
    side not yet."""
    try:
        with open("/proc/net/tcp") as table:
            rows = [row.split() for row in table.read().splitlines()[1:]]
    except OSError:
        pytest.skip("no /proc/net/tcp on this system")
    return sum(1 for row in rows if int(row[2].split(":")[1], 16) == port and row[3] in states)


def chat_completion(text: str = "hi") -> Answer:
    """An OpenAI ``chat.completion`` answer."""
    body = json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    ).encode()
    return fixed(body)


def request_json(request: bytes) -> Any:
    return json.loads(request.split(b"\r\n\r\n", 1)[1])
