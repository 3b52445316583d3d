"""Secret references that reach the configuration at runtime.

A reference (``{ env = "NAME" }``, ``{ file = "path" }``) makes the gateway read a
variable or a file of its own process, and the value may be sent on as a bearer token
to whatever ``base_url`` sits beside it. References are the operator's to write, in the
config file. The overrides file (what ``PATCH /gateway/config`` writes, and whatever
else lands there) may hold a reference only when the config file has the same one at
the same key, or when the config file's ``[secrets]`` table allows it:
``allowed_env`` (variable names, or glob patterns) and ``allowed_files_dir`` (a file
must resolve, symlinks followed, inside that folder). ``[secrets]`` itself is read from
the config file and the environment only.

The check runs on the overrides file's own dict, before anything in it is resolved: a
refused ``{ file = "/dev/zero" }`` is never opened.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from host.settings import ConfigError

if TYPE_CHECKING:
    from host.settings import Settings

SECTION = "secrets"
KeyPath = tuple[str | int, ...]


class ReferenceRefused(ConfigError):
    """References in the overrides file (``where``) that the config file does not allow."""

    def __init__(self, problems: list[str], where: Path) -> None:
        super().__init__(f"{where}: " + "; ".join(problems))
        self.problems = problems


def is_reference(value: Any) -> bool:
    return isinstance(value, dict) and set(value) in ({"env"}, {"file"})


def references(data: Any, at: KeyPath = ()) -> Iterator[tuple[KeyPath, dict[str, Any]]]:
    """Every reference in ``data`` with its key path (lists included)."""
    if is_reference(data):
        yield at, data
    elif isinstance(data, dict):
        for key, value in data.items():
            yield from references(value, (*at, str(key)))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from references(value, (*at, index))


def dotted(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _at(data: Any, path: KeyPath) -> Any:
    for part in path:
        if isinstance(part, int):
            if not isinstance(data, list) or part >= len(data):
                return None
        elif not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _folder(raw: str, base_dir: Path | None) -> Path:
    path = Path(raw).expanduser()
    return path if path.is_absolute() else (base_dir or Path.cwd()) / path


def file_inside(raw: str, allowed_dir: Path | None, base_dir: Path | None) -> bool:
    """Whether ``raw`` (relative to ``base_dir``, as :class:`host.secrets.Secret` reads
    it) resolves, symlinks followed, inside ``allowed_dir``."""
    if allowed_dir is None:
        return False
    try:
        return _folder(raw, base_dir).resolve().is_relative_to(allowed_dir.resolve())
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
        return False


def refusal(
    ref: dict[str, Any], allowed_env: Sequence[str], allowed_dir: Path | None, base_dir: Path | None
) -> str | None:
    """Why ``ref`` may not be written at runtime, or None when ``[secrets]`` allows it."""
    if "env" in ref:
        name = str(ref["env"])
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in allowed_env):
            return None
        return f'{{"env": "{name}"}} is not allowed by [secrets] allowed_env of the config file'
    if file_inside(str(ref["file"]), allowed_dir, base_dir):
        return None
    # Not where the file resolves to: whoever wrote the reference learns nothing of it.
    return "a file outside [secrets] allowed_files_dir of the config file is not allowed"


def refused_references(
    overrides: dict[str, Any], base: dict[str, Any], allowed: Settings
) -> list[str]:
    """One problem per reference in ``overrides`` that ``base`` (the config file's dict)
    does not hold at the same key and ``allowed.secrets`` does not allow, each naming
    the key; and one for a ``[secrets]`` table, which the overrides may not hold."""
    problems = []
    if SECTION in overrides:
        problems.append(f"{SECTION}: is read from the config file only")
    secrets = allowed.secrets
    base_dir = allowed.config_dir
    allowed_dir = (
        _folder(secrets.allowed_files_dir, base_dir) if secrets.allowed_files_dir else None
    )
    for path, ref in references(overrides):
        if path[:1] == (SECTION,) or _at(base, path) == ref:
            continue
        why = refusal(ref, secrets.allowed_env, allowed_dir, base_dir)
        if why is not None:
            problems.append(f"{dotted(path)}: {why}")
    return problems
