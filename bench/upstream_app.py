"""A small, fast OpenAI-compatible upstream for the proxy benchmark (bench/openai_proxy.py).

A raw asyncio HTTP/1.1 server (keep-alive, pipelining-safe, no framework), so that it is
not the bottleneck of what it measures:

* ``POST /v1/chat/completions`` answers a fixed small completion; with ``"stream": true``
  a fixed sequence of chunks (the first at once, carrying content, then one every
  ``--delay-ms``), a final chunk with ``finish_reason`` (and ``usage`` when
  ``stream_options.include_usage``), then ``data: [DONE]``;
* ``GET /v1/models`` lists ``bench-model``; ``GET /health`` answers ``ok``.

Run: ``python bench/upstream_app.py --port 8001 [--chunks 20 --delay-ms 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from typing import Any

MODEL = "bench-model"
CONTENT = "This is a fixed benchmark completion from the loopback upstream."
USAGE = {"prompt_tokens": 12, "completion_tokens": 12, "total_tokens": 24}


def _completion() -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": CONTENT},
                    "finish_reason": "stop",
                }
            ],
            "usage": USAGE,
        },
        separators=(",", ":"),
    ).encode()


def _chunk(delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> bytes:
    obj: dict[str, Any] = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage is not None:
        obj["usage"] = usage
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _http(status: str, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (
        b"HTTP/1.1 "
        + status.encode()
        + b"\r\ncontent-type: "
        + content_type
        + b"\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


MODELS = json.dumps(
    {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "bench"}]}
).encode()
NOT_FOUND = _http("404 Not Found", b'{"error":{"message":"not found","type":"not_found"}}')
BAD_REQUEST = _http(
    "400 Bad Request", b'{"error":{"message":"bad request","type":"invalid_request_error"}}'
)
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


class Upstream(asyncio.Protocol):
    chunks = 20
    delay = 0.005

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.busy: asyncio.Task[None] | None = None  # a stream being written
        self.pending: list[tuple[bytes, bytes, bytes]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.busy is not None:
            self.busy.cancel()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            length = 0
            lower = head.lower()
            at = lower.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = lower.find(b"\r\n", at + 2)
                length = int(head[at + 17 : stop if stop >= 0 else None])
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            line = head[: head.find(b"\r\n")] if b"\r\n" in head else head
            method, _, rest = line.partition(b" ")
            path = rest.partition(b" ")[0]
            if self.busy is not None:  # pipelined behind a stream: answer in order
                self.pending.append((method, path, body))
            else:
                self.handle(method, path, body)

    def handle(self, method: bytes, path: bytes, body: bytes) -> None:
        transport = self.transport
        if transport is None:
            return
        if method == b"POST" and path == b"/v1/chat/completions":
            try:
                req = json.loads(body)
            except ValueError:
                transport.write(BAD_REQUEST)
                return
            if req.get("stream"):
                usage = bool((req.get("stream_options") or {}).get("include_usage"))
                self.busy = asyncio.get_running_loop().create_task(self.stream(usage))
                return
            transport.write(_http("200 OK", _completion()))
        elif method == b"GET" and path == b"/v1/models":
            transport.write(_http("200 OK", MODELS))
        elif method == b"GET" and path == b"/health":
            transport.write(_http("200 OK", b"ok", b"text/plain"))
        else:
            transport.write(NOT_FOUND)

    async def stream(self, usage: bool) -> None:
        try:
            words = CONTENT.split(" ")
            transport = self.transport
            if transport is None:
                return
            first = _chunk({"role": "assistant", "content": words[0]})
            transport.write(STREAM_HEAD + _chunked(first))
            for i in range(1, self.chunks):
                await asyncio.sleep(self.delay)
                if self.transport is None:
                    return
                word = " " + words[i % len(words)]
                self.transport.write(_chunked(_chunk({"content": word})))
            await asyncio.sleep(self.delay)
            if self.transport is None:
                return
            tail = _chunk({}, "stop")
            if usage:
                tail += b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk",'
                tail += b'"model":"bench-model","choices":[],"usage":'
                tail += json.dumps(USAGE, separators=(",", ":")).encode() + b"}\n\n"
            self.transport.write(_chunked(tail + b"data: [DONE]\n\n") + b"0\r\n\r\n")
        finally:
            self.busy = None
        while self.pending and self.busy is None:
            self.handle(*self.pending.pop(0))


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Upstream, host, port, reuse_address=True, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="fast OpenAI-compatible bench upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=20, help="content chunks per stream")
    parser.add_argument("--delay-ms", type=float, default=5.0, help="delay between chunks")
    args = parser.parse_args()
    Upstream.chunks = args.chunks
    Upstream.delay = args.delay_ms / 1000
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
