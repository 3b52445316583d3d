"""The pages: ``/ops/login``, ``/dashboard``, ``/webchat``, ``/ops`` and its sections,
and their static files. Declared public (seed 004's shell routes answer without a bearer
token) but signed in by the ``gw_ops`` cookie: a page without a live session redirects
to the login, a POST form without the session or its CSRF token is 403 and changes
nothing. Every answer carries a strict Content-Security-Policy (scripts only from
``/ops/static``, none inline) and Jinja escapes everything it prints."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote

from quart import Blueprint, Response, current_app, redirect, render_template, request
from quart_schema import document_response

from host.api import GatewayError, context, document_media_type, public, raw_body
from plugins.dashboard import websession
from plugins.dashboard.config import configured
from plugins.dashboard.models import HtmlPage, StaticAsset
from plugins.dashboard.overview import features, plugin_names
from plugins.dashboard.websession import COOKIE, CSRF_FIELD, PRE_COOKIE, WebSession

bp = Blueprint("dashboard_pages", __name__, template_folder="templates")
STATIC_DIR = Path(__file__).parent / "static"
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}

FLASH_COOKIE = "gw_flash"
FLASH_MAX = 600

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


F = TypeVar("F", bound=Callable[..., Any])


def html(status: int = 200) -> Callable[[F], F]:
    """Document the view's answer as an HTML page (OpenAPI)."""

    def mark(fn: F) -> F:
        return document_response(HtmlPage, status)(document_media_type("text/html", status)(fn))

    return mark


@bp.after_request
async def secure_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    # same-origin, not no-referrer: with no-referrer a form POST carries "Origin: null",
    # which the host refuses as cross-origin.
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Frame-Options"] = "DENY"
    if not request.path.startswith("/ops/static/"):
        response.headers["Cache-Control"] = "no-store"
    return response


async def current_session() -> WebSession | None:
    return await websession.resolve(context(), request.cookies.get(COOKIE))


def to_login() -> Response:
    target = request.full_path.rstrip("?") if request.method == "GET" else "/ops"
    return redirect(f"/ops/login?next={quote(target, safe='/')}", 303)  # type: ignore[return-value]


async def page(template: str, session: WebSession, code: int = 200, **values: Any) -> Any:
    flash = unquote(request.cookies.get(FLASH_COOKIE, ""))[:FLASH_MAX]
    html = await render_template(
        template,
        principal=session.principal,
        csrf=session.csrf,
        features=features(current_app),
        flash=flash,
        **values,
    )
    response = Response(html, code, content_type="text/html; charset=utf-8")
    if flash:
        response.delete_cookie(FLASH_COOKIE, path="/")  # shown once
    return response


def flashed(target: str, message: str) -> Response:
    """Post/redirect/get: go to ``target`` (a path of this site), which shows
    ``message`` once (a short-lived cookie, escaped like everything printed)."""
    response = redirect(target, 303)
    response.set_cookie(
        FLASH_COOKIE,
        quote(message[:FLASH_MAX]),
        max_age=120,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.scheme == "https",
    )
    return response  # type: ignore[return-value]


async def require_form(session: WebSession | None) -> tuple[WebSession, Any]:
    """The session and the form of a POST; 403 without either the session or the CSRF
    token (nothing is changed)."""
    if session is None:
        raise GatewayError(403, "login_required", "sign in at /ops/login first")
    form = await request.form
    if not websession.csrf_ok(session.csrf, form.get(CSRF_FIELD)):
        raise GatewayError(403, "csrf_failed", "the form's CSRF token is missing or wrong")
    return session, form


# -- signing in ----------------------------------------------------------------------------


def _safe_next(raw: str | None) -> str:
    # Only a path of this site: never //host or a scheme (an open redirect).
    if not raw or not raw.startswith("/") or raw.startswith("//") or "\\" in raw:
        return "/dashboard"
    return raw


@bp.get("/ops/login")
@public
@html()
async def login_page() -> Any:
    """The sign-in form: a gateway token, or an account and password in password-session
    mode."""
    return await _login_form(None, 200)


async def _login_form(error: str | None, status: int) -> Any:
    nonce = websession.new_login_nonce()
    html = await render_template(
        "login.html",
        mode=context().settings.auth.mode,
        next=_safe_next(request.args.get("next")),
        nonce=nonce,
        error=error,
    )
    response = Response(html, status, content_type="text/html; charset=utf-8")
    response.set_cookie(
        PRE_COOKIE,
        nonce,
        max_age=3600,
        path="/ops/login",
        httponly=True,
        samesite="Strict",
        secure=request.scheme == "https",
    )
    return response


@bp.post("/ops/login")
@public
@html()
@raw_body  # a form: its CSRF token is checked, not its content type
async def login() -> Any:
    """Sign in: ``token``, or ``user`` and ``password``; sets the session cookie and goes
    to ``next``. A wrong credential shows the form again (401)."""
    form = await request.form
    nonce = request.cookies.get(PRE_COOKIE)
    if not nonce or not websession.csrf_ok(nonce, form.get(CSRF_FIELD)):
        raise GatewayError(403, "csrf_failed", "the login form's CSRF token is missing or wrong")
    ctx = context()
    try:
        if form.get("password"):
            session = await websession.sign_in_password(
                ctx, form.get("user"), form["password"], request.remote_addr or "unknown"
            )
        elif form.get("token"):
            session = await websession.sign_in_token(
                ctx, form["token"], configured(ctx.settings).login_ttl_seconds
            )
        else:
            return await _login_form("enter a gateway token, or a user and password", 400)
    except GatewayError as exc:
        if exc.status in (400, 401):
            return await _login_form(exc.message, exc.status)
        raise
    await ctx.hub.publish(
        "dashboard",
        "dashboard.login",
        {
            "principal": session.principal.key,
            "audit": {
                "action": "dashboard.login",
                "target": session.principal.key,
                "outcome": "success",
                "reason_code": None,
                "actor": session.principal.key,
            },
        },
    )
    response = redirect(_safe_next(form.get("next")), 303)
    response.set_cookie(
        COOKIE,
        session.cookie,
        max_age=session.max_age,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.scheme == "https",
    )
    response.delete_cookie(PRE_COOKIE, path="/ops/login")
    return response


@bp.post("/ops/logout")
@public
@html()
@raw_body
async def logout() -> Any:
    """Sign out (the session ends: a password session is revoked)."""
    session, _form = await require_form(await current_session())
    await websession.sign_out(context(), session.cookie)
    response = redirect("/ops/login", 303)
    response.delete_cookie(COOKIE, path="/")
    return response


# -- the pages -------------------------------------------------------------------------------


@bp.get("/dashboard")
@public
@html()
async def dashboard_page() -> Any:
    """The live overview: health, runs by state, the queue timeline, alerts, approvals
    with approve and deny, recent events; updated from ``/dashboard/stream``."""
    session = await current_session()
    if session is None:
        return to_login()
    return await page("dashboard.html", session, section="dashboard")


@bp.get("/webchat")
@public
@html()
async def webchat_page() -> Any:
    """Chat over ``/v1/responses`` with streamed answers; sessions and their history from
    the sessions plugin, models from ``/v1/models``."""
    session = await current_session()
    if session is None:
        return to_login()
    return await page("webchat.html", session, section="webchat")


@bp.get("/ops")
@public
@html()
async def ops_index() -> Any:
    """The ops console's start page: its sections, and which are disabled."""
    session = await current_session()
    if session is None:
        return to_login()
    return await page("ops.html", session, section="ops")


@bp.get("/ops/diagnostics")
@public
@html()
async def ops_diagnostics() -> Any:
    """Gateway status, the plugins loaded, and a metrics summary."""
    session = await current_session()
    if session is None:
        return to_login()
    ctx = context()
    status = {
        "state": await ctx.lifecycle.state(),
        "uptime_seconds": round(ctx.lifecycle.uptime_seconds, 1),
        "auth_mode": ctx.settings.auth.mode,
        "auth_failures": ctx.auth.failures,
        "rate_limited": ctx.auth.rate_limited,
        "open_streams": ctx.hub.open_streams,
        "store": ctx.store.dialect.name if hasattr(ctx.store.dialect, "name") else "",
    }
    return await page(
        "diagnostics.html",
        session,
        section="diagnostics",
        status=status,
        plugins=plugin_names(current_app),
    )


@bp.get("/ops/static/<name>")
@public(rate_limited=False)
@document_response(StaticAsset, 200)
@document_media_type("text/javascript")
async def static_file(name: str) -> Any:
    """The pages' scripts and styles (no CDN: everything is served from here)."""
    path = STATIC_DIR / name
    kind = STATIC_TYPES.get(path.suffix)
    if kind is None or "/" in name or not path.is_file():
        raise GatewayError(404, "not_found", f"no static file {name!r}")
    response = Response(path.read_bytes(), content_type=f"{kind}; charset=utf-8")
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response
