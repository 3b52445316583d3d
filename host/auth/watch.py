"""Re-checking the credential of a long-lived connection (a WebSocket, an event stream).

The guard checks a request once, at its start. A connection that stays open would
otherwise outlive its credential: a revoked or expired session, a token removed from the
config. The WebSocket loop and the event streams make a :class:`CredentialWatch` for the
principal the guard let through (only they: a plain request costs nothing) and ask it,
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


def credential_watch(
    req: Any, principal: Principal | None, websocket: bool = False
) -> CredentialWatch | None:
    """A watch on the credential ``req`` was let through with as ``principal`` (None on a
    public route, where there is none)."""
    if principal is None:
        return None
    from host.context import context  # the context module imports the guard, and so this

    real = req._get_current_object() if hasattr(req, "_get_current_object") else req
    return CredentialWatch(context().auth, real, principal, websocket)
