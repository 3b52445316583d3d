"""The gateway plus one tiny benchmark plugin, served the way ``gateway serve`` serves it.

The plugin adds ``GET /bench/ping``: an ordinary protected route (no ``@public``) returning
the same dict as ``bare_app.py``. Every request therefore passes the host's whole path:
request hooks, the auth guard (bearer token, per-principal token bucket), metrics and the
error handlers. The plugin is passed with ``create_app(extra_plugins=...)`` so nothing is
added to the product. Installed entry-point plugins load as under ``gateway serve``.

With ``--candidate-fixes`` the two changes suggested in ``bench/README.md`` are applied
here (not in the product) so their effect can be measured: one pydantic ``TypeAdapter``
per type for returned dicts/lists, and ``gc.freeze()`` once the app has started.

Run: ``python bench/gateway_app.py --config gateway.toml [--profile out.prof]
[--candidate-fixes]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys
from pathlib import Path
from typing import Any

from hypercorn.asyncio.run import worker_serve
from hypercorn.utils import wrap_app
from pydantic import TypeAdapter
from quart import Blueprint, Quart

sys.path.insert(0, str(Path(__file__).resolve().parent))
from payload import PAYLOAD, ROUTE

from host.api import hookimpl
from host.app import create_app
from host.context import context
from host.hookspecs import Register
from host.serve import hypercorn_config
from host.settings import Settings, load_settings

bp = Blueprint("bench", __name__)


@bp.get(ROUTE)
async def ping() -> dict[str, Any]:
    """Benchmark route: a small JSON dict behind the full auth path."""
    return PAYLOAD


class BenchPlugin:
    @staticmethod
    @hookimpl
    def gateway_register_blueprints(register: Register, settings: Settings) -> None:
        register(bp)


def apply_candidate_fixes(app: Quart) -> None:
    """quart-schema wraps ``app.make_response`` and, for every dict or list a view returns,
    builds a new ``TypeAdapter(type(value))`` to dump it (pydantic's docs: build once). Do
    the same dump with one adapter per type; anything else takes quart-schema's path."""
    converting = app.make_response
    # Quart's own make_response, kept by quart-schema's functools.wraps:
    plain = converting.__wrapped__  # type: ignore[attr-defined]
    adapters: dict[type, TypeAdapter[Any]] = {dict: TypeAdapter(dict), list: TypeAdapter(list)}

    async def make_response(result: Any) -> Any:
        adapter = adapters.get(type(result))
        config = app.config
        if (
            adapter is None
            or config["QUART_SCHEMA_CONVERT_CASING"]
            or config["QUART_SCHEMA_CONVERSION_PREFERENCE"] == "msgspec"
        ):
            return await converting(result)
        options = config["QUART_SCHEMA_PYDANTIC_DUMP_OPTIONS"] or {}
        return await plain(adapter.dump_python(result, **options))

    app.make_response = make_response  # type: ignore[method-assign]

    @app.before_serving
    async def _freeze() -> None:
        # Registered after the host's start-up hook, so it runs once the store is open:
        # move every start-up object out of the collector's reach.
        gc.collect()
        gc.freeze()


async def serve(settings: Settings, candidate_fixes: bool = False) -> None:
    """Like ``host.serve.run_worker``, with the bench plugin added."""
    app = create_app(settings, extra_plugins=[("bench", BenchPlugin())])
    if candidate_fixes:
        apply_candidate_fixes(app)
    ctx = context(app)
    config = hypercorn_config(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def drain() -> None:
        ctx.lifecycle.draining = True
        await ctx.lifecycle.wait_idle(timeout=settings.server.graceful_timeout_seconds / 2)
        stop.set()

    tasks: list[asyncio.Task[None]] = []

    def on_signal() -> None:
        if not tasks:
            tasks.append(asyncio.ensure_future(drain()))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    await worker_serve(wrapped, config, shutdown_trigger=stop.wait)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="gateway.toml")
    parser.add_argument("--profile", help="write cProfile stats here on shutdown")
    parser.add_argument("--candidate-fixes", action="store_true", help="see the docstring")
    args = parser.parse_args()
    settings = load_settings(args.config)
    if not args.profile:
        asyncio.run(serve(settings, args.candidate_fixes))
        return
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        asyncio.run(serve(settings, args.candidate_fixes))
    finally:
        profiler.disable()
        profiler.dump_stats(args.profile)


if __name__ == "__main__":
    main()
