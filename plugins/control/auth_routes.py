"""Auth bootstrap and password sessions: issue, revoke."""

from __future__ import annotations

from quart import Blueprint, request
from quart_schema import validate_request, validate_response

from host.api import (
    GatewayError,
    bearer_token,
    context,
    current_principal,
    new_session_token,
    public,
    requires_gate,
    token_hash,
)
from plugins.control.models import (
    BootstrapResponse,
    RevokeResponse,
    SessionRequest,
    SessionResponse,
)

GATE_CONTROL = "allow_gateway_control"

bp = Blueprint("control_auth", __name__)


@bp.get("/gateway/auth/bootstrap")
@public
@validate_response(BootstrapResponse)
async def bootstrap() -> BootstrapResponse:
    """How to authenticate against this gateway (public, rate limited per client)."""
    mode = context().settings.auth.mode
    ui_mode = "none" if mode == "localhost-dev" else mode
    return BootstrapResponse(
        auth_mode=mode,
        ui_auth_mode=ui_mode,
        requires_authentication=ui_mode != "none",
        ops_endpoint="/ops",
        ops_login_endpoint="/ops/login",
        auth_session_endpoint="/gateway/auth/session",
    )


@bp.post("/gateway/auth/session")
@public
@validate_request(SessionRequest)
@validate_response(SessionResponse)
async def issue_session(data: SessionRequest) -> SessionResponse:
    """Log in to an operator account: a bearer token for it (password-session mode only)."""
    ctx = context()
    settings = ctx.settings
    if settings.auth.mode != "password-session":
        raise GatewayError(
            400,
            "auth_mode_mismatch",
            f"sessions are issued only in password-session mode; this gateway uses "
            f"{settings.auth.mode!r}",
        )
    client = request.remote_addr or "unknown"
    account = await ctx.auth.login(data.user, data.password, client)
    token = new_session_token()
    ttl_s = settings.auth.session_ttl_seconds
    record = await ctx.store.create_auth_session(
        token_hash(token), account.name, ttl_s * 1000, client, account.fingerprint(token)
    )
    if ctx.settings.auth.mode != "password-session":
        # The mode changed while the password was checked, after the reload deleted the
        # sessions: this one must not wait for a switch back.
        await ctx.store.delete_auth_sessions(record.token_hash)
        raise GatewayError(400, "auth_mode_mismatch", "the auth mode changed; log in again")
    await ctx.hub.publish(
        "gateway", "auth.session_issued", {"principal": record.principal, "client": client}
    )
    return SessionResponse(
        access_token=token,
        token_type="bearer",  # noqa: S106 - the OAuth token type name
        expires_in_seconds=ttl_s,
        expires_unix_ms=record.expires_ms,
    )


@bp.delete("/gateway/auth/session")
@validate_response(RevokeResponse)
async def revoke_own_session() -> RevokeResponse:
    """Log out: revoke the session token this request carries."""
    ctx = context()
    principal = current_principal()
    token = bearer_token(request)
    if principal.kind != "session" or token is None:
        raise GatewayError(400, "not_a_session", "this request is not authenticated by a session")
    digest = token_hash(token)
    revoked = await ctx.store.revoke_auth_sessions(digest)
    ctx.auth.forget_session(digest)
    await ctx.hub.publish("gateway", "auth.session_revoked", {"principal": principal.name})
    return RevokeResponse(revoked=revoked)


@bp.delete("/gateway/auth/sessions")
@requires_gate(GATE_CONTROL)
@validate_response(RevokeResponse)
async def revoke_all_sessions() -> RevokeResponse:
    """Revoke every active password session (everyone logs in again)."""
    ctx = context()
    revoked = await ctx.store.revoke_auth_sessions(None)
    ctx.auth.forget_session(None)
    await ctx.hub.publish(
        "gateway", "auth.sessions_revoked", {"by": current_principal().name, "count": revoked}
    )
    return RevokeResponse(revoked=revoked)
