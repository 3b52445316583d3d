"""A bare Quart app with one JSON route, served by the same Hypercorn set-up as the gateway.

The baseline for ``host_overhead.py``: no plugins, no auth, no metrics, no store.
Run: ``python bench/bare_app.py --bind 127.0.0.1:8799 [--quart-schema]``; with
``--quart-schema`` the app also carries QuartSchema, configured as the gateway does.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config
from hypercorn.utils import wrap_app
from quart import Quart

sys.path.insert(0, str(Path(__file__).resolve().parent))
from payload import PAYLOAD, ROUTE


def make_app(quart_schema: bool = False) -> Quart:
    app = Quart("bare_bench")
    if quart_schema:
        # As the gateway configures it: the cost quart-schema adds to every response.
        from quart_schema import QuartSchema

        app.config["QUART_SCHEMA_CONVERT_CASING"] = False
        QuartSchema(
            app,
            openapi_path="/openapi.json",
            swagger_ui_path=None,
            redoc_ui_path=None,
            scalar_ui_path=None,
        )

    @app.get(ROUTE)
    async def ping() -> dict[str, Any]:
        return PAYLOAD

    return app


def bare_config(bind: str) -> Config:
    """What ``host.serve.hypercorn_config`` builds for the benchmark's gateway (HTTP/1.1 +
    h2, no server header, no access log), written out so the bare app imports nothing of
    the gateway: its heap, and so its garbage collections, stay those of a bare app.
    ``host_overhead.py`` checks that the two configs agree."""
    config = Config()
    config.bind = [bind]
    config.accesslog = None
    config.errorlog = "-"
    config.graceful_timeout = 10.0
    config.alpn_protocols = ["h2", "http/1.1"]
    config.include_server_header = False
    return config


async def serve_app(quart_app: Quart, bind: str) -> None:
    """Serve ``quart_app`` on one Hypercorn worker (``bare_config``) until SIGTERM/SIGINT."""
    config = bare_config(bind)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = wrap_app(quart_app, config.wsgi_max_body_size, "asgi")
    await worker_serve(app, config, shutdown_trigger=stop.wait)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bind", required=True, help="HOST:PORT")
    parser.add_argument("--quart-schema", action="store_true", help="add QuartSchema")
    args = parser.parse_args()
    asyncio.run(serve_app(make_app(args.quart_schema), args.bind))


if __name__ == "__main__":
    main()
