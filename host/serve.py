"""``gateway serve``: Hypercorn with HTTP/1.1 + HTTP/2 on one port, and a graceful drain.

On SIGTERM (or SIGINT) each worker: marks itself draining (new requests get 503, /health
says "draining"), ends every open event stream with a final event, waits for in-flight
requests, and only then tells Hypercorn to stop, so no HTTP/2 stream is open when
Hypercorn's graceful timeout runs. With ``--workers N`` the parent binds the sockets,
starts N worker processes on them and forwards the signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import wait as mp_wait
from typing import Any

from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config, Sockets
from hypercorn.utils import wrap_app

from host import __version__
from host.app import _admin_token, create_app
from host.config_admin import offline_config_problems
from host.context import context
from host.settings import Settings, literal_secret_warnings, load_settings, startup_problems
from host.state_dir import ensure_state_dir

log = logging.getLogger("gateway.serve")

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_REQUEST_END_WAIT_SECONDS = 2.0


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


async def run_worker(
    settings: Settings,
    sockets: Sockets | None = None,
    on_signals_handled: Callable[[], None] | None = None,
    extra_plugins: list[tuple[str, object]] | None = None,
) -> None:
    """Serve one worker until SIGTERM/SIGINT, then drain and return.
    ``on_signals_handled`` (given in a worker process of ``--workers N``) is called once
    the signal handlers are in place; such a worker ignores the signals once it stops.
    ``extra_plugins`` are registered directly (embedding, the benchmarks)."""
    app = create_app(settings, extra_plugins=extra_plugins)
    ctx = context(app)
    config = hypercorn_config(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    draining: list[asyncio.Task[None]] = []

    async def drain() -> None:
        budget = settings.server.graceful_timeout_seconds
        ctx.lifecycle.draining = True
        await ctx.hub.drain(timeout=budget / 2)
        await ctx.lifecycle.wait_websockets_closed(timeout=budget / 4)
        await ctx.lifecycle.wait_idle(timeout=budget / 4)
        stop.set()

    @app.before_serving
    async def _freeze_startup_objects() -> None:
        # Runs after the host's start-up (store open, plugins started). Everything built so
        # far lives as long as the worker: move it out of the cyclic collector's reach, or
        # every full collection walks it (tens of ms, the p99 under load).
        gc.collect()
        gc.freeze()

    def on_signal() -> None:
        if not draining:
            draining.append(asyncio.ensure_future(drain()))

    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal)
    # A worker may have inherited these blocked (see _serve_workers); one that arrived
    # while it started is delivered now, to the handler above.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    watchdog: asyncio.Task[None] | None = None
    if on_signals_handled is not None:
        on_signals_handled()
        watchdog = asyncio.ensure_future(_watch_parent(os.getppid(), on_signal))
    wrapped = wrap_app(_request_before_response_end(app), config.wsgi_max_body_size, "asgi")
    try:
        await worker_serve(wrapped, config, sockets=sockets, shutdown_trigger=stop.wait)
    finally:
        if watchdog is not None:
            watchdog.cancel()
        if on_signals_handled is not None:
            # A worker process: closing the loop would reset these to their defaults, and
            # a late SIGTERM (the parent forwarding a Ctrl-C this worker already got)
            # would then kill it on its way out. It is stopping already: ignore them.
            for sig in _STOP_SIGNALS:
                loop.remove_signal_handler(sig)
                signal.signal(sig, signal.SIG_IGN)


async def _watch_parent(parent: int, stop: Callable[[], None]) -> None:
    """A worker whose parent died (SIGKILL, OOM) is reparented: drain and exit rather than
    serve on as an orphan nobody will ever stop."""
    while os.getppid() == parent:  # noqa: ASYNC110 - no event exists for a parent death
        await asyncio.sleep(0.5)
    log.warning("the gateway's parent process %s is gone; this worker drains and exits", parent)
    stop()


def _request_before_response_end(app: Any) -> Any:
    """ASGI wrapper: on HTTP/2, end a response only once the request body is in.

    Hypercorn's HTTP/2 protocol drops a stream when its response ends, and a request DATA
    frame that arrives after that raises ``KeyError`` and kills the whole connection with
    a traceback (pgjones/hypercorn#329: e.g. an early 401/409 to a POST whose empty body
    frame comes in a later packet). Waiting for the request's last frame (briefly: a
    client that never sends it only delays its own response) keeps that order."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("http_version") != "2":
            await app(scope, receive, send)
            return
        request_done = asyncio.Event()

        async def receive_and_watch() -> Any:
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                request_done.set()
            return message

        async def send_in_order(message: Any) -> None:
            if (
                message["type"] == "http.response.body"
                and not message.get("more_body", False)
                and not request_done.is_set()
            ):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_REQUEST_END_WAIT_SECONDS):
                        await request_done.wait()
            await send(message)

        await app(scope, receive_and_watch, send_in_order)

    return wrapped


def _worker_process(
    config_file: str | None, cli_overrides: dict[str, Any], sockets: Sockets, ready: Any
) -> None:
    settings = load_settings(config_file, **cli_overrides)
    asyncio.run(run_worker(settings, sockets, on_signals_handled=ready.set))


def serve(settings: Settings) -> int:
    # Every problem a `gateway config check` finds refuses the start, before anything
    # binds or an admin token is made: a message naming the key, not a lifespan traceback.
    problems = startup_problems(settings) or offline_config_problems(settings)
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    for warning in literal_secret_warnings(settings):
        print(f"warning: {warning}", file=sys.stderr)
    state_warning = ensure_state_dir(settings.state_dir)
    if state_warning:
        print(f"warning: {state_warning}", file=sys.stderr)
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
    readies = [ctx.Event() for _ in range(settings.server.workers)]
    procs = [
        ctx.Process(
            target=_worker_process,
            args=(config_file, settings.cli_overrides, sockets, ready),
            name=f"gateway-worker-{i}",
        )
        for i, ready in enumerate(readies)
    ]
    stopping: list[float] = []

    def on_signal(_signum: int, _frame: Any) -> None:
        if not stopping:
            stopping.append(time.monotonic())

    # Workers start with the stop signals blocked and ignored (both survive exec) until
    # their own handlers are in place, so a Ctrl-C or SIGTERM during their start-up cannot
    # kill them half-started; they say when they are ready, and only then do we forward
    # SIGTERM. Our own signals stay pending meanwhile, not lost.
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        for sig in _STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        for proc in procs:
            proc.start()
    finally:
        for sig in _STOP_SIGNALS:
            signal.signal(sig, on_signal)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)

    # Drain and Hypercorn's graceful stop each take at most the graceful timeout.
    budget = 2 * settings.server.graceful_timeout_seconds + 5
    failed = False
    signalled: set[int] = set()
    while alive := [p for p in procs if p.is_alive()]:
        mp_wait([p.sentinel for p in alive], timeout=0.2)
        if not stopping and any(not p.is_alive() for p in procs):
            # A worker died on its own: stop the rest and fail, so a supervisor restarts
            # the whole service rather than leaving it at reduced strength.
            for proc in procs:
                if not proc.is_alive():
                    print(
                        f"error: {proc.name} exited unexpectedly ({proc.exitcode})",
                        file=sys.stderr,
                        flush=True,
                    )
            failed = True
            stopping.append(time.monotonic())
        if not stopping:
            continue
        for i, proc in enumerate(procs):
            if i not in signalled and readies[i].is_set() and proc.pid is not None:
                signalled.add(i)
                if proc.is_alive():
                    os.kill(proc.pid, signal.SIGTERM)
        if time.monotonic() - stopping[0] > budget:
            for proc in procs:
                if proc.is_alive():
                    print(
                        f"error: {proc.name} did not stop in time; killing it",
                        file=sys.stderr,
                        flush=True,
                    )
                    proc.kill()
                    proc.join(5)
    for group in (sockets.secure_sockets, sockets.insecure_sockets, sockets.quic_sockets):
        for sock in group:
            sock.close()
    for proc in procs:
        if proc.exitcode != 0 and not failed:
            print(f"error: {proc.name} exited with {proc.exitcode}", file=sys.stderr, flush=True)
    return 0 if not failed and all(proc.exitcode == 0 for proc in procs) else 1


__all__ = ["banner", "hypercorn_config", "run_worker", "serve"]
