"""The state directory holds the store, the generated admin token and the overrides
file: only the gateway's own user may read it. It is created 0700; the files in it are
created 0600 (``Store.open`` for the SQLite database and its ``-wal``/``-shm``, which
SQLite creates with the database file's mode; the admin token and the overrides file
where they are written). An existing directory open to others is left as the operator
made it (it may be a mounted volume shared on purpose), with a warning."""

from __future__ import annotations

import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def ensure_state_dir(path: Path) -> str | None:
    """Create ``path`` 0700 when it is missing (its parents as the umask says). Returns a
    warning for an existing directory that group or others may enter."""
    try:
        path.mkdir(mode=DIR_MODE, parents=True)
        return None
    except FileExistsError:
        if not path.is_dir():
            raise
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return (
            f"state directory {path} is open to other users (mode {mode:o}); chmod {DIR_MODE:o} it"
        )
    return None
