"""The ``/gateway/ws`` frame protocol (seed 004).

Frames are ``{schema_version, request_id, kind, payload}``. A request kind ``x.request``
answers with ``x.response``; plugins add kinds through ``gateway_register_ws_kinds``.
The server sends ``gateway.heartbeat`` frames. Malformed frames get a typed ``error``
frame and the socket carries on. The credential the socket was opened with is checked
again on every frame and every second while idle (see :mod:`host.auth.watch`): once it is
revoked, expired or removed, an ``unauthorized`` error frame is sent and the socket is
closed with code 4401.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from quart import Quart

from host.auth.principal import Principal
from host.auth.watch import CredentialWatch, credential_watch
from host.storage import now_ms
from host.strict_json import InvalidJSON, parse_json

log = logging.getLogger("gateway.ws")

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = (0, 1)
PROTOCOL_VERSION = "1.0.0"
HEARTBEAT_KIND = "gateway.heartbeat"
HEARTBEAT_REQUEST_ID = "gateway-heartbeat"
MAX_FRAME_BYTES = 1024 * 1024
CLOSE_UNAUTHORIZED = 4401  # 4000-4999: application codes; 4401 mirrors HTTP 401

Handler = Callable[[dict[str, Any], "WsContext"], Awaitable[dict[str, Any]]]


@dataclass
class WsContext:
    app: Quart
    principal: Principal
    request_id: str
    send: Callable[[dict[str, Any]], Awaitable[None]]


class FrameError(Exception):
    def __init__(self, code: str, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


def response_kind(kind: str) -> str:
    return (
        kind[: -len(".request")] + ".response" if kind.endswith(".request") else kind + ".response"
    )


def frame(kind: str, request_id: str, payload: dict[str, Any]) -> str:
    return json.dumps(
        {
            "schema_version": SCHEMA_VERSION,
            "request_id": request_id,
            "kind": kind,
            "payload": payload,
        },
        separators=(",", ":"),
    )


def parse_frame(raw: str | bytes, kinds: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError("invalid_payload", "binary frame is not UTF-8 JSON") from None
    if len(raw) > MAX_FRAME_BYTES:
        raise FrameError("frame_too_large", f"frames are limited to {MAX_FRAME_BYTES} bytes")
    try:
        data = parse_json(raw)
    except InvalidJSON as exc:
        raise FrameError("invalid_json", f"frame is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise FrameError("invalid_json", "frame must be a JSON object")
    rid = data.get("request_id")
    request_id = rid if isinstance(rid, str) else None
    missing = [k for k in ("schema_version", "request_id", "kind", "payload") if k not in data]
    if missing:
        raise FrameError("invalid_json", f"frame is missing {', '.join(missing)}", request_id)
    version = data["schema_version"]
    if isinstance(version, bool) or version not in SUPPORTED_SCHEMA_VERSIONS:
        raise FrameError(
            "unsupported_schema",
            f"schema_version must be one of {list(SUPPORTED_SCHEMA_VERSIONS)}",
            request_id,
        )
    if not isinstance(rid, str) or not rid.strip():
        raise FrameError("invalid_request_id", "request_id must be a non-empty string")
    kind = data["kind"]
    if not isinstance(kind, str) or kind not in kinds:
        raise FrameError("unsupported_kind", f"unsupported kind {kind!r}", rid)
    payload = data["payload"]
    if not isinstance(payload, dict):
        raise FrameError("invalid_payload", "payload must be a JSON object", rid)
    return rid, kind, payload


async def serve_socket(
    app: Quart,
    ws: Any,
    principal: Principal,
    kinds: dict[str, Handler],
    heartbeat_seconds: float,
    is_draining: Callable[[], bool],
    check_rate: Callable[[Principal], Awaitable[int]],
) -> None:
    await ws.accept()
    lock = asyncio.Lock()

    async def send(obj: dict[str, Any]) -> None:
        async with lock:
            await ws.send(json.dumps(obj, separators=(",", ":")))

    async def send_text(text: str) -> None:
        async with lock:
            await ws.send(text)

    async def heartbeat() -> None:
        while True:
            await asyncio.sleep(heartbeat_seconds)
            await send_text(frame(HEARTBEAT_KIND, HEARTBEAT_REQUEST_ID, {"ts_unix_ms": now_ms()}))

    async def refuse(request_id: str) -> None:
        """The credential no longer stands: say so, then close (under the send lock, so
        no heartbeat lands after the close)."""
        message = "the credential of this connection was revoked or has expired"
        async with lock:
            await ws.send(frame("error", request_id, {"code": "unauthorized", "message": message}))
            await ws.close(CLOSE_UNAUTHORIZED, "unauthorized")

    watch = credential_watch(ws, principal, websocket=True)
    beat = asyncio.create_task(heartbeat())
    try:
        while not is_draining():
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                # that arrives as the frame does, and the socket would outlive its server.
                async with asyncio.timeout(_receive_timeout(watch)):
                    raw = await ws.receive()
            except TimeoutError:
                if watch is not None and watch.due() and not await watch.valid():
                    await refuse(HEARTBEAT_REQUEST_ID)
                    return
                continue
            if watch is not None and not await watch.valid():
                await refuse(_request_id_hint(raw))
                return
            await _handle(app, principal, kinds, raw, send, send_text, check_rate)
        await send_text(frame("gateway.closing", HEARTBEAT_REQUEST_ID, {"reason": "draining"}))
    finally:
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await beat


def _receive_timeout(watch: CredentialWatch | None) -> float:
    """Wake at least every second (to notice draining), sooner for a due credential check."""
    if watch is None:
        return 1.0
    return min(1.0, max(0.01, watch.seconds_to_due()))


def _request_id_hint(raw: str | bytes) -> str:
    """The frame's ``request_id`` when it has one, for an error about that frame."""
    if len(raw) > MAX_FRAME_BYTES:
        return "unknown-request"
    try:
        rid = json.loads(raw).get("request_id")
    except (ValueError, AttributeError, RecursionError):
        return "unknown-request"
    return rid if isinstance(rid, str) and rid.strip() else "unknown-request"


async def _handle(
    app: Quart,
    principal: Principal,
    kinds: dict[str, Handler],
    raw: str | bytes,
    send: Callable[[dict[str, Any]], Awaitable[None]],
    send_text: Callable[[str], Awaitable[None]],
    check_rate: Callable[[Principal], Awaitable[int]],
) -> None:
    try:
        request_id, kind, payload = parse_frame(raw, kinds)
    except FrameError as exc:
        await send_text(
            frame(
                "error",
                exc.request_id or "unknown-request",
                {"code": exc.code, "message": exc.message},
            )
        )
        return
    wait = await check_rate(principal)
    if wait:
        await send_text(
            frame(
                "error",
                request_id,
                {
                    "code": "rate_limited",
                    "message": f"retry in {wait} s",
                    "retry_after_seconds": wait,
                },
            )
        )
        return
    try:
        result = await kinds[kind](payload, WsContext(app, principal, request_id, send))
    except FrameError as exc:
        await send_text(frame("error", request_id, {"code": exc.code, "message": exc.message}))
        return
    except Exception:
        log.exception("WebSocket handler for %s failed", kind)
        await send_text(
            frame("error", request_id, {"code": "internal_error", "message": "internal error"})
        )
        return
    await send_text(frame(response_kind(kind), request_id, result))
