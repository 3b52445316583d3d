"""``gateway serve``: Hypercorn with HTTP/1.1 + HTTP/2 on one port, and a graceful drain.

On SIGTERM (or SIGINT) each worker: marks itself draining (new requests get 503, /health
says "draining"), ends every open event stream with a final event, waits for in-flight
requests, and only then tells Hypercorn to stop, so no HTTP/2 stream is open when
Hypercorn's graceful timeout runs. With ``--workers N`` the parent binds the sockets,
starts N worker processes on them and forwards the signal.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import sys
from typing import Any

from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config, Sockets
from hypercorn.utils import wrap_app

from host import __version__
from host.app import _admin_token, create_app
from host.context import context
from host.settings import Settings, literal_secret_warnings, load_settings, startup_problems

log = logging.getLogger("gateway.serve")


def hypercorn_config(settings: Settings) -> Config:
    server = settings.server
    config = Config()
    config.bind = [server.bind]
    config.accesslog = "-" if server.access_log else None
    config.errorlog = "-"
    config.graceful_timeout = server.graceful_timeout_seconds
    config.alpn_protocols = ["h2", "http/1.1"]
    config.include_server_header = False
    if server.certfile and server.keyfile:
        config.certfile = server.certfile
        config.keyfile = server.keyfile
    return config


def base_url(settings: Settings) -> str:
    scheme = "https" if settings.server.certfile else "http"
    host, _, port = settings.server.bind.rpartition(":")
    if host in ("0.0.0.0", "::", "[::]"):  # noqa: S104 - describing, not binding
        host = "127.0.0.1"
    return f"{scheme}://{host}:{port}"


def banner(settings: Settings, token: str | None, created: bool) -> str:
    url = base_url(settings)
    lines = [
        f"agent-gateway {__version__} listening on {url} (HTTP/1.1 and HTTP/2)",
        f"  state directory: {settings.state_dir.resolve()}",
        f"  auth mode: {settings.auth.mode}",
    ]
    token_file = settings.state_dir / settings.auth.admin_token_file
    if token and created:
        lines += [
            f"  admin token (shown once; kept in {token_file}):",
            f"      {token}",
            f'  try: curl -H "Authorization: Bearer {token}" {url}/gateway/status',
        ]
    elif token:
        lines.append(f"  admin token: in {token_file}")
    return "\n".join(lines)


async def run_worker(settings: Settings, sockets: Sockets | None = None) -> None:
    """Serve one worker until SIGTERM/SIGINT, then drain and return."""
    app = create_app(settings)
    ctx = context(app)
    config = hypercorn_config(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    draining: list[asyncio.Task[None]] = []

    async def drain() -> None:
        budget = settings.server.graceful_timeout_seconds
        ctx.lifecycle.draining = True
        await ctx.hub.drain(timeout=budget / 2)
        await ctx.lifecycle.wait_idle(timeout=budget / 2)
        stop.set()

    def on_signal() -> None:
        if not draining:
            draining.append(asyncio.ensure_future(drain()))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    await worker_serve(wrapped, config, sockets=sockets, shutdown_trigger=stop.wait)


def _worker_process(
    config_file: str | None, cli_overrides: dict[str, Any], sockets: Sockets
) -> None:
    settings = load_settings(config_file, **cli_overrides)
    asyncio.run(run_worker(settings, sockets))


def serve(settings: Settings) -> int:
    problems = startup_problems(settings)
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    for warning in literal_secret_warnings(settings):
        print(f"warning: {warning}", file=sys.stderr)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    token, created = _admin_token(settings)
    print(banner(settings, token, created), flush=True)
    if settings.server.workers == 1:
        asyncio.run(run_worker(settings))
        return 0
    return _serve_workers(settings)


def _serve_workers(settings: Settings) -> int:
    config = hypercorn_config(settings)
    sockets = config.create_sockets()
    ctx = multiprocessing.get_context("spawn")
    config_file = str(settings.config_file) if settings.config_file else None
    procs = [
        ctx.Process(
            target=_worker_process,
            args=(config_file, settings.cli_overrides, sockets),
            name=f"gateway-worker-{i}",
        )
        for i in range(settings.server.workers)
    ]
    for proc in procs:
        proc.start()

    def forward(signum: int, _frame: Any) -> None:
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for proc in procs:
        proc.join()
    for group in (sockets.secure_sockets, sockets.insecure_sockets, sockets.quic_sockets):
        for sock in group:
            sock.close()
    return 0 if all(proc.exitcode == 0 for proc in procs) else 1


__all__ = ["banner", "hypercorn_config", "run_worker", "serve"]
