"""A throwaway PostgreSQL server for the tests, from the binaries of Debian's
``postgresql`` package (``.ci/install-postgres`` installs it).

Each pytest process (each xdist worker) starts one server on a free loopback port, with
its data in a fresh temporary folder, and each test that asks gets a database of its
own (``CREATE DATABASE``, dropped after the test). The server is tuned for speed, not
durability (``fsync = off``): it lives as long as the test session. PostgreSQL refuses
to run as root, so under root (CI) the server runs as the ``postgres`` user the package
creates.

``GATEWAY_TEST_POSTGRES_URL`` (``postgresql://user:password@host:port/db``, a role that
may create databases) makes the tests use that server instead of starting one.
``GATEWAY_TEST_PG_BINDIR`` names the folder of ``initdb``/``pg_ctl``/``psql`` when they
are not in ``/usr/lib/postgresql/<version>/bin`` or on the PATH.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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

    def url(self, database: str, driver: str = "postgresql+asyncpg") -> str:
        url = sa.URL.create(
            driver, self.user, self.password, self.host, self.port, database=database
        )
        return url.render_as_string(hide_password=False)

    def sql(self, statement: str) -> str:
        """Run ``statement`` on the server's ``postgres`` database; its output."""
        if self.psql is None:
            raise PostgresUnavailable("psql is needed to create test databases")
        result = subprocess.run(
            [
                str(self.psql),
                *("-h", self.host, "-p", str(self.port), "-U", self.user, "-d", "postgres"),
                *("-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", "-c", statement),
            ],
            env={**os.environ, "PGPASSWORD": self.password, "PGCONNECT_TIMEOUT": "10"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return result.stdout

    def create_database(self) -> str:
        """A new, empty database; its name."""
        name = f"gw_test_{uuid.uuid4().hex[:16]}"
        self.sql(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        return name

    def drop_database(self, name: str) -> None:
        # FORCE: a gateway process a test left behind must not keep it alive.
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        with contextlib.suppress(ValueError):
            self.databases.remove(name)

    def stop(self) -> None:
        if self.folder is None or self.bindir is None:
            return
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
