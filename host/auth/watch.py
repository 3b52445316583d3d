"""Re-checking the credential of a long-lived connection (a WebSocket, an event stream).

The guard checks a request once, at its start. A connection that stays open would
otherwise outlive its credential: a revoked or expired session, a token removed from the
config. :meth:`host.auth.guard.Authenticator.check` leaves a :class:`CredentialWatch` on
each request it lets through; the WebSocket loop and the event streams ask it again,
with the very check the guard runs (:meth:`Authenticator.resolve` on the same request:
the same bearer header or ``?access_token=``), on every frame and every
``RECHECK_SECONDS`` while idle, and at a session's expiry. A token principal costs a hash
and a dict lookup; a session one uses the authenticator's session cache.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from host.auth.principal import Principal
from host.storage import now_ms

if TYPE_CHECKING:
    from host.auth.guard import Authenticator

log = logging.getLogger("gateway.auth")

RECHECK_SECONDS = 1.0
ATTRIBUTE = "gw_credential"


class CredentialWatch:
    """Whether the credential a connection was opened with still stands for its principal."""

    __slots__ = ("_expires_ms", "_next", "auth", "principal", "req", "websocket")

    def __init__(self, auth: Authenticator, req: Any, principal: Principal, websocket: bool):
        self.auth = auth
        self.req = req
        self.principal = principal
        self.websocket = websocket
        self._next = time.monotonic() + RECHECK_SECONDS
        self._expires_ms = auth.session_expires_ms(req, principal, websocket)

    def seconds_to_due(self) -> float:
        """Seconds until the next periodic check (the sooner of the interval and expiry)."""
        wait = self._next - time.monotonic()
        if self._expires_ms is not None:
            wait = min(wait, (self._expires_ms - now_ms()) / 1000)
        return max(0.0, wait)

    def due(self) -> bool:
        return self.seconds_to_due() <= 0

    async def valid(self) -> bool:
        """Resolve the credential again: False once it no longer gives the same principal
        with the same gates (revoked, expired, removed, or its gates changed)."""
        self._next = time.monotonic() + RECHECK_SECONDS
        try:
            current = await self.auth.resolve(self.req, self.websocket)
        except Exception:
            # E.g. a plugin auth scheme that fails: fail closed, like the guard would.
            log.exception("re-checking the credential of %s failed", self.principal.key)
            return False
        if (
            current is None
            or current.key != self.principal.key
            or current.gates != self.principal.gates
        ):
            return False
        self._expires_ms = self.auth.session_expires_ms(self.req, current, self.websocket)
        return True


def attach(req: Any, watch: CredentialWatch) -> None:
    setattr(req, ATTRIBUTE, watch)


def credential_watch(req: Any) -> CredentialWatch | None:
    """The watch the guard left on ``req`` (None for a public route)."""
    watch: CredentialWatch | None = getattr(req, ATTRIBUTE, None)
    return watch
