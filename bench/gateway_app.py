"""The gateway plus one tiny benchmark plugin, served the way ``gateway serve`` serves it.

The plugin adds ``GET /bench/ping``: an ordinary protected route (no ``@public``) returning
the same dict as ``bare_app.py``. Every request therefore passes the host's whole path:
request hooks, the Host and Origin checks, the auth guard (bearer token, per-principal
token bucket), an ownership check, metrics and the error handlers. The plugin is passed
with ``create_app(extra_plugins=...)`` so nothing is added to the product. Installed
entry-point plugins load as under ``gateway serve``.

It is served by ``host.serve.run_worker``, the code ``gateway serve`` runs in a worker.

Run: ``python bench/gateway_app.py --config gateway.toml [--profile out.prof]``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from quart import Blueprint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from payload import PAYLOAD, ROUTE

from host.api import GatewayError, current_principal, hookimpl, owner_key, require_owner
from host.hookspecs import Register
from host.serve import run_worker
from host.settings import Settings, load_settings

bp = Blueprint("bench", __name__)


_NOT_FOUND = GatewayError(404, "not_found", "no such object")


@bp.get(ROUTE)
async def ping() -> dict[str, Any]:
    """Benchmark route: a small JSON dict behind the full auth path, after the ownership
    check every read of an owned object makes (the caller reads its own object)."""
    principal = current_principal()
    require_owner(principal, owner_key(principal), read_all="*", not_found=_NOT_FOUND)
    return PAYLOAD


class BenchPlugin:
    @staticmethod
    @hookimpl
    def gateway_register_blueprints(register: Register, settings: Settings) -> None:
        register(bp)


async def serve(settings: Settings) -> None:
    """``host.serve.run_worker`` (the production serving path), with the bench plugin."""
    await run_worker(settings, extra_plugins=[("bench", BenchPlugin())])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="gateway.toml")
    parser.add_argument("--profile", help="write cProfile stats here on shutdown")
    args = parser.parse_args()
    settings = load_settings(args.config)
    if not args.profile:
        asyncio.run(serve(settings))
        return
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        asyncio.run(serve(settings))
    finally:
        profiler.disable()
        profiler.dump_stats(args.profile)


if __name__ == "__main__":
    main()
