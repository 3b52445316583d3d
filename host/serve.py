"""``gateway serve``: Hypercorn with HTTP/1.1 + HTTP/2 on one port, and a graceful drain.

On SIGTERM (or SIGINT) each worker: marks itself draining (new requests get 503, /health
says "draining"), ends every open event stream with a final event, waits for in-flight
requests, and only then tells Hypercorn to stop, so no HTTP/2 stream is open when
Hypercorn's graceful timeout runs. With ``--workers N`` the parent binds the sockets,
starts N worker processes on them, restarts one that dies (see ``_Supervisor``) and
forwards the signal.
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
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait as mp_wait
from typing import Any

from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config, Sockets
from hypercorn.utils import LifespanFailureError, wrap_app
from prometheus_client.core import CounterMetricFamily

from host import __version__
from host.app import _admin_token, create_app
from host.config_admin import offline_config_problems
from host.context import context
from host.listen import BindError, ConnectionCap, bind_sockets, capped, raise_fd_limit
from host.settings import Settings, literal_secret_warnings, load_settings, startup_problems
from host.state_dir import ensure_state_dir

log = logging.getLogger("gateway.serve")

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_REQUEST_END_WAIT_SECONDS = 2.0
# Worker supervision (``--workers N``): a worker that dies before it serves, or within
# QUICK_FAILURE_SECONDS of serving, failed immediately; the next restart waits
# RESTART_BACKOFF_SECONDS * 2**(n-1) after the n-th such failure in a row (at most
# RESTART_BACKOFF_MAX_SECONDS), and QUICK_FAILURE_LIMIT of them in a row (over all
# workers: a start-up that cannot succeed) stop the service with exit code 1.
QUICK_FAILURE_SECONDS = 10.0
QUICK_FAILURE_LIMIT = 5
RESTART_BACKOFF_SECONDS = 0.5
RESTART_BACKOFF_MAX_SECONDS = 10.0


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
    extra_plugins: Sequence[tuple[str, object]] | None = None,
    supervisor: _WorkerLink | None = None,
) -> None:
    """Serve one worker until SIGTERM/SIGINT, then drain and return. ``sockets`` are
    bound already (by ``serve``, or the parent of ``--workers N``); without them the
    worker binds ``server.bind`` itself (embedding, the benchmarks).
    ``on_signals_handled`` (given in a worker process of ``--workers N``) is called once
    the signal handlers are in place; such a worker ignores the signals once it stops.
    ``extra_plugins`` are registered directly (embedding, the benchmarks).
    ``supervisor`` (a worker of ``--workers N``) is told when the worker serves, and
    its restart count is exposed in /metrics."""
    config = hypercorn_config(settings)
    if sockets is None:
        sockets = bind_sockets(config, settings.server.bind)
    raise_fd_limit(settings.server.max_connections)
    sockets = capped(sockets, ConnectionCap(settings.server.max_connections))
    app = create_app(settings, extra_plugins=extra_plugins)
    ctx = context(app)
    if supervisor is not None:
        ctx.metrics.registry.register(_RestartsCollector(supervisor.restarts))
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
        if supervisor is not None:
            supervisor.serving.set()

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


class _WorkerLink:
    """What a worker process of ``--workers N`` shares with its parent: events it sets
    once its signal handlers are in place (``ready``: the parent may forward a stop) and
    once it serves (``serving``), and the service's restart count."""

    def __init__(self, mp: Any, restarts: Any) -> None:
        self.ready = mp.Event()
        self.serving = mp.Event()
        self.restarts = restarts


class _RestartsCollector:
    """``gateway_worker_restarts_total``: workers the parent restarted, read from memory
    shared by every worker, so any worker that answers /metrics gives the service's count."""

    def __init__(self, restarts: Any) -> None:
        self.restarts = restarts

    def collect(self) -> Any:
        yield CounterMetricFamily(
            "gateway_worker_restarts",
            "Worker processes restarted by the gateway's parent process after they died",
            value=self.restarts.value,
        )


def _worker_process(
    config_file: str | None, cli_overrides: dict[str, Any], sockets: Sockets, link: _WorkerLink
) -> None:
    settings = load_settings(config_file, **cli_overrides)
    try:
        asyncio.run(
            run_worker(settings, sockets, on_signals_handled=link.ready.set, supervisor=link)
        )
    except LifespanFailureError as exc:
        print(f"gateway: start-up failed: {startup_failure(exc)}", file=sys.stderr, flush=True)
        sys.exit(1)


def startup_failure(exc: LifespanFailureError) -> str:
    """The one line an operator needs from a failed start-up (an unreadable store, a
    plugin's start-up error): Hypercorn's wrapper and SQLAlchemy's link dropped."""
    text = str(exc).removeprefix("Lifespan failure in startup. ").strip("'")
    return text.splitlines()[0] if text else "the application did not start"


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
    try:
        sockets = bind_sockets(hypercorn_config(settings), settings.server.bind)
    except BindError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1
    state_warning = ensure_state_dir(settings.state_dir)
    if state_warning:
        print(f"warning: {state_warning}", file=sys.stderr)
    token, created = _admin_token(settings)
    print(banner(settings, token, created), flush=True)
    if settings.server.workers == 1:
        try:
            asyncio.run(run_worker(settings, sockets))
        except LifespanFailureError as exc:
            print(f"gateway: start-up failed: {startup_failure(exc)}", file=sys.stderr)
            return 1
        return 0
    return _serve_workers(settings, sockets)


def _serve_workers(settings: Settings, sockets: Sockets) -> int:
    try:
        return _Supervisor(settings, sockets).run()
    finally:
        for group in (sockets.secure_sockets, sockets.insecure_sockets, sockets.quic_sockets):
            for sock in group:
                sock.close()


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


class _Worker:
    """One worker slot: its current process, and when that process started serving."""

    def __init__(self, index: int) -> None:
        self.name = f"gateway-worker-{index}"
        self.proc: Any = None
        self.link: _WorkerLink | None = None
        self.serving_since: float | None = None
        self.restart_at: float | None = None  # monotonic: a restart is due then
        self.signalled = False


class _Supervisor:
    """The parent of ``--workers N``: starts the workers, restarts one that dies (at
    once, or with back-off after immediate failures), forwards a stop signal and waits
    for every worker to drain. Exits 0 after a signal when every worker stopped cleanly,
    1 when a worker failed while stopping or start-ups kept failing."""

    def __init__(self, settings: Settings, sockets: Sockets) -> None:
        self.settings = settings
        self.sockets = sockets
        self.mp = multiprocessing.get_context("spawn")
        self.config_file = str(settings.config_file) if settings.config_file else None
        self.restarts = self.mp.Value("q", 0)
        self.workers = [_Worker(i) for i in range(settings.server.workers)]
        self.stopping: list[float] = []
        self.quick_failures = 0
        self.last_failure = 0.0
        self.failed = False

    def _on_signal(self, _signum: int, _frame: Any) -> None:
        if not self.stopping:
            self.stopping.append(time.monotonic())

    def _start(self, workers: list[_Worker]) -> None:
        # Workers start with the stop signals blocked and ignored (both survive exec)
        # until their own handlers are in place, so a Ctrl-C or SIGTERM during their
        # start-up cannot kill them half-started; they say when they are ready, and only
        # then do we forward SIGTERM. Our own signals stay pending meanwhile, not lost.
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            for sig in _STOP_SIGNALS:
                signal.signal(sig, signal.SIG_IGN)
            for worker in workers:
                if worker.proc is not None:
                    worker.proc.close()  # a dead one, replaced: its sentinel's pipe goes
                worker.link = _WorkerLink(self.mp, self.restarts)
                worker.proc = self.mp.Process(
                    target=_worker_process,
                    args=(self.config_file, self.settings.cli_overrides, self.sockets, worker.link),
                    name=worker.name,
                )
                worker.serving_since = worker.restart_at = None
                worker.signalled = False
                worker.proc.start()
        finally:
            for sig in _STOP_SIGNALS:
                signal.signal(sig, self._on_signal)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)

    def _say(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def _died(self, worker: _Worker, now: float) -> None:
        """A worker died on its own: schedule its restart, or stop the service when
        start-ups keep failing."""
        since = worker.serving_since
        if since is None or now - since < QUICK_FAILURE_SECONDS:
            self.quick_failures += 1
        else:
            self.quick_failures = 0
        self.last_failure = now
        what = f"{worker.name} (pid {worker.proc.pid}) exited unexpectedly"
        what += f" ({_exit_text(worker.proc.exitcode)})"
        if self.quick_failures >= QUICK_FAILURE_LIMIT:
            self._say(
                f"error: {what}; workers failed {self.quick_failures} times in a row before "
                f"serving or within {QUICK_FAILURE_SECONDS:g} s of it: stopping the gateway"
            )
            self.failed = True
            self.stopping.append(now)
            return
        delay = 0.0
        if self.quick_failures:
            delay = RESTART_BACKOFF_SECONDS * 2 ** (self.quick_failures - 1)
            delay = min(delay, RESTART_BACKOFF_MAX_SECONDS)
        worker.restart_at = now + delay
        self._say(f"error: {what}; restarting it in {delay:g} s")

    def _restart_due(self, now: float) -> None:
        due = [w for w in self.workers if w.restart_at is not None and w.restart_at <= now]
        if not due:
            return
        with self.restarts.get_lock():
            self.restarts.value += len(due)
        self._start(due)
        for worker in due:
            self._say(f"{worker.name} restarted as pid {worker.proc.pid}")

    def _wait_timeout(self, now: float) -> float:
        due = [w.restart_at for w in self.workers if w.restart_at is not None]
        return max(0.0, min([now + 0.2, *due]) - now)

    def run(self) -> int:
        self._start(self.workers)
        # Drain and Hypercorn's graceful stop each take at most the graceful timeout.
        budget = 2 * self.settings.server.graceful_timeout_seconds + 5
        judged: list[Any] | None = None  # the processes running when the stop began
        while True:
            alive = [w.proc for w in self.workers if w.proc.is_alive()]
            if self.stopping and not alive:
                break
            now = time.monotonic()
            mp_wait([p.sentinel for p in alive], timeout=self._wait_timeout(now))
            now = time.monotonic()
            for worker in self.workers:
                link = worker.link
                if worker.serving_since is None and link is not None and link.serving.is_set():
                    worker.serving_since = now
                if not self.stopping and worker.restart_at is None and not worker.proc.is_alive():
                    self._died(worker, now)
                up = worker.serving_since
                if up is not None and up > self.last_failure and now - up >= QUICK_FAILURE_SECONDS:
                    self.quick_failures = 0  # a worker started since the last failure is up
            if not self.stopping:
                self._restart_due(now)
                continue
            if judged is None:
                judged = [w.proc for w in self.workers if w.restart_at is None]
            for worker in self.workers:
                worker.restart_at = None
                link = worker.link
                if not worker.signalled and link is not None and link.ready.is_set():
                    worker.signalled = True
                    if worker.proc.is_alive():
                        os.kill(worker.proc.pid, signal.SIGTERM)
            if now - self.stopping[0] > budget:
                for worker in self.workers:
                    if worker.proc.is_alive():
                        self._say(f"error: {worker.name} did not stop in time; killing it")
                        worker.proc.kill()
                        worker.proc.join(5)
        clean = True
        for proc in judged or []:
            if proc.exitcode != 0 and not self.failed:
                self._say(f"error: {proc.name} exited with {proc.exitcode}")
                clean = False
        return 0 if clean and not self.failed else 1


__all__ = ["banner", "hypercorn_config", "run_worker", "serve"]
