"""Confinement to a session's workspace: every path an agent names (files it reads or
writes, a terminal's working directory) is resolved, symlinks included, and refused
unless it stays inside the workspace."""

from __future__ import annotations

import os
from pathlib import Path


class OutsideWorkspace(Exception):
    """The path leaves the workspace (``..``, an absolute path elsewhere, a symlink)."""


def session_workspace(root: Path, requested: str | None) -> Path:
    """The workspace folder of a new session: ``root`` itself, or the folder ``requested``
    names inside it (made if missing); ValueError when it would leave ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    base = root.resolve()
    if not requested:
        return base
    candidate = Path(requested)
    target = (candidate if candidate.is_absolute() else base / candidate).resolve()
    if not target.is_relative_to(base):
        raise ValueError(f"workspace {requested!r} is outside the agent's root {str(base)!r}")
    target.mkdir(parents=True, exist_ok=True)
    return target


def confine(workspace: Path, path: str) -> Path:
    """``path`` (absolute, or relative to the workspace) resolved; OutsideWorkspace
    unless it is inside ``workspace``. A symlink is followed first: one pointing out of
    the workspace is refused like the path it points to."""
    if not path or "\x00" in path:
        raise OutsideWorkspace(f"invalid path {path!r}")
    candidate = Path(path)
    raw = candidate if candidate.is_absolute() else workspace / candidate
    resolved = Path(os.path.realpath(raw))
    if not resolved.is_relative_to(workspace):
        raise OutsideWorkspace(f"{path!r} is outside the session's workspace")
    return resolved
