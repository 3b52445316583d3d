"""Shared fixtures: settings on a real SQLite file in tmp_path, the Quart test client,
and a real ``gateway serve`` process on a free loopback port.

Both stores. A test that touches the store runs on SQLite and on PostgreSQL when it
asks for the ``store_url`` fixture (parametrised: ``test_x[sqlite]``,
``test_x[postgresql]``), or a whole module with
``pytestmark = pytest.mark.usefixtures("store_url")``. ``make_settings`` and
``live_server`` then use that store; a test that builds a :class:`Store` itself passes
``store_url`` to it. ``postgres_url`` alone is a fresh PostgreSQL database (for tests
that only make sense there, such as several replicas on one database). PostgreSQL is
started by the tests (see ``tests/pg.py``); where it is not installed its tests are
skipped, except in CI (``CI=true``), where that is an error. Pick one store with
``-k sqlite`` or ``-k postgresql``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import tomli_w
from prometheus_client.parser import text_string_to_metric_families
from quart.testing.app import TestApp
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from host.app import create_app
from host.settings import Settings, build_settings, deep_merge
from host.storage import sqlite_url
from tests import pg
from tests.plugins_for_tests.kit import subprocess_env

# Fixtures of the OpenAI surface's tests (module_upstream, upstream, openai_gateway).
pytest_plugins = ["tests.openai_helpers"]

ADMIN_TOKEN = "test-admin-token-0123456789"
READER_TOKEN = "test-reader-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
READER = {"Authorization": f"Bearer {READER_TOKEN}"}


def base_config(state_dir: Path) -> dict[str, Any]:
    return {
        "state_dir": str(state_dir),
        "auth": {
            "mode": "token",
            "tokens": {
                "admin": {"token": ADMIN_TOKEN, "gates": ["*"]},
                "reader": {"token": READER_TOKEN, "gates": []},
            },
        },
    }


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


# -- the stores ------------------------------------------------------------------------------

STORES = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[pg.PostgresServer]:
    """This test process's PostgreSQL server (started on first use)."""
    try:
        server = pg.server_from_env() or pg.start_server()
    except pg.PostgresUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI needs PostgreSQL for the store tests: {exc}", pytrace=False)
        pytest.skip(f"PostgreSQL tests skipped: {exc}")
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: pg.PostgresServer) -> Iterator[str]:
    """A fresh, empty PostgreSQL database of this test (dropped after it)."""
    name = postgres_server.create_database()
    yield postgres_server.url(name)
    postgres_server.drop_database(name)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite store with every built-in plugin's migrations applied, made once per test
    process: ``store_url`` copies it (migrating a new file cost each test about 40 ms of
    CPU; a copy, under 1 ms), as PostgreSQL copies its template database."""
    folder = tmp_path_factory.mktemp("sqlite-template")
    # In a thread: a sync fixture may be set up while the test's event loop runs.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, pg.migrate(sqlite_url(folder))).result(timeout=120)
    return folder / "gateway.db"


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, state_dir: Path) -> Iterator[str]:
    """The store of this run of the test: SQLite in ``state_dir``, or a fresh PostgreSQL
    database, each with the built-in plugins' schema in place (a copy of a template; see
    :meth:`tests.pg.PostgresServer.migrated_database`); empty with the ``empty_store``
    marker. See the module's docstring."""
    empty = request.node.get_closest_marker("empty_store") is not None
    if request.param == "sqlite":
        if not empty:
            shutil.copyfile(request.getfixturevalue("sqlite_template"), state_dir / "gateway.db")
        yield sqlite_url(state_dir)
        return
    server = request.getfixturevalue("postgres_server")
    name = server.create_database() if empty else server.migrated_database()
    yield server.url(name)
    server.drop_database(name)


@pytest.fixture(scope="module", params=STORES)
def module_store(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """For a server shared by a module's tests: its config's store section, once per
    store: ``{}`` (SQLite in the server's state directory) or a fresh PostgreSQL
    database's ``{"storage": {"url": ...}}``. Tests using it run as ``[sqlite]`` and
    ``[postgresql]``."""
    if request.param == "sqlite":
        yield {}
        return
    server = request.getfixturevalue("postgres_server")
    name = server.migrated_database()
    yield {"storage": {"url": server.url(name)}}
    server.drop_database(name)


def _sqlite(url: str, *statements: str) -> list[tuple[Any, ...]]:
    """Run ``statements`` on the SQLite file of ``url`` in one committed transaction; the
    last one's rows. Called in a thread: the test's event loop also runs an in-process
    gateway, whose open write transaction cannot end while a call here holds the loop
    (the wait for its lock then ran out as "database is locked" on a loaded machine)."""
    import sqlite3

    with contextlib.closing(
        sqlite3.connect(sa.engine.make_url(url).database or "", timeout=30)
    ) as conn:
        with conn:
            rows: list[tuple[Any, ...]] = []
            for sql in statements:
                rows = conn.execute(sql).fetchall()
            return rows


async def db_rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    """Read a store's database independently of the store: the plain sqlite3 module, or
    a connection of its own to PostgreSQL. ``sql`` must be valid on the store's dialect."""
    if url.startswith("sqlite"):
        return await asyncio.to_thread(_sqlite, url, sql)
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return [tuple(r) for r in await conn.exec_driver_sql(sql)]
    finally:
        await engine.dispose()


async def db_execute(url: str, *statements: str) -> None:
    """Run ``statements`` on a store's database in one committed transaction, beside the
    store (as another program, or an older gateway, would). Valid on the store's dialect."""
    if url.startswith("sqlite"):
        await asyncio.to_thread(_sqlite, url, *statements)
        return
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            for sql in statements:
                await conn.exec_driver_sql(sql)
    finally:
        await engine.dispose()


def store_section(url: str) -> dict[str, Any]:
    """The config section naming the store ``url`` (``store_url``); nothing for SQLite,
    the state directory's store being the default."""
    return {"storage": {"url": url}} if url.startswith("postgresql") else {}


def store_config(request: pytest.FixtureRequest) -> dict[str, Any]:
    """``{"storage": {"url": ...}}`` when the test runs on PostgreSQL (``store_url``);
    on SQLite the default (the state directory) is the store."""
    if "store_url" not in request.fixturenames:
        return {}
    url = request.getfixturevalue("store_url")
    return {"storage": {"url": url}} if url.startswith("postgresql") else {}


@pytest.fixture
def make_settings(state_dir: Path, request: pytest.FixtureRequest) -> Callable[..., Settings]:
    """``make_settings(**overrides)``: base config deep-merged with ``overrides`` (on the
    test's store, see ``store_url``)."""
    store = store_config(request)

    def make(**overrides: Any) -> Settings:
        return build_settings(deep_merge(deep_merge(base_config(state_dir), store), overrides))

    return make


@asynccontextmanager
async def running_app(settings: Settings, **kwargs: Any) -> AsyncIterator[Any]:
    """Yield ``(app, client)`` with start-up and shut-down hooks run."""
    kwargs.setdefault("load_entrypoints", False)
    app = create_app(settings, **kwargs)
    # Quart's test app allows 6 s for start-up and for shut-down: a loaded machine took
    # longer once (draining waiting runs); a hang is still caught, by pytest's timeout.
    test_app = TestApp(app, startup_timeout=60, shutdown_timeout=60)
    async with test_app:
        yield app, test_app.test_client()


@pytest.fixture
async def app_and_client(make_settings: Callable[..., Settings]) -> AsyncIterator[Any]:
    async with running_app(make_settings()) as pair:
        yield pair


@pytest.fixture
def client(app_and_client: Any) -> Any:
    return app_and_client[1]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(body: Any, code: str) -> dict[str, Any]:
    """``body`` is the error envelope alone, with ``code``, a type and a message."""
    assert set(body) == {"error"}, body
    err = body["error"]
    assert err["code"] == code, body
    assert isinstance(err["type"], str) and err["type"]
    assert isinstance(err["message"], str) and err["message"]
    return dict(err)


async def metric(client: Any, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``; read as the admin
    from an address no test exhausts."""
    response = await client.get("/metrics", headers=ADMIN, scope_base={"client": ("::1", 1)})
    assert response.status_code == 200
    total = 0.0
    for family in text_string_to_metric_families((await response.get_data()).decode()):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


# -- a real server ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    proc: subprocess.Popen[bytes]
    url: str
    config_path: Path
    state_dir: Path
    log_path: Path
    token: str = ADMIN_TOKEN
    extra: dict[str, Any] = field(default_factory=dict)
    # Its store, for db_rows: the configured URL, else SQLite in its state directory.
    store_url: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def start_server(
    tmp_path: Path,
    config: dict[str, Any] | None = None,
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
    scheme: str = "http",
    wait: bool = True,
    verify: Any = False,
) -> LiveServer:
    state = tmp_path / "srv-state"
    port = free_port()
    data = deep_merge(base_config(state), config or {})
    data.setdefault("server", {})
    data["server"].setdefault("bind", f"127.0.0.1:{port}")
    data["server"].setdefault("graceful_timeout_seconds", 5)
    data.setdefault("events", {}).setdefault("poll_seconds", 0.2)
    port = int(data["server"]["bind"].rpartition(":")[2])
    config_path = tmp_path / "gateway.toml"
    config_path.write_text(tomli_w.dumps(data))
    log_path = tmp_path / "server.log"
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "host.cli", "serve", "--config", str(config_path), *(args or [])],
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        env=full_env,
        cwd=tmp_path,
    )
    server = LiveServer(proc, f"{scheme}://127.0.0.1:{port}", config_path, state, log_path)
    url = data.get("storage", {}).get("url")
    server.store_url = url if isinstance(url, str) else sqlite_url(state)
    if wait:
        wait_healthy(server, verify=verify)
    return server


def wait_healthy(server: LiveServer, timeout: float = 30, verify: Any = False) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"gateway exited early:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/health", timeout=1, verify=verify).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"gateway did not become healthy:\n{server.log()}")


@pytest.fixture
def live_server(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., LiveServer]]:
    """``live_server(config=..., args=[...], env=...)`` starts ``gateway serve`` (on the
    test's store, see ``store_url``)."""
    servers: list[LiveServer] = []
    store = store_config(request)

    def start(**kwargs: Any) -> LiveServer:
        kwargs["config"] = deep_merge(store, kwargs.get("config") or {})
        server = start_server(tmp_path / f"srv{len(servers)}", **kwargs)
        servers.append(server)
        return server

    for path in [tmp_path / f"srv{i}" for i in range(8)]:
        path.mkdir()
    yield start
    for server in servers:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(10)


# -- the gateway command line, and its configuration file --------------------------------------


def gateway_cli(
    *args: str, cwd: Path, site: str | Path | None = None, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """``gateway *args`` run as a user runs it: a subprocess in ``cwd``, its output as text.
    The repository, and ``site`` (fake installed distributions) when given, come first on
    PYTHONPATH; no GATEWAY_* variable is set but those in ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "host.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=subprocess_env(*([Path(site)] if site else []), **env),
        timeout=60,
    )


def write_config(path: Path, data: dict[str, Any]) -> Path:
    """``data`` as TOML at ``path``, its folder made if missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(data))
    return path


# -- a fake OpenAI-compatible upstream ---------------------------------------------------------


@pytest.fixture
def fake_upstream() -> Iterator[Any]:
    """A real OpenAI-compatible HTTP server on loopback (``tests/fake_openai_upstream.py``):
    ``.url``, ``.api_key``, ``.requests`` (everything it received), ``.release`` and
    ``.disconnected`` events; behaviour chosen by the upstream model name."""
    from tests.fake_openai_upstream import FakeUpstream

    upstream = FakeUpstream().start()
    yield upstream
    upstream.stop()
