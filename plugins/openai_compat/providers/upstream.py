"""``openai``: any OpenAI-compatible upstream (vLLM, Ollama, llama.cpp server, LiteLLM,
OpenAI itself), addressed by ``base_url``.

One pooled ``httpx.AsyncClient`` per (base_url, timeouts). Retries only on connection
errors (nothing reached the upstream, so nothing can run twice); upstream errors keep
their status in ``upstream_status``. Streams are forwarded chunk by chunk as they arrive;
closing the iterator (a client that went away) closes the upstream request.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from plugins.openai_compat.providers.base import ModelRoute, Provider, ProviderError

_RETRYABLE = (httpx.ConnectError, httpx.ConnectTimeout)
_DRAIN_SECONDS = 0.2  # what may follow [DONE] before the body ends (normally nothing)


class OpenAIUpstream(Provider):
    name = "openai"
    description = "an OpenAI-compatible HTTP upstream, by base_url"

    def __init__(self) -> None:
        self._clients: dict[tuple[str, float, float], httpx.AsyncClient] = {}

    def _client(self, route: ModelRoute) -> httpx.AsyncClient:
        if not route.base_url:
            raise ProviderError(500, "model_misconfigured", f"model {route.name!r} has no base_url")
        key = (route.base_url, route.connect_timeout_seconds, route.read_timeout_seconds)
        client = self._clients.get(key)
        if client is None:
            timeout = httpx.Timeout(
                connect=route.connect_timeout_seconds,
                read=route.read_timeout_seconds,
                write=route.read_timeout_seconds,
                pool=route.connect_timeout_seconds,
            )
            client = httpx.AsyncClient(
                base_url=route.base_url.rstrip("/") + "/",
                timeout=timeout,
                limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            )
            self._clients[key] = client
        return client

    def _headers(self, route: ModelRoute) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if route.api_key is not None:
            headers["Authorization"] = f"Bearer {route.api_key.get()}"
        return headers

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose()

    # -- plain requests -------------------------------------------------------------------

    async def _send(
        self, route: ModelRoute, path: str, body: dict[str, Any], stream: bool
    ) -> httpx.Response:
        """Send, retrying only connection errors (nothing reached the upstream, so nothing
        can run twice); timeouts and other failures map to the error envelope at once."""
        client = self._client(route)
        request = client.build_request("POST", path, json=body, headers=self._headers(route))
        for attempt in range(route.max_retries + 1):
            try:
                return await client.send(request, stream=stream)
            except _RETRYABLE as exc:
                if attempt >= route.max_retries:
                    raise _unavailable(route, exc) from exc
                await asyncio.sleep(0.1 * 2**attempt)
            except httpx.TimeoutException as exc:
                raise _timeout(route) from exc
            except httpx.HTTPError as exc:
                raise _unavailable(route, exc) from exc
        raise _unavailable(route, RuntimeError("no attempt made"))

    async def _post(self, route: ModelRoute, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self._send(route, path, body, stream=False)
        if response.status_code >= 400:
            raise _upstream_error(route, response.status_code, response.content, response.headers)
        try:
            data: dict[str, Any] = response.json()
        except ValueError as exc:
            raise ProviderError(
                502,
                "upstream_invalid_response",
                f"model {route.name!r}: upstream sent no JSON",
                upstream_status=response.status_code,
            ) from exc
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
        response = await self._send(route, path, body, stream=True)
        try:
            if response.status_code >= 400:
                raise _upstream_error(
                    route, response.status_code, await response.aread(), response.headers
                )
            lines = response.aiter_lines()
            async for line in lines:
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    await _drain(lines)
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
                    raise _upstream_error(route, 502, json.dumps(chunk).encode())
                yield chunk
            raise ProviderError(
                502,
                "upstream_stream_incomplete",
                f"model {route.name!r}: upstream stream ended without [DONE]",
            )
        except httpx.TimeoutException as exc:
            raise _timeout(route) from exc
        except httpx.HTTPError as exc:
            raise ProviderError(
                502,
                "upstream_stream_broken",
                f"model {route.name!r}: upstream connection broke mid-stream "
                f"({type(exc).__name__})",
            ) from exc
        finally:
            await response.aclose()


async def _drain(lines: AsyncIterator[str]) -> None:
    """Read the end of the body after ``[DONE]`` so the pool keeps the connection (an
    unread body closes it, and the next stream pays a new connect). An upstream that
    keeps the body open after ``[DONE]`` is given up on after a moment."""
    try:
        async with asyncio.timeout(_DRAIN_SECONDS):
            async for _ in lines:
                pass
    except (TimeoutError, httpx.HTTPError):
        pass


def _unavailable(route: ModelRoute, exc: Exception) -> ProviderError:
    return ProviderError(
        502,
        "upstream_unavailable",
        f"model {route.name!r}: cannot reach the upstream ({type(exc).__name__})",
    )


def _timeout(route: ModelRoute) -> ProviderError:
    return ProviderError(504, "upstream_timeout", f"model {route.name!r}: the upstream timed out")


def _upstream_error(
    route: ModelRoute, status: int, content: bytes, headers: httpx.Headers | None = None
) -> ProviderError:
    message = ""
    code = "upstream_error"
    try:
        data = json.loads(content)
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            message = str(err.get("message") or "")
            code = str(err.get("code") or err.get("type") or code)
        elif isinstance(err, str):
            message = err
    except ValueError:
        message = content[:200].decode("utf-8", "replace")
    if status in (401, 403):
        # About the gateway's own key, and upstreams quote the key they were given.
        message = "the upstream refused the gateway's credentials for this model"
    # Client mistakes the upstream saw pass through; its own failures and auth problems
    # (the gateway's key, not the caller's) are the gateway's bad gateway.
    ours = status if status in (400, 404, 409, 413, 422, 429) else 502
    return ProviderError(
        ours,
        code if ours != 502 else "upstream_error",
        f"model {route.name!r}: upstream answered {status}: {message or 'no details'}",
        upstream_status=status,
        retry_after=headers.get("retry-after") if headers is not None and ours == 429 else None,
    )
