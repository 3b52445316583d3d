"""Token material: generation, hashing, the generated admin token file."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

TOKEN_PREFIX_ADMIN = "gw_admin_"  # noqa: S105 - a prefix, not a secret
TOKEN_PREFIX_SESSION = "gw_sess_"  # noqa: S105 - a prefix, not a secret


def new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def load_or_create_admin_token(path: Path) -> tuple[str, bool]:
    """The admin token kept in the state dir; ``created`` is True on first start."""
    if path.is_file():
        token = path.read_text(encoding="utf-8").strip()
        if token:
            return token, False
    path.parent.mkdir(parents=True, exist_ok=True)
    token = new_token(TOKEN_PREFIX_ADMIN)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
    try:
        # Another worker may have won the race: keep whichever file exists first.
        os.link(tmp, path)
    except FileExistsError:
        os.unlink(tmp)
        return path.read_text(encoding="utf-8").strip(), False
    os.unlink(tmp)
    return token, True
