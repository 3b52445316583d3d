"""The upstream hop: keep-alive connection pools on aiohttp's client, for model upstreams.

aiohttp (its HTTP parser is C, llhttp) measured 0.73x the CPU per request and 0.54x per
stream of the hand-written h11 client this replaced (bench/README.md, "The upstream
client"), and a well-kept library carries the protocol's edge cases. This module puts
the one call the provider makes, a POST with a JSON body and a streamed answer, behind
the gateway's own errors:

- ``ConnectFailed``: nothing reached the upstream (refused, DNS, TLS, a closed pool):
  safe to retry. ``UpstreamTimeout``: the connect (or the wait for a free connection,
  ``connecting=True``) or a read took longer than its timeout. ``ConnectionBroken``:
  the connection failed after the request may have been sent; ``ResponseTooLarge``: a
  whole answer over ``MAX_BODY_BYTES``.
- ``connect_timeout`` bounds the wait for a free connection plus the TCP (and TLS)
  connect; ``read_timeout`` bounds each wait for the upstream's next bytes.
- A connection is pooled again only after its answer was read to the end; anything else
  (an error, a stream the client left) closes it. Idle connections close
  ``keepalive_seconds`` after their last use, or as soon as the upstream closes them.
- No redirects, no decompression (``Accept-Encoding`` is not sent), no cookies, no
  proxy from the environment unless ``proxy`` names one (``proxy_for``).
"""

from __future__ import annotations

import functools
import ssl
import urllib.request
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.helpers import _EXC_SENTINEL as _SENTINEL
from aiohttp.http_exceptions import HttpProcessingError

MAX_BODY_BYTES = 64 * 1024 * 1024  # a non-streamed answer larger than this is refused


class TransportError(Exception):
    """Base of the client's failures."""


class ConnectFailed(TransportError):
    """The connection could not be made; nothing reached the upstream."""


class UpstreamTimeout(TransportError):
    """Connect or read took longer than its timeout."""

    def __init__(self, message: str, *, connecting: bool) -> None:
        super().__init__(message)
        self.connecting = connecting


class ConnectionBroken(TransportError):
    """The connection failed after the request was (or may have been) sent."""


class ResponseTooLarge(ConnectionBroken):
    """A body read whole is over ``MAX_BODY_BYTES`` (its connection is given up)."""


def check_url(base_url: str) -> str:
    """``base_url`` without its trailing slash; ValueError unless it is http(s)."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {base_url!r}")
    return base_url.rstrip("/")


def proxy_for(url: str) -> str | None:
    """The proxy the environment names for ``url`` (``HTTP_PROXY``, ``HTTPS_PROXY``,
    ``ALL_PROXY``, less ``NO_PROXY``, as curl reads them), or None."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy


def _error(exc: BaseException) -> TransportError:
    """aiohttp's failure as the client's own."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return UpstreamTimeout("connect timed out", connecting=True)
    if isinstance(exc, TimeoutError):  # SocketTimeoutError and other read timeouts
        return UpstreamTimeout("read timed out", connecting=False)
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ClientProxyConnectionError):
        return ConnectFailed(f"{type(exc).__name__}: {exc}")
    return ConnectionBroken(f"{type(exc).__name__}: {exc}")


class _BodyFailingHandler(ResponseHandler):
    """aiohttp (3.14) records a parse error in a response's body (broken chunked
    framing from the upstream) on the connection's protocol only: the body's reader is
    never told and waits forever, past every timeout (the read timer is dropped with
    the error). Tell the body too, so the stream ends with ``upstream_stream_broken``."""

    def set_exception(self, exc: BaseException, exc_cause: BaseException = _SENTINEL) -> None:
        super().set_exception(exc, exc_cause)
        payload = self._payload
        # Only the parse error: a read timeout, say, reaches the body by aiohttp's own path.
        broken = isinstance(exc, HttpProcessingError)
        if broken and payload is not None and payload.exception() is None:
            payload.set_exception(aiohttp.ClientPayloadError(f"the body broke off: {exc!r}"))


def _fail_bodies_with_their_connection(connector: aiohttp.TCPConnector) -> None:
    # The connector's protocol factory is private: where a newer aiohttp lacks it, its
    # own handler is kept (and a broken body may again wait for its read timeout).
    if hasattr(connector, "_factory"):
        factory: Any = functools.partial(_BodyFailingHandler, loop=connector._loop)
        connector._factory = factory


def _salvage(content: aiohttp.StreamReader) -> bytes:
    """The bytes that arrived before the failure aiohttp recorded on ``content``.

    aiohttp's ``readany`` raises a recorded failure before it hands out what is still
    buffered, so a stream whose last chunks came in the same read as the upstream's
    close (or as broken chunked framing) would lose them, and the client would get a
    502 instead of the start of its answer and an error event. Read through the
    buffer's own (private) accessor; any change there costs only these bytes."""
    try:
        if getattr(content, "_buffer", None):
            return bytes(content._read_nowait(-1))
    except Exception:  # the salvage is best effort
        return b""
    return b""


async def read_limited(parts: AsyncIterator[bytes], declared: str | None = None) -> bytes:
    """A whole body, refused past ``MAX_BODY_BYTES``: at once when its Content-Length
    (``declared``) says so, else as soon as that many bytes came."""
    too_large = f"the upstream's answer is over {MAX_BODY_BYTES} bytes"
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ResponseTooLarge(too_large)
    chunks: list[bytes] = []
    size = 0
    async for part in parts:
        size += len(part)
        if size > MAX_BODY_BYTES:
            raise ResponseTooLarge(too_large)
        chunks.append(part)
    return b"".join(chunks)


class Response:
    """Status and headers as soon as they arrive; the body read on demand. Close it (or
    read it to the end) to give the connection back."""

    __slots__ = ("_done", "_pool", "_response", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse, pool: UpstreamPool) -> None:
        self._response: aiohttp.ClientResponse | None = response
        self._pool = pool
        self._done = False
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers  # case-insensitive

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        response = self._response
        if response is None:
            return
        content = response.content
        try:
            while True:
                part = await content.readany()
                if not part:
                    break
                yield part
        # (RuntimeError: aiohttp's "Connection closed." when the connection was lost
        # between two reads before the failure was recorded on the body.)
        except (aiohttp.ClientError, TimeoutError, OSError, RuntimeError) as exc:
            left = _salvage(content)
            if left:
                yield left
            await self.aclose()
            raise _error(exc) from exc
        self._done = True
        await self.aclose()

    async def read(self) -> bytes:
        try:
            return await read_limited(self.aiter_bytes(), self.headers.get("content-length"))
        except ConnectionBroken:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        response, self._response = self._response, None
        if response is None:
            return
        if self._done:
            response.release()  # back to the pool (its body was read to the end)
        else:
            response.close()  # an unread body: the connection goes
        await self._pool._finished()


class UpstreamPool:
    """Keep-alive connections to one upstream (an aiohttp session of its own)."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_connections: int = 256,
        keepalive_seconds: float = 4.0,
        ssl_context: ssl.SSLContext | None = None,
        proxy: str | None = None,
    ) -> None:
        self.proxy = proxy
        self._connector = aiohttp.TCPConnector(
            limit=max_connections,
            limit_per_host=0,
            keepalive_timeout=keepalive_seconds,
            ssl=ssl_context if ssl_context is not None else True,
        )
        _fail_bodies_with_their_connection(self._connector)
        self._session = aiohttp.ClientSession(
            connector=self._connector,
            # ``connect`` counts the wait for a free connection too, as the old pool did.
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=connect_timeout,
                sock_connect=connect_timeout,
                sock_read=read_timeout,
            ),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding", "User-Agent"),
            trust_env=False,
        )
        self._open_responses = 0
        self._closed = False

    async def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> Response:
        """Send a request and return once the status line and headers are in."""
        if self._closed:
            raise ConnectFailed("the connection pool was closed (configuration reloaded)")
        self._open_responses += 1
        try:
            response = await self._session.request(
                method,
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
                proxy=self.proxy,
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            await self._finished()
            raise _error(exc) from exc
        except BaseException:
            await self._finished()
            raise
        return Response(response, self)

    async def _finished(self) -> None:
        self._open_responses -= 1
        if self._closed and self._open_responses == 0:
            await self._session.close()  # the last answer of a pool closed meanwhile

    async def aclose(self) -> None:
        """Close the pool's connections now, or, while answers are being read from it,
        once the last of them ends (requests in flight finish first)."""
        self._closed = True
        if self._open_responses == 0:
            await self._session.close()

    @property
    def open_responses(self) -> int:
        return self._open_responses
