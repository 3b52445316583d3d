"""The listening sockets of ``gateway serve``: bound before anything starts (so a port in
use is one clear line, not a traceback from the middle of start-up), and a cap on the
connections each worker holds open at once.

Hypercorn bounds what happens inside a connection (``h2_max_concurrent_streams``,
``h11_max_incomplete_size``, ``keep_alive_timeout``) but not how many connections it
accepts, so the cap is kept at ``accept()``: the listening socket's ``accept`` counts the
connections it hands to asyncio, and each connection counts itself out when it closes.
Beyond ``server.max_connections`` a new connection is accepted and closed at once,
without a response (on a TLS or HTTP/2 port no HTTP answer could be written before the
handshake anyway), and the refusal is logged.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import socket
import time
import weakref
from collections.abc import Callable
from typing import Any

from hypercorn.config import Config, Sockets

log = logging.getLogger("gateway.serve")

# File descriptors a worker needs besides its connections: the store, logs, pipes.
_SPARE_FDS = 256
_REFUSAL_LOG_SECONDS = 10.0


class BindError(Exception):
    """The configured address cannot be bound; the message is one line for a person."""


def bind_sockets(config: Config, bind: str) -> Sockets:
    """Create and bind the sockets of ``config``; :class:`BindError` if that fails."""
    try:
        return config.create_sockets()
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        if isinstance(exc, socket.gaierror):
            reason = f"cannot resolve the host name ({exc.strerror})"
        raise BindError(f"cannot bind {bind}: {reason[:1].lower()}{reason[1:]}") from None


class ConnectionCap:
    """How many connections one worker has open, and how many it may."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self.refused = 0
        self._logged_at = float("-inf")

    def release(self) -> None:
        self.open -= 1

    def note_refusal(self) -> None:
        self.refused += 1
        now = time.monotonic()
        if now - self._logged_at >= _REFUSAL_LOG_SECONDS:
            self._logged_at = now
            log.warning(
                "connection refused: this worker has %d open connections "
                "(server.max_connections); %d refused so far",
                self.open,
                self.refused,
            )


class _CountedConnection(socket.socket):
    """An accepted connection that counts itself out of its cap once, when it closes (or,
    should it never be closed, when it is collected)."""

    _release: Callable[[], Any]

    def _real_close(self, *args: Any, **kwargs: Any) -> None:
        try:
            super()._real_close(*args, **kwargs)  # type: ignore[misc]
        finally:
            self._release()


class _CappedListener(socket.socket):
    cap: ConnectionCap

    def accept(self) -> tuple[socket.socket, Any]:
        fd, addr = self._accept()  # type: ignore[attr-defined]
        if self.cap.open >= self.cap.limit:
            os.close(fd)
            self.cap.note_refusal()
            # asyncio's accept loop stops on this and tries again at the next readiness.
            raise ConnectionAbortedError(errno.ECONNABORTED, "server.max_connections reached")
        conn = _CountedConnection(self.family, self.type, self.proto, fileno=fd)
        self.cap.open += 1
        conn._release = weakref.finalize(conn, self.cap.release)
        return conn, addr


def capped(sockets: Sockets, cap: ConnectionCap) -> Sockets:
    """``sockets`` with every stream listener counting its connections against ``cap``."""

    def wrap(sock: socket.socket) -> socket.socket:
        listener = _CappedListener(sock.family, sock.type, sock.proto, fileno=sock.detach())
        listener.cap = cap
        return listener

    return Sockets(
        [wrap(s) for s in sockets.secure_sockets],
        [wrap(s) for s in sockets.insecure_sockets],
        sockets.quic_sockets,
    )


def raise_fd_limit(connections: int) -> None:
    """Let the soft open-files limit (often 1024) hold ``connections`` and the worker's own
    files, up to the hard limit, so the cap, not ``EMFILE``, is what refuses."""
    want = connections + _SPARE_FDS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
