"""A pooled HTTP/1.1 client on asyncio streams, for model upstreams.

httpx's default transport (httpcore on anyio) measured about 1.1 ms of CPU per request
at 16 concurrent requests here, half of the gateway's whole cost per proxied call
(bench/README.md, "OpenAI proxy benchmark"). This client does the one thing the
provider needs, a POST with a JSON body and a streamed answer, over keep-alive
connections kept per origin, with h11 for the protocol (request framing, Content-Length
and chunked bodies, keep-alive rules) and asyncio for sockets and TLS.

- ``connect_timeout`` bounds the TCP (and TLS) connect; ``read_timeout`` bounds each
  wait for the upstream's next bytes, as in httpx.
- A connection goes back to the pool only after its response was read to the end and
  both sides agreed to keep it; anything else (an error, a cancelled stream, a body left
  unread) closes it. Idle connections are closed ``keepalive_seconds`` after their last
  use (below the 5 s that uvicorn, Node and others close idle connections at), by one
  timer per pool, and as soon as the upstream closes one (its protocol sees the EOF), so
  no socket is left in CLOSE-WAIT.
- At most ``max_connections`` are open per origin; further requests wait for one.
- Errors are ``ConnectFailed`` (nothing was sent: safe to retry), ``UpstreamTimeout``
  and ``ConnectionBroken`` (``ResponseTooLarge``: a whole answer over
  ``MAX_BODY_BYTES``).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11

READ_SIZE = 65536
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


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, base_url: str) -> tuple[Origin, str]:
        """``http://host:port/prefix`` -> (origin, "/prefix/")."""
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        prefix = parts.path.rstrip("/") + "/"
        return cls(parts.scheme, parts.hostname, port), prefix

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


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


class _Protocol(asyncio.StreamReaderProtocol):
    """asyncio's stream protocol, telling ``on_closed`` when the upstream ends the
    connection (EOF or loss), so an idle one is closed at once rather than at its next
    use or expiry."""

    on_closed: Callable[[], None] | None = None

    def eof_received(self) -> bool | None:
        keep_open = super().eof_received()
        if self.on_closed is not None:
            self.on_closed()
        return keep_open

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        on_closed, self.on_closed = self.on_closed, None  # (and the cycle through it)
        if on_closed is not None:
            on_closed()


class _Connection:
    __slots__ = ("closed_by_peer", "h11", "idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)
        self.idle_since = 0.0
        self.closed_by_peer = False

    def usable(self) -> bool:
        return not (self.closed_by_peer or self.writer.is_closing() or self.reader.at_eof())

    def close(self) -> None:
        self.writer.close()


class Response:
    """Status and headers as soon as they arrive; the body read on demand. Close it (or
    read it to the end) to give the connection back."""

    __slots__ = ("_conn", "_done", "_pool", "headers", "status")

    def __init__(
        self, status: int, headers: dict[str, str], pool: Http1Pool, conn: _Connection
    ) -> None:
        self.status = status
        self.headers = headers
        self._pool = pool
        self._conn: _Connection | None = conn
        self._done = False

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            return
        while True:
            event = await self._pool._next_event(conn)
            if type(event) is h11.Data:
                yield bytes(event.data)
            elif type(event) is h11.EndOfMessage:
                self._done = True
                await self.aclose()
                return

    async def read(self) -> bytes:
        try:
            return await read_limited(self.aiter_bytes(), self.headers.get("content-length"))
        except ConnectionBroken:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool._release(conn, reusable=self._done)


class Http1Pool:
    """Keep-alive connections to one origin."""

    def __init__(
        self,
        origin: Origin,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_connections: int = 256,
        max_idle: int = 64,
        keepalive_seconds: float = 4.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.origin = origin
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_idle = max_idle
        self.keepalive_seconds = keepalive_seconds
        self._ssl = ssl_context if origin.scheme == "https" else None
        if origin.scheme == "https" and self._ssl is None:
            self._ssl = ssl.create_default_context()
        # Oldest first (a dict keeps insertion order): requests take the newest, the
        # reaper closes from the oldest.
        self._idle: dict[_Connection, None] = {}
        self._reaper: asyncio.TimerHandle | None = None
        self._slots = asyncio.Semaphore(max_connections)
        self._open = 0
        self._closed = False

    # -- connections ----------------------------------------------------------------------

    async def _connect(self) -> _Connection:
        # asyncio.open_connection, with the protocol that reports the upstream's close.
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=READ_SIZE, loop=loop)
        protocol = _Protocol(reader, loop=loop)
        try:
            async with asyncio.timeout(self.connect_timeout):
                transport, _ = await loop.create_connection(
                    lambda: protocol,
                    self.origin.host,
                    self.origin.port,
                    ssl=self._ssl,
                    server_hostname=self.origin.host if self._ssl else None,
                )
        except TimeoutError as exc:
            raise UpstreamTimeout("connect timed out", connecting=True) from exc
        except (OSError, ssl.SSLError) as exc:
            raise ConnectFailed(f"{type(exc).__name__}: {exc}") from exc
        self._open += 1
        conn = _Connection(reader, asyncio.StreamWriter(transport, protocol, reader, loop))
        protocol.on_closed = lambda: self._closed_by_peer(conn)
        return conn

    def _checkout(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn, _ = self._idle.popitem()
            if conn.usable() and now - conn.idle_since < self.keepalive_seconds:
                return conn
            self._discard(conn)
        return None

    def _closed_by_peer(self, conn: _Connection) -> None:
        conn.closed_by_peer = True
        if conn in self._idle:  # (in use, its response sees the close)
            del self._idle[conn]
            self._discard(conn)

    def _reap(self) -> None:
        """Close the connections idle for ``keepalive_seconds``; come back when the
        oldest left is due."""
        self._reaper = None
        now = time.monotonic()
        for conn in list(self._idle):
            due = conn.idle_since + self.keepalive_seconds
            if due > now:
                self._reaper = asyncio.get_running_loop().call_later(due - now, self._reap)
                return
            del self._idle[conn]
            self._discard(conn)

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        self._open -= 1

    def _release(self, conn: _Connection, *, reusable: bool) -> None:
        self._slots.release()
        state = conn.h11
        if (
            reusable
            and not self._closed
            and state.our_state is h11.DONE
            and state.their_state is h11.DONE
            and len(self._idle) < self.max_idle
            and conn.usable()
        ):
            state.start_next_cycle()
            conn.idle_since = time.monotonic()
            self._idle[conn] = None
            if self._reaper is None:
                self._reaper = asyncio.get_running_loop().call_later(
                    self.keepalive_seconds, self._reap
                )
        else:
            self._discard(conn)

    async def aclose(self) -> None:
        """Close idle connections now; connections in use close when their response is
        done (they are not pooled again)."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        idle, self._idle = self._idle, {}
        for conn in idle:
            self._discard(conn)

    @property
    def open_connections(self) -> int:
        return self._open

    # -- requests -------------------------------------------------------------------------

    async def request(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> Response:
        """Send a request and return once the status line and headers are in."""
        if self._closed:
            raise ConnectFailed("the connection pool was closed (configuration reloaded)")
        if self._slots.locked():  # every connection busy: wait, as long as a connect may take
            try:
                async with asyncio.timeout(self.connect_timeout):
                    await self._slots.acquire()
            except TimeoutError as exc:
                raise UpstreamTimeout("no free connection", connecting=True) from exc
        else:
            await self._slots.acquire()
        try:
            conn = self._checkout() or await self._connect()
        except BaseException:
            self._slots.release()
            raise
        try:
            state = conn.h11
            out = state.send(
                h11.Request(
                    method=method,
                    target=target,
                    headers=[
                        ("Host", self.origin.host_header),
                        ("Content-Length", str(len(body))),
                        *headers,
                    ],
                )
            )
            out += state.send(h11.Data(data=body)) or b""
            out += state.send(h11.EndOfMessage()) or b""
            conn.writer.write(out)
            if conn.writer.transport.get_write_buffer_size() > READ_SIZE:
                await self._drain(conn)
            while True:
                event = await self._next_event(conn)
                if type(event) is h11.Response:
                    break
                # an InformationalResponse (100 Continue and the like): keep reading
        except BaseException:
            self._release(conn, reusable=False)
            raise
        return Response(
            event.status_code,
            {name.decode("latin-1"): value.decode("latin-1") for name, value in event.headers},
            self,
            conn,
        )

    async def _drain(self, conn: _Connection) -> None:
        try:
            async with asyncio.timeout(self.read_timeout):
                await conn.writer.drain()
        except TimeoutError as exc:
            raise UpstreamTimeout("write timed out", connecting=False) from exc
        except (OSError, ssl.SSLError) as exc:
            raise ConnectionBroken(f"{type(exc).__name__}: {exc}") from exc

    async def _next_event(self, conn: _Connection) -> h11.Event:
        state = conn.h11
        while True:
            try:
                event = state.next_event()
            except h11.RemoteProtocolError as exc:
                raise ConnectionBroken(f"the upstream broke HTTP/1.1: {exc}") from exc
            if event is not h11.NEED_DATA:
                if type(event) is h11.ConnectionClosed:
                    raise ConnectionBroken("the upstream closed the connection")
                return event  # type: ignore[return-value]
            try:
                async with asyncio.timeout(self.read_timeout):
                    data = await conn.reader.read(READ_SIZE)
            except TimeoutError as exc:
                raise UpstreamTimeout("read timed out", connecting=False) from exc
            except (OSError, ssl.SSLError) as exc:
                raise ConnectionBroken(f"{type(exc).__name__}: {exc}") from exc
            try:
                state.receive_data(data)
            except h11.RemoteProtocolError as exc:
                raise ConnectionBroken(f"the upstream broke HTTP/1.1: {exc}") from exc
