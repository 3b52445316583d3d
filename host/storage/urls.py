"""Store URLs: which schemes the store speaks, the driver each one uses, and the password
that may come from its own secret reference (``storage.password``).

Messages here never repeat a URL: it may carry a password.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import ArgumentError

SQLITE = "sqlite+aiosqlite"
POSTGRES = "postgresql+asyncpg"
# What users write (``DATABASE_URL``s often say ``postgres://``), and the driver it means.
_DRIVERS = {
    "sqlite": SQLITE,
    SQLITE: SQLITE,
    "postgres": POSTGRES,
    "postgresql": POSTGRES,
    POSTGRES: POSTGRES,
}


class StoreURLError(ValueError):
    pass


def sqlite_url(state_dir: Path) -> str:
    return f"{SQLITE}:///{(state_dir / 'gateway.db').resolve()}"


def parse(raw: str) -> sa.URL:
    """``raw`` as a URL of a supported store, its driver made explicit."""
    try:
        url = sa.engine.make_url(raw)
    except ArgumentError:
        raise StoreURLError(
            "storage.url is not a database URL: write postgresql+asyncpg://user@host/db "
            "or sqlite+aiosqlite:///path/to/gateway.db"
        ) from None
    driver = _DRIVERS.get(url.drivername)
    if driver is None:
        raise StoreURLError(
            f"storage.url: {url.drivername!r} is not a supported store: use "
            f"{POSTGRES}://... (PostgreSQL) or {SQLITE}:///... (SQLite)"
        )
    return url.set(drivername=driver)


def store_url(raw: str, password: str | None = None) -> str:
    """The URL the store connects with: ``raw`` with its driver made explicit and
    ``password`` (from ``storage.password``) put in."""
    url = parse(raw)
    if password is not None:
        if url.get_backend_name() != "postgresql":
            raise StoreURLError("storage.password is for a PostgreSQL storage.url")
        if url.password is not None:
            raise StoreURLError(
                "give the database password in storage.url or in storage.password, not both"
            )
        url = url.set(password=password)
    return url.render_as_string(hide_password=False)


def display_url(url: str) -> str:
    """``url`` with its password masked, for logs and messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid URL>"
