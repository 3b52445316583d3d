"""The guard every HTTP request and WebSocket upgrade passes before its view runs.

Order: public views (rate limited per client address) -> plugin auth schemes -> the
configured auth mode -> per-principal token bucket -> the view's policy gate (and a
seed-004 body ``policy_gate`` field, when sent). Only credentials that fail are counted
against the client address (``auth.failed_auth_limit``) and throttled with 429: a valid
token or session is never refused for what others at the same address did.
"""

from __future__ import annotations

import time
from typing import Any

from host.auth.accounts import Account, AccountBook
from host.auth.decorators import gate_of, is_public, is_unlimited
from host.auth.principal import Principal
from host.auth.ratelimit import RateLimiter
from host.auth.shared_limits import StoreRateLimiter
from host.auth.tokens import token_hash
from host.errors import GatewayError
from host.metrics import GatewayMetrics
from host.plugins import PluginHost
from host.settings import RateLimit, Settings, is_loopback_bind
from host.storage import AuthSession, Store, now_ms

BEARER_CHALLENGE = 'Bearer realm="agent-gateway"'
_SESSION_CACHE_SECONDS = 2.0


class Authenticator:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        metrics: GatewayMetrics,
        plugins: PluginHost,
        admin_token: str | None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.plugins = plugins
        self.limiter = RateLimiter()
        self.shared_limiter: StoreRateLimiter | None = None
        self.admin_token = admin_token
        self.failures = 0
        self.rate_limited = 0
        self._session_cache: dict[str, tuple[float, AuthSession | None, Principal | None]] = {}
        self.book = AccountBook(store, metrics)
        self._plugin_schemes = plugins.has_impls("gateway_actor_from_request")
        self.configure(settings)

    def configure(self, settings: Settings) -> None:
        """(Re)build the token table; called at start and on every config reload."""
        self.settings = settings
        auth = settings.auth
        table: dict[str, Principal] = {}
        for name, cfg in auth.tokens.items():
            table[token_hash(cfg.token.get())] = Principal(
                name, "token", frozenset(cfg.gates), cfg.rate_limit
            )
        if not auth.tokens and self.admin_token:
            table[token_hash(self.admin_token)] = Principal(
                "admin", "admin", frozenset({"*"}), auth.session_rate_limit
            )
        self._tokens = table
        shared = auth.rate_limit_state == "store" or (
            auth.rate_limit_state == "auto"
            and (self.store.dialect.name != "sqlite" or settings.server.workers > 1)
        )
        self.shared_limiter = StoreRateLimiter(self.store) if shared else None
        self.book.configure(auth)
        # Cached session principals carry the old accounts' gates and credentials.
        self._session_cache.clear()

    # -- entry point ----------------------------------------------------------------------

    async def check(self, req: Any, view: Any, websocket: bool = False) -> Principal | None:
        client = req.remote_addr or "unknown"
        auth = self.settings.auth
        if is_public(view):
            if not is_unlimited(view):
                await self._limit(f"addr:{client}", auth.public_rate_limit, "public")
            return None
        principal = await self.resolve(req, websocket)
        if principal is None:
            self.failures += 1
            self.metrics.auth_failures.labels("missing_or_invalid").inc()
            wait = await self.hit(f"fail:{client}", auth.failed_auth_limit)
            if wait:
                self._refuse_rate(wait, "failed_auth")
            raise GatewayError(
                401,
                "unauthorized",
                "missing or invalid bearer token",
                headers={"WWW-Authenticate": BEARER_CHALLENGE},
            )
        # Known even if a rate limit or a gate refuses it below: what audit records.
        req.gw_principal = principal
        await self._limit(principal.key, principal.rate_limit, "principal")
        gate = gate_of(view)
        if gate is not None:
            self.require_gate(principal, gate)
        if not websocket and req.method in ("POST", "PUT", "PATCH", "DELETE"):
            await self._check_body_gate(req, gate)
        return principal

    def require_gate(self, principal: Principal, gate: str, action: str = "this route") -> None:
        """403 ``policy_gate_denied`` (counted) unless ``principal`` holds ``gate``; also
        for plugins that check a gate inside a handler (one route, several actions)."""
        if not principal.has_gate(gate):
            self.metrics.gate_denied.labels(gate).inc()
            raise GatewayError(
                403,
                "policy_gate_denied",
                f"{action} requires policy gate {gate!r}, which {principal.name!r} lacks",
            )

    def principal_exists(self, owner_key: str) -> bool:
        """Whether the principal keyed ``owner_key`` (``Principal.key``) can still sign in
        under the running configuration: a token still in ``auth.tokens``, the generated
        admin token while no tokens are configured, localhost-dev while its mode is in
        force, a session principal while password-session mode is and its account
        (``[auth.users.<name>]``, or ``operator`` for ``auth.password``) exists. Keys of
        other kinds (a plugin's own auth scheme) are not the host's to judge: True."""
        kind, _, name = owner_key.partition(":")
        auth = self.settings.auth
        if kind == "token":
            return name in auth.tokens
        if kind == "admin":
            return not auth.tokens and self.admin_token is not None
        if kind == "localhost-dev":
            return auth.mode == "localhost-dev"
        if kind == "session":
            return auth.mode == "password-session" and name in self.book.accounts
        return True

    async def hit(self, key: str, limit: RateLimit) -> int:
        """Count a request against ``key``'s bucket: 0 when allowed, else Retry-After
        seconds. In the store when it is shared by several processes (see
        ``auth.rate_limit_state``), else in this process."""
        if self.shared_limiter is None:
            return self.limiter.hit(key, limit)
        return await self.shared_limiter.hit(key, limit)

    async def _limit(self, key: str, limit: RateLimit, scope: str) -> None:
        wait = await self.hit(key, limit)
        if wait:
            self._refuse_rate(wait, scope)

    def _refuse_rate(self, wait: int, scope: str) -> None:
        self.rate_limited += 1
        self.metrics.rate_limited.labels(scope).inc()
        raise GatewayError(
            429,
            "rate_limited",
            f"rate limit exceeded; retry in {wait} s",
            headers={"Retry-After": str(wait)},
        )

    async def _check_body_gate(self, req: Any, gate: str | None) -> None:
        if not req.is_json:
            return
        body = await req.get_json(silent=True)
        if not isinstance(body, dict) or "policy_gate" not in body:
            return
        sent = body["policy_gate"]
        if gate is None:
            raise GatewayError(
                403, "policy_gate_mismatch", f"this route has no policy gate, got {sent!r}"
            )
        if not isinstance(sent, str) or sent.strip() != gate:
            raise GatewayError(403, "policy_gate_mismatch", f"policy_gate must equal {gate!r}")

    # -- resolving a principal --------------------------------------------------------------

    async def resolve(self, req: Any, websocket: bool = False) -> Principal | None:
        if self._plugin_schemes:
            answer = await self.plugins.call_first(
                "gateway_actor_from_request", request=req, settings=self.settings
            )
            if answer is not None and isinstance(answer[1], Principal):
                return answer[1]
        token = bearer_token(req, websocket)
        mode = self.settings.auth.mode
        if token:
            principal = self._tokens.get(token_hash(token))
            if principal is not None:
                return principal
            if mode == "password-session":
                return await self._session_principal(token)
            return None
        if mode == "localhost-dev" and _is_loopback_client(req):
            auth = self.settings.auth
            return Principal(
                "localhost-dev",
                "localhost-dev",
                frozenset(auth.localhost_dev_gates),
                auth.localhost_dev_rate_limit,
            )
        return None

    def token_principal(self, digest: str) -> Principal | None:
        """The principal of the configured gateway token whose ``token_hash`` is
        ``digest`` under the running configuration (for a plugin's own sign-in, such as
        the dashboard's cookie), or None."""
        return self._tokens.get(digest)

    async def session_token_principal(self, token: str) -> Principal | None:
        """The principal of the live password session ``token`` (None outside
        password-session mode, or when it expired, was revoked or its account changed)."""
        if self.settings.auth.mode != "password-session":
            return None
        return await self._session_principal(token)

    async def _session_principal(self, token: str) -> Principal | None:
        digest = token_hash(token)
        now = time.monotonic()
        cached = self._session_cache.get(digest)
        if cached is None or now - cached[0] > _SESSION_CACHE_SECONDS:
            if len(self._session_cache) > 10_000:
                self._session_cache.clear()
            session = await self.store.get_auth_session(digest)
            principal = await self.book.session_principal(token, session) if session else None
            if principal is None:
                session = None
            self._session_cache[digest] = (now, session, principal)
        else:
            session, principal = cached[1], cached[2]
        if session is None or principal is None or not session.active(now_ms()):
            return None
        return principal

    async def reconcile_sessions(self) -> int:
        """Delete the sessions the current configuration no longer allows: all of them
        outside password-session mode (switching away and back revives none), else those
        of removed accounts. Called at start and after every reload."""
        deleted = await self.book.reconcile(self.settings.auth.mode)
        if deleted:
            self._session_cache.clear()
        return deleted

    def session_expires_ms(self, req: Any, principal: Principal, websocket: bool) -> int | None:
        """When the session ``req`` authenticated as ``principal`` expires (from the session
        cache ``resolve`` just filled); None for any other kind of principal."""
        if principal.kind != "session":
            return None
        token = bearer_token(req, websocket)
        cached = self._session_cache.get(token_hash(token)) if token else None
        session = cached[1] if cached is not None else None
        return session.expires_ms if session is not None else None

    def forget_session(self, digest: str | None = None) -> None:
        if digest is None:
            self._session_cache.clear()
        else:
            self._session_cache.pop(digest, None)

    async def login(self, user: str | None, password: str, client: str) -> Account:
        """Log in to an account (see :meth:`AccountBook.login`), counted in the status."""
        try:
            return await self.book.login(self.settings.auth, user, password, client)
        except GatewayError as exc:
            if exc.status == 401:
                self.failures += 1
            elif exc.status == 429:
                self.rate_limited += 1
            raise


def bearer_token(req: Any, websocket: bool = False) -> str | None:
    header = req.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if websocket:
        # Browsers cannot set headers on a WebSocket upgrade.
        return req.args.get("access_token") or None
    return None


def _is_loopback_client(req: Any) -> bool:
    addr = req.remote_addr or ""
    return addr in ("<local>", "") or is_loopback_bind(f"{addr}:0")
