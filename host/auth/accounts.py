"""Named operator accounts of password-session mode (``[auth.users.<name>]``).

The legacy ``auth.password`` is the account ``operator``, with ``auth.session_gates`` and
``auth.session_rate_limit``. A session row keeps a fingerprint of its account's
credential at issue time: an HMAC keyed by the session token itself, so the store holds
nothing that can be checked against a password guess without a live token. A session
whose fingerprint no longer matches its account's credential (the password or hash was
changed) or whose account is gone is invalid.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from dataclasses import dataclass
from typing import Protocol

from host.auth.backoff import LoginBackoff
from host.auth.passwords import UNKNOWN_ACCOUNT, PasswordHash, SecretVerifier
from host.auth.principal import Principal
from host.errors import GatewayError
from host.metrics import GatewayMetrics
from host.settings import LEGACY_ACCOUNT, AuthSettings, RateLimit
from host.storage import AuthSession, Store

log = logging.getLogger("gateway.auth")

# Password checks (scrypt: CPU and 32 MiB each) running at once, per process.
PASSWORD_CHECK_SLOTS = 2


class Verifier(Protocol):
    def verify(self, password: str) -> bool: ...


@dataclass(frozen=True, eq=False)
class Account:
    name: str
    principal: Principal
    verifier: Verifier
    credential: bytes  # what the fingerprint binds: the hash text, or the clear secret

    def fingerprint(self, session_token: str) -> str:
        return hmac.new(
            session_token.encode("utf-8"),
            b"gateway-account\0" + self.name.encode("utf-8") + b"\0" + self.credential,
            hashlib.sha256,
        ).hexdigest()


def build_accounts(
    auth: AuthSettings, previous: dict[str, Account] | None = None
) -> dict[str, Account]:
    """The accounts ``auth`` defines. An account whose credential is unchanged since
    ``previous`` keeps its verifier (a clear secret's hash is made once, not per reload)."""
    accounts: dict[str, Account] = {}
    if auth.password is not None:
        gates, limit = frozenset(auth.session_gates), auth.session_rate_limit
        credential = b"secret\0" + auth.password.get().encode("utf-8")
        accounts[LEGACY_ACCOUNT] = _account(LEGACY_ACCOUNT, gates, limit, credential, previous)
    for name, user in auth.users.items():
        if user.password_hash is not None:
            credential = b"hash\0" + user.password_hash.encode("utf-8")
        else:
            assert user.password is not None  # the settings model requires one of them
            credential = b"secret\0" + user.password.get().encode("utf-8")
        accounts[name] = _account(
            name, frozenset(user.gates), user.rate_limit, credential, previous
        )
    return accounts


def _account(
    name: str,
    gates: frozenset[str],
    limit: RateLimit,
    credential: bytes,
    previous: dict[str, Account] | None,
) -> Account:
    old = (previous or {}).get(name)
    verifier: Verifier
    if old is not None and hmac.compare_digest(old.credential, credential):
        verifier = old.verifier
    else:
        kind, _, value = credential.partition(b"\0")
        text = value.decode("utf-8")
        verifier = PasswordHash.parse(text) if kind == b"hash" else SecretVerifier(text)
    return Account(name, Principal(name, "session", gates, limit), verifier, credential)


class AccountBook:
    """The configured accounts, their logins (with back-off) and their sessions' validity."""

    def __init__(self, store: Store, metrics: GatewayMetrics) -> None:
        self.store = store
        self.metrics = metrics
        self.accounts: dict[str, Account] = {}
        self.backoff = LoginBackoff(store)
        self._slots = asyncio.Semaphore(PASSWORD_CHECK_SLOTS)

    def configure(self, auth: AuthSettings) -> None:
        self.accounts = build_accounts(auth, self.accounts)

    async def login(
        self, auth: AuthSettings, user: str | None, password: str, client: str
    ) -> Account:
        """The account ``user`` when ``password`` is its password. A locked-out attempt
        is 429 before the password is looked at (see :mod:`host.auth.backoff`); a wrong
        user or password is 401, the same for both. No ``user`` means the legacy account
        ``operator``, and is a 400 when ``auth.password`` does not define it."""
        if user is None:
            if auth.password is None:
                raise GatewayError(
                    400,
                    "invalid_request_body",
                    "user: required; name the account to log in as ([auth.users.<name>])",
                    param="user",
                )
            user = LEGACY_ACCOUNT
        account = self.accounts.get(user)
        wait = await self.backoff.begin(user, client, auth.login_backoff)
        if wait:
            self.metrics.rate_limited.labels("login_backoff").inc()
            raise GatewayError(
                429,
                "rate_limited",
                f"too many failed logins; retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )
        verifier = account.verifier if account is not None else UNKNOWN_ACCOUNT
        async with self._slots:
            ok = await asyncio.to_thread(verifier.verify, password)
        self.metrics.password_checks.labels("match" if ok else "mismatch").inc()
        if account is None or not ok:
            await self.backoff.failed(user, client)
            self.metrics.auth_failures.labels("invalid_password").inc()
            raise GatewayError(401, "invalid_credentials", "invalid user or password")
        await self.backoff.succeeded(user, client)
        return account

    async def session_principal(self, token: str, session: AuthSession) -> Principal | None:
        """The principal of ``session``'s account, or None when the account is gone or its
        credential changed since the session was issued (the session is then deleted)."""
        account = self.accounts.get(session.principal)
        if (
            account is not None
            and session.credential_fp is not None
            and hmac.compare_digest(session.credential_fp, account.fingerprint(token))
        ):
            return account.principal
        await self.store.delete_auth_sessions(session.token_hash)
        log.info("session of %r revoked: its account or credential changed", session.principal)
        return None

    async def reconcile(self, mode: str) -> int:
        """Delete the sessions the configuration no longer allows: all of them outside
        password-session mode (switching away and back revives none), else those of
        removed accounts."""
        if mode != "password-session":
            deleted = await self.store.delete_auth_sessions()
        else:
            deleted = await self.store.delete_auth_sessions(keep_principals=set(self.accounts))
        if deleted:
            log.info("deleted %d password session(s) the configuration no longer allows", deleted)
        return deleted
