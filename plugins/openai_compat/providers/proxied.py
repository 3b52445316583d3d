"""Upstreams reached through a proxy from the environment, by httpx.

``HTTP_PROXY`` / ``HTTPS_PROXY`` / ``ALL_PROXY`` and ``NO_PROXY`` are honoured as
curl and httpx honour them. Such upstreams go through httpx (which speaks to proxies,
CONNECT tunnels included); every other upstream uses the gateway's own client
(``http1.py``). ``ProxiedPool`` offers the same ``request`` / response interface and
raises the same errors.
"""

from __future__ import annotations

import urllib.request
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx

from plugins.openai_compat.providers.http1 import (
    ConnectFailed,
    ConnectionBroken,
    UpstreamTimeout,
    read_limited,
)


def proxy_for(url: str) -> str | None:
    """The proxy the environment names for ``url``, or None."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy


class ProxiedResponse:
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers = {k.lower(): v for k, v in response.headers.items()}

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._response.aiter_raw():
                yield part
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout("read timed out", connecting=False) from exc
        except httpx.HTTPError as exc:
            raise ConnectionBroken(f"{type(exc).__name__}: {exc}") from exc

    async def read(self) -> bytes:
        return await read_limited(self.aiter_bytes(), self.headers.get("content-length"))

    async def aclose(self) -> None:
        await self._response.aclose()


class ProxiedPool:
    def __init__(
        self, base_url: str, proxy: str, *, connect_timeout: float, read_timeout: float
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            proxy=proxy,
            trust_env=False,
            timeout=httpx.Timeout(
                connect=connect_timeout,
                read=read_timeout,
                write=read_timeout,
                pool=connect_timeout,
            ),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )

    async def request(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> ProxiedResponse:
        request = self._client.build_request(method, target, headers=headers, content=body)
        try:
            response = await self._client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ProxyError) as exc:
            raise ConnectFailed(f"{type(exc).__name__}: {exc}") from exc
        except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise UpstreamTimeout("connect timed out", connecting=True) from exc
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout("read timed out", connecting=False) from exc
        except httpx.HTTPError as exc:
            raise ConnectionBroken(f"{type(exc).__name__}: {exc}") from exc
        return ProxiedResponse(response)

    async def aclose(self) -> None:
        await self._client.aclose()
