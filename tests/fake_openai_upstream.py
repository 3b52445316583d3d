"""A real OpenAI-compatible HTTP server on loopback, for provider tests.

``FakeUpstream`` serves ``POST /v1/chat/completions`` and ``POST /v1/completions`` from a
``ThreadingHTTPServer`` in a background thread (HTTP/1.1, streams as chunked SSE ending
``data: [DONE]``). It records every request it receives, answers 401 to a wrong
``Authorization`` header, and behaves according to the upstream model name:

- ``normal``: a plain answer; with ``tools`` and a user message last, a ``tool_calls``
  answer; after a tool result, an answer quoting it.
- ``slow``: streams its first deltas, then waits for ``release`` (a ``threading.Event``
  the test sets) before the last delta; ``last_chunk_sent`` tells whether it went out.
- ``error500`` / ``ratelimit``: HTTP 500 / 429 with an OpenAI error body.
- ``sleepy``: answers only after ``sleep_seconds`` (past a short read timeout).
- ``dies``: streams two chunks, then closes the socket mid-stream (no ``[DONE]``).
- ``endless``: streams a chunk every few milliseconds until the client goes away; then
  ``disconnected`` is set.
- ``strict``: like ``normal``, except that a body with ``stream_options`` is refused
  with 400, as some OpenAI-compatible servers do.
- ``notjson``: 200 with an HTML page instead of JSON (a misconfigured proxy in front).
- ``garbled``: streams one chunk, then a ``data:`` line that is not JSON, then ``[DONE]``.
- ``length``: like ``normal``, but the answer ends with ``finish_reason: "length"`` (the
  token limit was hit).
- ``stall``: streams one chunk, then sends nothing more for ``sleep_seconds`` (past a
  short read timeout), then ends.
- ``refuses``: the model declines: chat answers ``REFUSAL_TEXT`` as ``message.refusal``
  (``content`` null), streamed word by word as ``delta.refusal``. (Not to be confused
  with the gateway model ``gpt-refused``, on a port that refuses connections.)
- ``leaky400`` / ``leaky500``: a 400 whose OpenAI error message and code quote
  ``LEAKED_TEXT``; a 500 HTML page quoting it and the key the gateway sent.
- ``errorchunk``: streams one chunk, then an OpenAI error object quoting ``LEAKED_TEXT``.
- ``badchunk``: streams one chunk, then ``LEAKED_TEXT`` where a chunk size belongs.
- ``scripted``: streams ``script`` (a list the test sets), one content delta per piece;
  with ``script_waits`` set, the last piece waits for ``release`` (``last_chunk_sent``);
  with ``script_lockstep`` set, every piece after the first waits for a ``step`` (a
  ``threading.Semaphore`` the test releases once per piece; ``pieces_sent`` counts the
  pieces begun).
  Not streamed: the pieces joined, as one message.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

NORMAL_TEXT = "Hello from the upstream"
REFUSAL_TEXT = "I can't help with that request"


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FakeUpstream:
    def __init__(self, api_key: str = "sk-fake-upstream-key-42", sleep_seconds: float = 3.0):
        self.api_key = api_key
        self.sleep_seconds = sleep_seconds
        self.requests: list[Recorded] = []
        self.release = threading.Event()
        self.disconnected = threading.Event()
        self.last_chunk_sent = False
        self.script: list[str] = []
        self.script_waits = False
        self.script_lockstep = False
        self.step = threading.Semaphore(0)
        self.pieces_sent = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"upstream": self})
        self._server = _Server(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    def start(self) -> FakeUpstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
        self.release.clear()
        self.disconnected.clear()
        self.last_chunk_sent = False
        self.script = []
        self.script_waits = False
        self.script_lockstep = False
        self.step = threading.Semaphore(0)
        self.pieces_sent = 0

    def record(self, entry: Recorded) -> None:
        with self._lock:
            self.requests.append(entry)

    def bodies(self, model: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [r.body for r in self.requests if model is None or r.body.get("model") == model]


class _Server(ThreadingHTTPServer):
    """Quiet about clients that hang up (tests cancel streams and time out on purpose);
    any other error in a handler is still printed."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


def _error(message: str, type_: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


class _Handler(BaseHTTPRequestHandler):
    upstream: FakeUpstream
    protocol_version = "HTTP/1.1"
    # Each chunk is written as it is made: without TCP_NODELAY a small write behind an
    # unacknowledged one waits for the gateway's delayed ACK (40 ms a stream, 10 s over
    # the hold-back tests' hundreds of streams).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        return None

    # -- plumbing ------------------------------------------------------------------------

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _html(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, payload: bytes) -> None:
        self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
        self.wfile.flush()

    def _event(self, obj: Any) -> None:
        self._chunk(b"data: " + json.dumps(obj).encode() + b"\n\n")

    def _end_stream(self) -> None:
        self._chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # -- requests ------------------------------------------------------------------------

    def do_POST(self) -> None:
        up = self.upstream
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {"_unparsed": raw.decode("utf-8", "replace")}
        up.record(Recorded(self.path, dict(self.headers.items()), body))
        if self.path not in ("/v1/chat/completions", "/v1/completions"):
            self._json(404, _error(f"no route {self.path}", "invalid_request_error", "not_found"))
            return
        if self.headers.get("Authorization") != f"Bearer {up.api_key}":
            # Like OpenAI, the message quotes the key it was given.
            given = self.headers.get("Authorization", "").removeprefix("Bearer ")
            message = f"Incorrect API key provided: {given}"
            self._json(401, _error(message, "invalid_request_error", "invalid_api_key"))
            return
        chat = self.path == "/v1/chat/completions"
        model = str(body.get("model"))
        stream = bool(body.get("stream"))
        if model == "error500":
            self._json(500, _error("the upstream fell over", "server_error", "internal_error"))
        elif model == "ratelimit":
            error = _error("slow down", "rate_limit_error", "rate_limit_exceeded")
            self._json(429, error, {"Retry-After": "7"})
        elif model == "leaky400":
            # A client mistake whose message quotes what the upstream holds, and whose
            # code is free text: neither may reach the gateway's client.
            error = _error(f"bad input near {LEAKED_TEXT}", "invalid_request_error", LEAKED_TEXT)
            self._json(400, error)
        elif model == "leaky500":
            self._html(500, f"<html>Traceback: {LEAKED_TEXT} {up.api_key}</html>".encode())
        elif model == "errorchunk" and stream:
            self._start_stream()
            self._event(self._chunk_obj(body, chat, {"content": "partial"}))
            self._event(_error(f"overloaded near {LEAKED_TEXT}", "server_error", "overloaded"))
            self._end_stream()
        elif model == "badchunk" and stream:
            self._start_stream()
            self._event(self._chunk_obj(body, chat, {"content": "partial"}))
            self.wfile.write(f"{LEAKED_TEXT}\r\n".encode())  # not a chunk size: h11 quotes it
            self.wfile.flush()
            self.close_connection = True
        elif model == "strict" and "stream_options" in body:
            message = "Unrecognized request argument supplied: stream_options"
            self._json(400, _error(message, "invalid_request_error", "unsupported_parameter"))
        elif model == "sleepy":
            up._stop.wait(up.sleep_seconds)
            self._answer(body, chat, stream)
        elif model == "dies":
            self._start_stream()
            for piece in ["partial", " answer"]:
                self._event(self._chunk_obj(body, chat, {"content": piece}))
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif model == "endless":
            self._endless(body, chat)
        elif model == "notjson":
            self._html(200, b"<html><body>502 Bad Gateway (nginx)</body></html>")
        elif model == "garbled":
            self._start_stream()
            self._event(self._chunk_obj(body, chat, {"content": "fine"}))
            self._chunk(b'data: {"choices": [{"delta": \n\n')
            try:
                self._end_stream()
            except OSError:
                pass  # the gateway already hung up on the bad chunk
            self.close_connection = True
        elif model == "stall":
            self._stall(body, chat)
        elif model == "slow":
            self._slow(body, chat)
        elif model == "scripted" and stream:
            self._scripted(body, chat)
        elif model == "scripted":
            said = {"role": "assistant", "content": "".join(up.script)}
            choice: dict[str, Any] = {"index": 0, "message": said, "finish_reason": "stop"}
            answer = {"id": "chatcmpl-upstream", "object": "chat.completion", "created": 0}
            self._json(200, {**answer, "model": model, "choices": [choice]})
        else:
            self._answer(body, chat, stream)

    def _reply(self, body: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]]]:
        messages = body.get("messages") or []
        last = messages[-1] if messages else {}
        if last.get("role") == "tool":
            return f"the tool said {last.get('content')}", []
        if body.get("tools") and body.get("tool_choice") != "none":
            fn = body["tools"][0]["function"]
            call = {
                "id": "call_upstream_1",
                "type": "function",
                "function": {"name": fn["name"], "arguments": json.dumps({"city": "Oslo"})},
            }
            return None, [call]
        return NORMAL_TEXT, []

    def _usage(self) -> dict[str, int]:
        return {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}

    def _chunk_obj(
        self, body: dict[str, Any], chat: bool, delta: dict[str, Any], finish: str | None = None
    ) -> dict[str, Any]:
        if chat:
            return {
                "id": "chatcmpl-upstream",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": body.get("model"),
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
        return {
            "id": "cmpl-upstream",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "text": delta.get("content", ""),
                    "finish_reason": finish,
                    "logprobs": None,
                }
            ],
        }

    def _answer(self, body: dict[str, Any], chat: bool, stream: bool) -> None:
        text, calls = self._reply(body) if chat else (NORMAL_TEXT, [])
        refusal = REFUSAL_TEXT if chat and body.get("model") == "refuses" else None
        if refusal:
            text, calls = None, []
        finish = "tool_calls" if calls else "length" if body.get("model") == "length" else "stop"
        if not stream:
            created = int(time.time())
            if chat:
                message: dict[str, Any] = {"role": "assistant", "content": text}
                if calls:
                    message["tool_calls"] = calls
                if refusal:
                    message["refusal"] = refusal
                choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish}
                obj = "chat.completion"
            else:
                choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
                obj = "text_completion"
            self._json(
                200,
                {
                    "id": "chatcmpl-upstream" if chat else "cmpl-upstream",
                    "object": obj,
                    "created": created,
                    "model": body.get("model"),
                    "choices": [choice],
                    "usage": self._usage(),
                },
            )
            return
        self._start_stream()
        if chat:
            self._event(self._chunk_obj(body, chat, {"role": "assistant", "content": ""}))
        if calls:
            for i, call in enumerate(calls):
                self._event(self._chunk_obj(body, chat, {"tool_calls": [{"index": i, **call}]}))
        else:
            field = "refusal" if refusal else "content"
            for i, word in enumerate((refusal or text or "").split(" ")):
                self._event(self._chunk_obj(body, chat, {field: word if i == 0 else " " + word}))
        self._event(self._chunk_obj(body, chat, {}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            usage_chunk = self._chunk_obj(body, chat, {})
            usage_chunk["choices"] = []
            usage_chunk["usage"] = self._usage()
            self._event(usage_chunk)
        self._end_stream()

    def _slow(self, body: dict[str, Any], chat: bool) -> None:
        up = self.upstream
        self._start_stream()
        self._event(self._chunk_obj(body, chat, {"content": "first"}))
        # Held until the test has seen the first delta (or, if the gateway buffers, until
        # the wait gives up and the test's assertion on last_chunk_sent catches it).
        up.release.wait(15)
        self._event(self._chunk_obj(body, chat, {"content": " last"}, "stop"))
        up.last_chunk_sent = True
        self._end_stream()

    def _scripted(self, body: dict[str, Any], chat: bool) -> None:
        up = self.upstream
        self._start_stream()
        for i, piece in enumerate(up.script):
            if up.script_waits and i == len(up.script) - 1:
                up.release.wait(15)
            if up.script_lockstep and i:
                up.step.acquire(timeout=15)
            up.pieces_sent = i + 1
            self._event(self._chunk_obj(body, chat, {"content": piece}))
        up.last_chunk_sent = True
        self._event(self._chunk_obj(body, chat, {}, "stop"))
        self._end_stream()

    def _stall(self, body: dict[str, Any], chat: bool) -> None:
        up = self.upstream
        self._start_stream()
        self._event(self._chunk_obj(body, chat, {"content": "first"}))
        up._stop.wait(up.sleep_seconds)
        try:
            self._event(self._chunk_obj(body, chat, {"content": " late"}, "stop"))
            self._end_stream()
        except OSError:
            pass  # the gateway gave up on us long ago
        self.close_connection = True

    def _endless(self, body: dict[str, Any], chat: bool) -> None:
        up = self.upstream
        try:
            self._start_stream()
            while not up._stop.is_set():
                self._event(self._chunk_obj(body, chat, {"content": "more "}))
                time.sleep(0.02)
        except OSError:
            up.disconnected.set()
        self.close_connection = True


KEY_ENV = "FAKE_UPSTREAM_KEY"
LEAKED_TEXT = "upstream-internal-detail-0123"  # in error bodies; the gateway never repeats it
WRONG_KEY = "sk-wrong-key-that-must-not-leak"


def models_config(upstream: FakeUpstream) -> dict[str, Any]:
    """``[models]`` for a gateway in front of ``upstream``: one gateway model per
    behaviour (``gpt-<behaviour>``; ``gpt-sleepy`` and ``gpt-stall`` with a 0.3 s read
    timeout), the key read from ``$FAKE_UPSTREAM_KEY``, plus a model
    on a closed port, ``gpt-strict-quiet`` (``stream_usage = false``) and the offline
    ``echo``."""

    def model(upstream_model: str, **extra: Any) -> dict[str, Any]:
        return {
            "provider": "openai",
            "base_url": f"{upstream.url}/v1",
            "upstream_model": upstream_model,
            "api_key": {"env": KEY_ENV},
            **extra,
        }

    return {
        "gpt-test": model("normal", description="the fake upstream's normal model"),
        "gpt-slow": model("slow"),
        "gpt-500": model("error500"),
        "gpt-429": model("ratelimit"),
        "gpt-sleepy": model("sleepy", read_timeout_seconds=0.3),
        "gpt-dies": model("dies"),
        "gpt-endless": model("endless"),
        "gpt-strict": model("strict"),
        "gpt-strict-quiet": model("strict", stream_usage=False),
        "gpt-notjson": model("notjson"),
        "gpt-garbled": model("garbled"),
        "gpt-stall": model("stall", read_timeout_seconds=0.3),
        "gpt-length": model("length"),
        "gpt-refuses": model("refuses"),
        "gpt-leaky400": model("leaky400"),
        "gpt-leaky500": model("leaky500"),
        "gpt-errorchunk": model("errorchunk"),
        "gpt-badchunk": model("badchunk"),
        "gpt-scripted": model("scripted"),
        "gpt-refused": {
            **model("normal", max_retries=1),
            "base_url": f"http://127.0.0.1:{closed_port()}/v1",
        },
        "gpt-wrong-key": {**model("normal"), "api_key": WRONG_KEY},
        "echo": {"provider": "echo"},
    }
