"""Exponential back-off of password logins, per (account, client address) and per account.

Checked before the password is: a login that is locked out gets 429 without the scrypt
being computed, whatever the password. An attempt counts as a failure from the moment
it starts (so parallel guesses cannot all slip in before the first one fails) and is
taken back when it succeeds. After ``free`` failures each further one locks the key for
``base * 2**k`` seconds (k = 0, 1, 2, ...), at most ``max``; a key with no failure for
``forget_after`` seconds starts again from zero.

Per (account, address), a stranger guessing alice's password from one address locks
only that address out of alice's account. Per account (a higher threshold), guesses
spread over many addresses are slowed too, and then alice waits as well: that is the
price of stopping distributed guessing, bounded by ``max_seconds`` per lock. Tokens are
never locked.

The counters live in the store (``gateway_login_failures``), so every process on it
(replicas, the workers of ``--workers N``) counts the same failures, and a restart
forgets none. Counting an attempt is one write transaction under a named lock
(:meth:`Dialect.serialize`): checks and counts of concurrent attempts, in any process,
take turns, so no guess slips past a limit. Logins are rare and each costs a scrypt,
so a write per attempt is cheap beside it. Retention deletes the rows quiet for longer
than ``forget_after_seconds`` (they count as zero anyway).
"""

from __future__ import annotations

import hashlib
import json
import math

import sqlalchemy as sa

from host.settings import LoginBackoffSettings
from host.storage import Store, now_ms
from host.storage.tables import login_failures

_LOCK = "login-backoff"


def _key(kind: str, *parts: str) -> str:
    # A digest: a made-up account name may be long, or hold what PostgreSQL's text
    # cannot (NUL); the column holds neither.
    digest = hashlib.sha256(json.dumps(parts).encode()).hexdigest()
    return f"{kind}:{digest}"


def _pair(account: str, client: str) -> str:
    return _key("pair", account, client)


def _account(account: str) -> str:
    return _key("account", account)


def _locked_for(
    count: int, last_ms: int, free: int, policy: LoginBackoffSettings, now: int
) -> float:
    if count < free:
        return 0.0
    delay = min(policy.base_seconds * 2.0 ** min(count - free, 40), policy.max_seconds)
    return max(0.0, (last_ms - now) / 1000.0 + delay)


class LoginBackoff:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def begin(self, account: str, client: str, policy: LoginBackoffSettings) -> int:
        """Retry-After seconds when ``account`` is locked for ``client``; else 0, and the
        attempt is counted as a failure until :meth:`succeeded` takes it back."""
        t = login_failures
        pair, whole = _pair(account, client), _account(account)
        now = now_ms()
        forget_ms = policy.forget_after_seconds * 1000
        async with self.store.write() as conn:
            await self.store.dialect.serialize(conn, _LOCK)
            rows = await conn.execute(
                sa.select(t.c.key, t.c.count, t.c.last_ms).where(t.c.key.in_([pair, whole]))
            )
            counts: dict[str, tuple[int, int]] = {}
            for key, count, last_ms in rows:
                if now - int(last_ms) <= forget_ms:
                    counts[key] = (int(count), int(last_ms))
            p_count, p_last = counts.get(pair, (0, 0))
            a_count, a_last = counts.get(whole, (0, 0))
            wait = max(
                _locked_for(p_count, p_last, policy.free_failures, policy, now),
                _locked_for(a_count, a_last, policy.account_free_failures, policy, now),
            )
            if wait > 0:
                return max(1, math.ceil(wait))
            for key in (pair, whole):
                count = counts.get(key, (0, 0))[0] + 1
                await conn.execute(
                    self.store.dialect.upsert(
                        t, ["key"], {"key": key, "count": count, "last_ms": now}
                    )
                )
        return 0

    async def failed(self, account: str, client: str) -> None:
        """The attempt :meth:`begin` counted did fail: its lock runs from now, the end of
        the check, not from its start."""
        t = login_failures
        now = now_ms()
        async with self.store.write() as conn:
            await conn.execute(
                t.update()
                .where(
                    t.c.key.in_([_pair(account, client), _account(account)]),
                    t.c.count > 0,
                    t.c.last_ms < now,
                )
                .values(last_ms=now)
            )

    async def succeeded(self, account: str, client: str) -> None:
        t = login_failures
        async with self.store.write() as conn:
            await conn.execute(t.delete().where(t.c.key == _pair(account, client)))
            await conn.execute(
                t.update()
                .where(t.c.key == _account(account), t.c.count > 0)
                .values(count=t.c.count - 1)
            )


async def prune_login_failures(
    store: Store, policy: LoginBackoffSettings, now: int, batch_size: int, dry_run: bool = False
) -> int:
    """Delete the counters quiet for longer than ``forget_after_seconds`` (they count as
    zero: nothing is forgotten earlier than it would be)."""
    t = login_failures
    where = t.c.last_ms < now - policy.forget_after_seconds * 1000
    if dry_run:
        return await store.count_where(t, where)
    return await store.delete_batched(t, where, [t.c.key], batch_size)
