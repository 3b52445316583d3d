"""Experiment (not product code): the gateway with httpcore replaced by a minimal transport.

``gateway serve``'s worker (``host.serve.run_worker``) with one change: the ``openai``
provider's pooled ``httpx.AsyncClient`` gets ``RawTransport``, a keep-alive HTTP/1.1
transport on plain asyncio streams, instead of httpx's default httpcore + anyio
transport. Everything else (the httpx client layer, the routes, the host) is unchanged,
so the difference to the ``gateway`` row of ``bench/openai_proxy.py`` is what httpcore
and anyio cost per request. Plain ``http://`` upstreams only; no proxies, no timeouts,
minimal error handling: a measurement aid, not something to ship.

Run: ``python bench/raw_transport_experiment.py --config gateway.toml``, or
``bench/openai_proxy.py --raw-transport-row``.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

import httpx

from host.serve import run_worker
from host.settings import load_settings
from plugins.openai_compat.providers import upstream
from plugins.openai_compat.providers.base import ModelRoute

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class _Body(httpx.AsyncByteStream):
    def __init__(
        self,
        pool: RawTransport,
        conn: Conn,
        key: tuple[str, int],
        chunked: bool,
        length: int | None,
    ) -> None:
        self.pool, self.conn, self.key = pool, conn, key
        self.chunked, self.length = chunked, length
        self.done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        reader = self.conn[0]
        if self.chunked:
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                yield (await reader.readexactly(size + 2))[:-2]
        elif self.length is not None:
            if self.length:
                yield await reader.readexactly(self.length)
        else:
            yield await reader.read()
            self.conn[1].close()
            return
        self.done = True

    async def aclose(self) -> None:
        if self.done:  # fully read: the connection goes back to the pool
            self.pool.idle.setdefault(self.key, []).append(self.conn)
            self.done = False
        else:
            self.conn[1].close()


class RawTransport(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.idle: dict[tuple[str, int], list[Conn]] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        key = (url.host, url.port or 80)
        body = b"".join([part async for part in request.stream])  # type: ignore[union-attr]
        lines = [f"{request.method} {url.raw_path.decode()} HTTP/1.1"]
        for name, value in request.headers.raw:
            if name.lower() not in (b"content-length", b"transfer-encoding"):
                lines.append(f"{name.decode()}: {value.decode()}")
        lines.append(f"Content-Length: {len(body)}")
        out = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        idle = self.idle.get(key)
        while True:
            reused = bool(idle)
            if idle:
                conn = idle.pop()
            else:
                try:
                    conn = await asyncio.open_connection(*key)
                except OSError as exc:
                    raise httpx.ConnectError(str(exc), request=request) from exc
            try:
                conn[1].write(out)
                head = await conn[0].readuntil(b"\r\n\r\n")
                break
            except (OSError, asyncio.IncompleteReadError) as exc:
                conn[1].close()
                if not reused:  # a kept-alive connection may have been closed: retry
                    raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        headers = []
        for line in head.split(b"\r\n")[1:]:
            if b":" in line:
                name, value = line.split(b":", 1)
                headers.append((name.strip(), value.strip()))
        lower = {k.lower(): v for k, v in headers}
        chunked = lower.get(b"transfer-encoding", b"").lower() == b"chunked"
        length = int(lower[b"content-length"]) if b"content-length" in lower else None
        return httpx.Response(
            int(head[9:12]),
            headers=[(k, v) for k, v in headers if k.lower() != b"transfer-encoding"],
            stream=_Body(self, conn, key, chunked, length),
            request=request,
        )


def _client(self: upstream.OpenAIUpstream, route: ModelRoute) -> httpx.AsyncClient:
    assert route.base_url
    key = (route.base_url, route.connect_timeout_seconds, route.read_timeout_seconds)
    client = self._clients.get(key)
    if client is None:
        client = httpx.AsyncClient(
            base_url=route.base_url.rstrip("/") + "/", transport=RawTransport()
        )
        self._clients[key] = client
    return client


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--config", required=True, help="gateway.toml")
    args = parser.parse_args()
    upstream.OpenAIUpstream._client = _client  # type: ignore[method-assign]
    asyncio.run(run_worker(load_settings(args.config)))


if __name__ == "__main__":
    main()
