"""Experiment (not product code): the gateway with its store's write transactions
serialized in-process.

``gateway serve``'s worker (``host.serve.run_worker``) with one change: ``Store.write``
first takes an ``asyncio.Lock`` of the store, so within one process only one write
transaction at a time asks SQLite for the write lock. Shipped, every concurrent writer
runs ``BEGIN IMMEDIATE`` on its own pooled connection and the losers sleep in SQLite's
busy handler (1, 2, 5, 10, ... ms) while the lock is often already free again; with the
lock they queue on the event loop instead. Cross-process writers (``--workers N``) still
meet at SQLite's lock as before. Used by ``bench/pipelines.py --serialized-writes`` to
measure what that convoy costs; a measurement aid, not something to ship as is.

Run: ``python bench/serialized_writes_experiment.py --config gateway.toml``.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncConnection

from host.serve import run_worker
from host.settings import load_settings
from host.storage.store import Store

_shipped_write = Store.write
_locks: dict[int, asyncio.Lock] = {}


@asynccontextmanager
async def serialized_write(self: Store) -> AsyncIterator[AsyncConnection]:
    lock = _locks.setdefault(id(self), asyncio.Lock())
    async with lock, _shipped_write(self) as conn:
        yield conn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="gateway.toml")
    args = parser.parse_args()
    Store.write = serialized_write  # type: ignore[method-assign]
    asyncio.run(run_worker(load_settings(args.config)))


if __name__ == "__main__":
    main()
