"""Signing in to the pages: the ``gw_ops`` cookie and its CSRF token.

A sign-in with a gateway token stores a random session id (its hash, and the
``token_hash`` of the gateway token) in ``dashboard_logins``; the principal is looked up
again from the running configuration on every request, so removing the token from the
config signs the cookie out. A sign-in with an account and password (password-session
mode) is a host auth session, issued as ``POST /gateway/auth/session`` issues one: the
cookie holds its token and expires, is revoked and is invalidated with it.

The cookie is HttpOnly, SameSite=Strict, Secure under TLS and lives as long as the
session. Every state-changing request authenticated by it needs the CSRF token, an HMAC
keyed by the cookie's secret (nothing to store; another session's token does not fit).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from host.api import (
    GatewayContext,
    GatewayError,
    Principal,
    new_session_token,
    now_ms,
    token_hash,
)
from plugins.dashboard.tables import logins

COOKIE = "gw_ops"
PRE_COOKIE = "gw_ops_login"  # the login form's own CSRF token (double submit)
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
_TOKEN_PREFIX = "t."  # noqa: S105 - a gateway-token sign-in (dashboard_logins)
_SESSION_PREFIX = "s."  # a password sign-in (a host auth session)


@dataclass(frozen=True)
class WebSession:
    principal: Principal
    cookie: str
    expires_ms: int
    max_age: int = 0  # seconds, for the cookie set at sign-in

    @property
    def csrf(self) -> str:
        return csrf_for(self.cookie)


def csrf_for(cookie: str) -> str:
    return hmac.new(cookie.encode(), b"gateway-ops-csrf", hashlib.sha256).hexdigest()


def csrf_ok(expected: str, sent: Any) -> bool:
    return isinstance(sent, str) and hmac.compare_digest(expected.encode(), sent.encode())


async def sign_in_token(ctx: GatewayContext, token: str, ttl_s: int) -> WebSession:
    """A cookie session for the gateway token ``token``; 401 when it is not one."""
    digest = token_hash(token.strip())
    principal = ctx.auth.token_principal(digest)
    if principal is None:
        raise GatewayError(401, "invalid_credentials", "that is not a token of this gateway")
    sid = new_session_token()
    now = now_ms()
    expires = now + ttl_s * 1000
    async with ctx.store.write() as conn:
        await conn.execute(
            logins.insert().values(
                sid_hash=token_hash(sid), token_digest=digest, created_ms=now, expires_ms=expires
            )
        )
        # Expired sign-ins go as new ones come: the table stays the size of the live ones.
        await conn.execute(logins.delete().where(logins.c.expires_ms < now))
    return WebSession(principal, _TOKEN_PREFIX + sid, expires, ttl_s)


async def sign_in_password(
    ctx: GatewayContext, user: str | None, password: str, client: str
) -> WebSession:
    """A cookie session for an account (password-session mode only): 400 in another
    mode, 401 a wrong user or password, 429 while backing off (the host's login)."""
    settings = ctx.settings
    if settings.auth.mode != "password-session":
        raise GatewayError(
            400,
            "auth_mode_mismatch",
            f"accounts sign in only in password-session mode; this gateway uses "
            f"{settings.auth.mode!r}: sign in with a gateway token",
        )
    account = await ctx.auth.login(user or None, password, client)
    token = new_session_token()
    ttl_s = settings.auth.session_ttl_seconds
    record = await ctx.store.create_auth_session(
        token_hash(token), account.name, ttl_s * 1000, client, account.fingerprint(token)
    )
    await ctx.hub.publish(
        "gateway", "auth.session_issued", {"principal": record.principal, "client": client}
    )
    return WebSession(account.principal, _SESSION_PREFIX + token, record.expires_ms, ttl_s)


async def resolve(ctx: GatewayContext, cookie: str | None) -> WebSession | None:
    """The live session of ``cookie``, or None."""
    if not cookie or len(cookie) > 200:
        return None
    secret = cookie[2:]
    if cookie.startswith(_SESSION_PREFIX):
        principal = await ctx.auth.session_token_principal(secret)
        if principal is None:
            return None
        session = await ctx.store.get_auth_session(token_hash(secret))
        expires = session.expires_ms if session is not None else now_ms()
        return WebSession(principal, cookie, expires)
    if cookie.startswith(_TOKEN_PREFIX):
        async with ctx.store.read() as conn:
            row = (
                await conn.execute(sa.select(logins).where(logins.c.sid_hash == token_hash(secret)))
            ).first()
        if row is None or row.expires_ms <= now_ms():
            return None
        principal = ctx.auth.token_principal(row.token_digest)
        return WebSession(principal, cookie, row.expires_ms) if principal else None
    return None


async def sign_out(ctx: GatewayContext, cookie: str) -> None:
    secret = cookie[2:]
    if cookie.startswith(_SESSION_PREFIX):
        digest = token_hash(secret)
        await ctx.store.revoke_auth_sessions(digest)
        ctx.auth.forget_session(digest)
    elif cookie.startswith(_TOKEN_PREFIX):
        async with ctx.store.write() as conn:
            await conn.execute(logins.delete().where(logins.c.sid_hash == token_hash(secret)))


def new_login_nonce() -> str:
    return secrets.token_urlsafe(24)
