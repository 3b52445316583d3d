"""A throwaway PostgreSQL server for the tests, from the binaries of Debian's
``postgresql`` package (``.ci/install-postgres`` installs it).

Each pytest process (each xdist worker) starts one server on a free loopback port, with
its data in a fresh temporary folder, and each test that asks gets a database of its
own (``CREATE DATABASE``, dropped after the test): an empty one, or a copy of a template
the built-in plugins' migrations were applied to once (``migrated_database``). The
server is tuned for speed, not durability (``fsync = off``): it lives as long as the
test session. PostgreSQL refuses to run as root, so under root (CI) the server runs as
the ``postgres`` user the package creates.

``GATEWAY_TEST_POSTGRES_URL`` (``postgresql://user:password@host:port/db``, a role that
may create databases) makes the tests use that server instead of starting one.
``GATEWAY_TEST_PG_BINDIR`` names the folder of ``initdb``/``pg_ctl``/``psql`` when they
are not in ``/usr/lib/postgresql/<version>/bin`` or on the PATH.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import sqlalchemy as sa

URL_ENV = "GATEWAY_TEST_POSTGRES_URL"
BINDIR_ENV = "GATEWAY_TEST_PG_BINDIR"
RUN_AS = "postgres"  # the user Debian's package creates, for a server started by root
TOOLS = ("initdb", "pg_ctl", "psql")

# A throwaway server: fast rather than durable, small, reachable on loopback only.
SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "'32MB'",
    "max_connections": "300",
    "log_min_messages": "warning",
}


class PostgresUnavailable(Exception):
    """No PostgreSQL to test with: the reason says what is missing."""


def find_bindir() -> Path | None:
    """The folder with ``initdb``, ``pg_ctl`` and ``psql``: ``$GATEWAY_TEST_PG_BINDIR``,
    the newest ``/usr/lib/postgresql/<version>/bin`` (Debian keeps them off the PATH),
    or the PATH."""
    candidates: list[Path] = []
    if os.environ.get(BINDIR_ENV):
        candidates.append(Path(os.environ[BINDIR_ENV]))
    versions = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(versions, key=lambda p: _version(p.parent.name), reverse=True)
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for folder in candidates:
        if all((folder / tool).is_file() for tool in TOOLS):
            return folder
    return None


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name)) or (0,)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    """A PostgreSQL server the tests may create databases on."""

    host: str
    port: int
    user: str
    password: str
    psql: Path | None = None
    # Set for a server these tests started (and so stop).
    bindir: Path | None = None
    folder: Path | None = None
    run_as: str | None = None
    databases: list[str] = field(default_factory=list)
    _admin: _Admin | None = field(default=None, repr=False)
    _template: str | None = field(default=None, repr=False)

    def url(self, database: str, driver: str = "postgresql+asyncpg") -> str:
        url = sa.URL.create(
            driver, self.user, self.password, self.host, self.port, database=database
        )
        return url.render_as_string(hide_password=False)

    def sql(self, statement: str) -> None:
        """Run ``statement`` on the server's ``postgres`` database, through one connection
        kept open for the session (a ``psql`` per statement cost a process each time)."""
        if self._admin is None:
            self._admin = _Admin(self.url("postgres", driver="postgresql"))
        self._admin.execute(statement)

    def create_database(self, template: str | None = None) -> str:
        """A new database (a copy of ``template``, else empty); its name."""
        name = f"gw_test_{uuid.uuid4().hex[:16]}"
        copy = f' TEMPLATE "{template}"' if template else ""
        self.sql(f'CREATE DATABASE "{name}"{copy}')
        self.databases.append(name)
        return name

    def migrated_database(self) -> str:
        """A new database with the schema of every built-in plugin's migrations already
        applied, copied from a template migrated once per server: migrating a database
        costs a second or more, a copy a few milliseconds. The gateway still checks and
        applies what is missing at start (a test plugin's migrations)."""
        if self._template is None:
            name = self.create_database()
            assert self._admin is not None
            self._admin.run(migrate(self.url(name)))
            self._template = name
        return self.create_database(template=self._template)

    def drop_database(self, name: str) -> None:
        # FORCE: a gateway process a test left behind must not keep it alive.
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        with contextlib.suppress(ValueError):
            self.databases.remove(name)

    def stop(self) -> None:
        if self.folder is None or self.bindir is None:
            return
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        folder, self.folder = self.folder, None
        subprocess.run(
            [str(self.bindir / "pg_ctl"), "-D", str(folder / "data"), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
            **_as_user(self.run_as),
        )
        shutil.rmtree(folder, ignore_errors=True)


def _as_user(name: str | None) -> dict[str, Any]:
    return {"user": name, "group": name} if name else {}


def server_from_env() -> PostgresServer | None:
    raw = os.environ.get(URL_ENV)
    if not raw:
        return None
    parts = urlsplit(raw)
    bindir = find_bindir()
    psql = (bindir / "psql") if bindir else (Path(p) if (p := shutil.which("psql")) else None)
    return PostgresServer(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=parts.username or "postgres",
        password=parts.password or "",
        psql=psql,
    )


def start_server() -> PostgresServer:
    """Start a throwaway server (see the module's docstring). Raises
    :class:`PostgresUnavailable` when PostgreSQL is not installed."""
    bindir = find_bindir()
    if bindir is None:
        raise PostgresUnavailable(
            "PostgreSQL is not installed (no initdb/pg_ctl/psql in /usr/lib/postgresql/*/bin "
            f"or on the PATH; set {BINDIR_ENV}): run .ci/install-postgres "
            "(apt-get install postgresql)"
        )
    run_as = None
    if os.geteuid() == 0:
        run_as = RUN_AS
        try:
            import pwd

            pwd.getpwnam(RUN_AS)
        except KeyError:
            raise PostgresUnavailable(
                f"running as root, and there is no {RUN_AS!r} user to run PostgreSQL as "
                "(Debian's postgresql package creates it)"
            ) from None
    folder = Path(tempfile.mkdtemp(prefix="gateway-test-pg-"))
    password = secrets.token_hex(16)
    server = PostgresServer(
        "127.0.0.1", 0, "gateway", password, bindir / "psql", bindir, folder, run_as
    )
    try:
        if run_as:
            shutil.chown(folder, run_as, run_as)
        pwfile = folder / "password"
        pwfile.write_text(password)
        if run_as:
            shutil.chown(pwfile, run_as, run_as)
        pwfile.chmod(0o600)
        _run(
            [
                str(bindir / "initdb"),
                *("-D", str(folder / "data"), "-U", server.user, "--pwfile", str(pwfile)),
                *("--auth-local", "trust", "--auth-host", "scram-sha-256"),
                *("-E", "UTF8", "--locale", "C", "--no-sync"),
            ],
            run_as,
        )
        conf = folder / "data" / "postgresql.conf"
        with conf.open("a") as fh:
            fh.writelines(f"{k} = {v}\n" for k, v in SERVER_SETTINGS.items())
        for _ in range(5):  # another process may take the free port before the server does
            server.port = _free_port()
            started = _run(
                [
                    str(bindir / "pg_ctl"),
                    *("-D", str(folder / "data"), "-l", str(folder / "server.log")),
                    *("-o", f"-p {server.port}", "-w", "-t", "60", "start"),
                ],
                run_as,
                check=False,
            )
            if started.returncode == 0:
                break
        else:
            log = (folder / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"PostgreSQL did not start:\n{log}")
    except BaseException:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
        raise
    atexit.register(server.stop)  # should the session end without its teardown
    return server


def _run(args: list[str], run_as: str | None, check: bool = True) -> Any:
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=120, cwd="/", **_as_user(run_as)
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"{Path(args[0]).name} failed: {result.stderr or result.stdout}")
    return result


class _Admin:
    """One asyncpg connection on a thread of its own, for statements the synchronous
    fixtures send (``CREATE DATABASE`` may not run in a transaction block, which
    asyncpg's ``execute`` without arguments honours)."""

    def __init__(self, dsn: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._conn: Any = self.run(asyncpg.connect(dsn, timeout=30))

    def run(self, coro: Any) -> Any:
        """Run ``coro`` on the connection's thread (never in a test's own event loop)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=120)

    def execute(self, statement: str) -> None:
        self.run(self._conn.execute(statement))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.run(self._conn.close(timeout=5))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


async def migrate(url: str) -> None:
    """Apply the migrations of the host and of every built-in plugin to ``url``."""
    from host.app import collect_migrations
    from host.plugins import BUILTIN_PLUGINS, PluginHost
    from host.settings import build_settings
    from host.storage import Store

    everything = {"plugins": {name: {"enabled": True} for name, _ in BUILTIN_PLUGINS}}
    settings = build_settings({"state_dir": tempfile.mkdtemp(), **everything})
    store = Store(url)
    try:
        await store.open(collect_migrations(PluginHost(settings, load_entrypoints=False)))
    finally:
        await store.close()
