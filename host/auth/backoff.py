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
never locked. Counters live in the process (each worker keeps its own).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from typing import Any

from host.settings import LoginBackoffSettings


class _Failures:
    __slots__ = ("count", "last")

    def __init__(self) -> None:
        self.count = 0
        self.last = 0.0


def _locked_for(
    entry: _Failures | None, free: int, policy: LoginBackoffSettings, now: float
) -> float:
    if entry is None or entry.count < free:
        return 0.0
    delay = min(policy.base_seconds * 2.0 ** min(entry.count - free, 40), policy.max_seconds)
    return max(0.0, entry.last + delay - now)


class LoginBackoff:
    def __init__(self, max_keys: int = 10_000) -> None:
        self.max_keys = max_keys
        self._pairs: OrderedDict[tuple[str, str], _Failures] = OrderedDict()
        # Configured accounts are never evicted, so a flood of made-up names cannot reset
        # the counter of a real one; made-up names share a bounded table.
        self._accounts: dict[str, _Failures] = {}
        self._unknown: OrderedDict[str, _Failures] = OrderedDict()

    def begin(self, account: str, client: str, known: bool, policy: LoginBackoffSettings) -> int:
        """Retry-After seconds when ``account`` is locked for ``client``; else 0, and the
        attempt is counted as a failure until :meth:`succeeded` takes it back."""
        now = time.monotonic()
        pair = self._entry(self._pairs, (account, client), now, policy)
        table = self._accounts if known else self._unknown
        whole = self._entry(table, account, now, policy)
        wait = max(
            _locked_for(pair, policy.free_failures, policy, now),
            _locked_for(whole, policy.account_free_failures, policy, now),
        )
        if wait > 0:
            return max(1, math.ceil(wait))
        for entry in (pair, whole):
            entry.count += 1
            entry.last = now
        return 0

    def failed(self, account: str, client: str) -> None:
        """The attempt :meth:`begin` counted did fail: its lock runs from now, the end of
        the check, not from its start."""
        now = time.monotonic()
        for entry in (
            self._pairs.get((account, client)),
            self._accounts.get(account) or self._unknown.get(account),
        ):
            if entry is not None and entry.count:
                entry.last = max(entry.last, now)

    def succeeded(self, account: str, client: str) -> None:
        self._pairs.pop((account, client), None)
        entry = self._accounts.get(account)
        if entry is not None and entry.count > 0:
            entry.count -= 1

    def forget_accounts_except(self, names: set[str]) -> None:
        """Drop the counters of accounts no longer configured (on a reload)."""
        for name in set(self._accounts) - names:
            del self._accounts[name]

    def _entry(
        self, table: dict[Any, _Failures], key: Any, now: float, policy: LoginBackoffSettings
    ) -> _Failures:
        entry = table.get(key)
        if entry is None:
            entry = table[key] = _Failures()
            if isinstance(table, OrderedDict) and len(table) > self.max_keys:
                table.popitem(last=False)
        elif isinstance(table, OrderedDict):
            table.move_to_end(key)
        if entry.count and now - entry.last > policy.forget_after_seconds:
            entry.count = 0
        return entry
