"""``openai``: any OpenAI-compatible upstream (vLLM, Ollama, llama.cpp server, LiteLLM,
OpenAI itself), addressed by ``base_url``.

One connection pool per (base_url, timeouts), on aiohttp's client (``client.py``),
through the proxy the environment names for the upstream (``HTTP_PROXY``,
``HTTPS_PROXY``, ``NO_PROXY``) when one applies. Retries only on connection
errors (nothing reached the upstream, so nothing can run twice); upstream errors keep
their status in ``upstream_status``. Streams are forwarded chunk by chunk as they arrive;
closing the iterator (a client that went away) closes the upstream connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from http import HTTPStatus
from typing import Any

from host.api import MASK
from plugins.openai_compat.providers.base import (
    DEFAULT_MAX_SSE_LINE_BYTES,
    ModelRoute,
    Provider,
    ProviderError,
)
from plugins.openai_compat.providers.client import (
    ConnectFailed,
    Response,
    ResponseTooLarge,
    TransportError,
    UpstreamPool,
    UpstreamTimeout,
    check_url,
    proxy_for,
)

_DRAIN_SECONDS = 0.2  # what may follow [DONE] before the body ends (normally nothing)
_LOGGED_BYTES = 1024  # of an upstream's error body, in the gateway's log
_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")

log = logging.getLogger("gateway.openai_compat")


class SSELineTooLong(Exception):
    """A line of the upstream's event stream is longer than the route allows."""


PoolKey = tuple[str, float, float]


class OpenAIUpstream(Provider):
    name = "openai"
    description = "an OpenAI-compatible HTTP upstream, by base_url"
    needs_base_url = True

    def __init__(self) -> None:
        self._pools: dict[PoolKey, tuple[UpstreamPool, str]] = {}

    @staticmethod
    def _key(route: ModelRoute) -> PoolKey:
        return (route.base_url or "", route.connect_timeout_seconds, route.read_timeout_seconds)

    def _pool(self, route: ModelRoute) -> tuple[UpstreamPool, str]:
        """The pool for ``route``'s upstream and the URL its paths go under."""
        key = self._key(route)
        found = self._pools.get(key)
        if found is not None:
            return found
        if not route.base_url:
            raise ProviderError(500, "model_misconfigured", f"model {route.name!r} has no base_url")
        try:
            base = check_url(route.base_url) + "/"
        except ValueError as exc:
            raise ProviderError(500, "model_misconfigured", f"model {route.name!r}: {exc}") from exc
        pool = UpstreamPool(
            connect_timeout=route.connect_timeout_seconds,
            read_timeout=route.read_timeout_seconds,
            proxy=proxy_for(route.base_url),
        )
        self._pools[key] = (pool, base)
        return pool, base

    def _headers(self, route: ModelRoute) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if route.api_key is not None:
            headers["Authorization"] = f"Bearer {route.api_key.get()}"
        return headers

    async def aclose(self) -> None:
        pools, self._pools = self._pools, {}
        for pool, _ in pools.values():
            await pool.aclose()

    async def retain(self, routes: Iterable[ModelRoute]) -> None:
        """Close the pools no configured model uses any more (after a reload changed a
        base_url or timeouts). Requests in flight on them finish first."""
        keep = {self._key(route) for route in routes if route.provider == self.name}
        for key in [key for key in self._pools if key not in keep]:
            pool, _ = self._pools.pop(key)
            await pool.aclose()

    # -- plain requests -------------------------------------------------------------------

    async def _send(self, route: ModelRoute, path: str, body: dict[str, Any]) -> Response:
        """Send, retrying only connection errors (nothing reached the upstream, so nothing
        can run twice); timeouts and other failures map to the error envelope at once."""
        pool, base = self._pool(route)
        payload = json.dumps(body, separators=(",", ":")).encode()
        headers = self._headers(route)
        for attempt in range(route.max_retries + 1):
            try:
                return await pool.request("POST", base + path, headers, payload)
            except ConnectFailed as exc:
                if attempt >= route.max_retries:
                    raise _unavailable(route, exc) from exc
                await asyncio.sleep(0.1 * 2**attempt)
            except UpstreamTimeout as exc:
                if exc.connecting and attempt < route.max_retries:
                    await asyncio.sleep(0.1 * 2**attempt)
                    continue
                raise (_unavailable(route, exc) if exc.connecting else _timeout(route)) from exc
            except TransportError as exc:
                # (a protocol error can quote the upstream's bytes: logged, not sent on)
                log.warning("model %r: upstream connection failed: %s", route.name, exc)
                raise _unavailable(route, exc) from exc
        raise _unavailable(route, RuntimeError("no attempt made"))

    async def _post(self, route: ModelRoute, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self._send(route, path, body)
        try:
            content = await response.read()
        except ResponseTooLarge as exc:
            raise _too_large(route, exc) from exc
        except UpstreamTimeout as exc:
            raise _timeout(route) from exc
        except TransportError as exc:
            raise _unavailable(route, exc) from exc
        finally:
            await response.aclose()
        if response.status >= 400:
            raise _upstream_error(route, response.status, content, response.headers)
        try:
            data = json.loads(content)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise ProviderError(
                502,
                "upstream_invalid_response",
                f"model {route.name!r}: upstream sent no JSON object",
                upstream_status=response.status,
            )
        return data

    async def chat(self, route: ModelRoute, body: dict[str, Any]) -> dict[str, Any]:
        return await self._post(route, "chat/completions", {**body, "stream": False})

    async def completion(self, route: ModelRoute, body: dict[str, Any]) -> dict[str, Any]:
        return await self._post(route, "completions", {**body, "stream": False})

    # -- streams --------------------------------------------------------------------------

    def chat_stream(self, route: ModelRoute, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        return self._stream(route, "chat/completions", {**body, "stream": True})

    def completion_stream(
        self, route: ModelRoute, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        return self._stream(route, "completions", {**body, "stream": True})

    async def _stream(
        self, route: ModelRoute, path: str, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        response = await self._send(route, path, body)
        try:
            if response.status >= 400:
                raise _upstream_error(
                    route, response.status, await response.read(), response.headers
                )
            events = sse_data_lines(response.aiter_bytes(), route.max_sse_line_bytes)
            async for data in events:
                if data == b"[DONE]":
                    await _drain(events)
                    return
                try:
                    chunk = json.loads(data)
                except ValueError as exc:
                    raise ProviderError(
                        502,
                        "upstream_invalid_response",
                        f"model {route.name!r}: upstream sent a malformed stream chunk",
                    ) from exc
                if isinstance(chunk, dict) and "error" in chunk:
                    raise _stream_error(route, data)
                yield chunk
            raise ProviderError(
                502,
                "upstream_stream_incomplete",
                f"model {route.name!r}: upstream stream ended without [DONE]",
            )
        except SSELineTooLong as exc:
            raise ProviderError(
                502,
                "upstream_sse_line_too_long",
                f"model {route.name!r}: upstream sent an event-stream line over "
                f"{route.max_sse_line_bytes} bytes (plugins.openai_compat.max_sse_line_bytes)",
            ) from exc
        except ResponseTooLarge as exc:  # (an error answer, read whole)
            raise _too_large(route, exc) from exc
        except UpstreamTimeout as exc:
            raise _timeout(route) from exc
        except TransportError as exc:
            raise broken_stream(route, exc) from exc
        finally:
            await response.aclose()


async def sse_data_lines(
    chunks: AsyncIterator[bytes], max_line_bytes: int = DEFAULT_MAX_SSE_LINE_BYTES
) -> AsyncIterator[bytes]:
    """The ``data:`` payloads of a server-sent event stream, one per line as they arrive
    (OpenAI-compatible servers put each JSON chunk on one ``data:`` line).
    ``SSELineTooLong`` past ``max_line_bytes``. A line split over many chunks is put
    together in one buffer that only grows (``bytes`` concatenation copied the whole
    line for every chunk: quadratic, 22 s for a line of 50 MB)."""
    pending = bytearray()  # the start of a line that the chunks so far did not end
    async for chunk in chunks:
        start = 0
        end = chunk.find(b"\n")
        while end >= 0:
            if pending:
                pending += memoryview(chunk)[start:end]
                line = bytes(pending)
                pending.clear()
            else:
                line = chunk[start:end]
            if len(line) > max_line_bytes:
                raise SSELineTooLong
            if line.startswith(b"data:"):
                yield line[5:].strip()
            start = end + 1
            end = chunk.find(b"\n", start)
        if start < len(chunk):
            pending += memoryview(chunk)[start:]
            if len(pending) > max_line_bytes:
                raise SSELineTooLong
    if pending.startswith(b"data:"):
        yield bytes(pending[5:]).strip()


async def _drain(lines: AsyncIterator[bytes]) -> None:
    """Read the end of the body after ``[DONE]`` so the pool keeps the connection (an
    unread body closes it, and the next stream pays a new connect). An upstream that
    keeps the body open after ``[DONE]`` is given up on after a moment."""
    try:
        async with asyncio.timeout(_DRAIN_SECONDS):
            async for _ in lines:
                pass
    except (TimeoutError, TransportError, SSELineTooLong):
        pass


def _unavailable(route: ModelRoute, exc: Exception) -> ProviderError:
    return ProviderError(
        502,
        "upstream_unavailable",
        f"model {route.name!r}: cannot reach the upstream ({type(exc).__name__})",
    )


def _too_large(route: ModelRoute, exc: ResponseTooLarge) -> ProviderError:
    return ProviderError(502, "upstream_response_too_large", f"model {route.name!r}: {exc}")


def _timeout(route: ModelRoute) -> ProviderError:
    return ProviderError(504, "upstream_timeout", f"model {route.name!r}: the upstream timed out")


def _upstream_error(
    route: ModelRoute, status: int, content: bytes, headers: Mapping[str, str] | None = None
) -> ProviderError:
    """The gateway's answer to an upstream error: the status and a short reason of the
    gateway's own. The upstream's body is logged (bounded), never sent on: an upstream
    (or whatever a ``base_url`` points at) may quote the key it was sent, or anything
    else it holds, in its error message."""
    _log_body(route, status, content)
    # Client mistakes the upstream saw pass through, with the upstream's error code when
    # it is a plain identifier; its own failures and auth problems (the gateway's key,
    # not the caller's) are the gateway's bad gateway.
    ours = status if status in (400, 404, 409, 413, 422, 429) else 502
    code = _error_code(content) if ours != 502 else None
    if status in (401, 403):
        reason = "the upstream refused the gateway's credentials for this model"
    else:
        reason = f"upstream answered {status} {_phrase(status)}".rstrip()
    return ProviderError(
        ours,
        code or "upstream_error",
        f"model {route.name!r}: {reason}; the upstream's message is in the gateway's log",
        upstream_status=status,
        retry_after=headers.get("retry-after") if headers is not None and ours == 429 else None,
    )


def _stream_error(route: ModelRoute, data: bytes) -> ProviderError:
    """An error object the upstream sent in place of a stream chunk; logged, not sent on."""
    _log_body(route, 200, data)
    return ProviderError(
        502,
        "upstream_error",
        f"model {route.name!r}: the upstream's stream ended with an error; its message is "
        "in the gateway's log",
        upstream_status=200,
    )


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _error_code(content: bytes) -> str | None:
    """``error.code`` (else ``error.type``) of an OpenAI error envelope, when it is a
    short identifier (``context_length_exceeded``); never free text."""
    try:
        data = json.loads(content)
    except ValueError:
        return None
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        return None
    for found in (err.get("code"), err.get("type")):
        if isinstance(found, str) and _CODE.fullmatch(found):
            return found
    return None


def _log_body(route: ModelRoute, status: int, content: bytes) -> None:
    text = content[:_LOGGED_BYTES].decode("utf-8", "replace")
    if route.api_key is not None:
        text = text.replace(route.api_key.get(), MASK)
    more = " (cut)" if len(content) > _LOGGED_BYTES else ""
    log.warning("model %r: upstream answered %s: %r%s", route.name, status, text, more)


def broken_stream(route: ModelRoute, exc: TransportError) -> ProviderError:
    """A stream that broke after it started; what broke it is logged, not sent on (a
    protocol error can quote the upstream's bytes)."""
    log.warning("model %r: upstream stream broke: %s", route.name, exc)
    return ProviderError(
        502,
        "upstream_stream_broken",
        f"model {route.name!r}: upstream connection broke mid-stream ({type(exc).__name__})",
    )
