"""Name allow-lists of principals: the ``models = [...]`` and ``tools = [...]`` keys of
``[auth.tokens.<name>]`` and ``[auth.users.<name>]``. Names or glob patterns
(``fnmatch``, case-sensitive); unset allows every name. A plugin reads the list of the
key it serves and answers a name the list refuses as if it did not exist."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import Any

from host.settings import Settings

_CACHE_MAX = 4096


class AllowList:
    """``allows(name)``: whether ``name`` matches one of the patterns (every name when
    the patterns are None). Answers are cached per name, so a busy caller pays the glob
    match once per name."""

    __slots__ = ("_cache", "patterns")

    def __init__(self, patterns: Iterable[str] | None) -> None:
        self.patterns = None if patterns is None else tuple(patterns)
        self._cache: dict[str, bool] = {}

    @property
    def unrestricted(self) -> bool:
        return self.patterns is None

    def allows(self, name: str) -> bool:
        if self.patterns is None:
            return True
        found = self._cache.get(name)
        if found is None:
            found = any(fnmatch.fnmatchcase(name, p) for p in self.patterns)
            if len(self._cache) < _CACHE_MAX:
                self._cache[name] = found
        return found


EVERYTHING = AllowList(None)


def allow_lists(settings: Settings, key: str) -> dict[str, AllowList]:
    """Each configured principal's list under ``key`` (``"tools"``), by principal key
    (``token:ci``, ``session:alice``); a principal missing here is unrestricted."""
    found: dict[str, AllowList] = {}
    tables: list[tuple[str, dict[str, Any]]] = [
        ("token", settings.auth.tokens),
        ("session", settings.auth.users),
    ]
    for kind, table in tables:
        for name, cfg in table.items():
            patterns = getattr(cfg, key, None)
            if patterns is not None:
                found[f"{kind}:{name}"] = AllowList(patterns)
    return found


def allow_list_problems(settings: Settings, key: str, what: str) -> list[str]:
    """The entries of ``key`` that are not non-empty strings, each named."""
    found = []
    tables: list[tuple[str, dict[str, Any]]] = [
        ("tokens", settings.auth.tokens),
        ("users", settings.auth.users),
    ]
    for kind, table in tables:
        for name, cfg in table.items():
            for pattern in getattr(cfg, key, None) or []:
                if not isinstance(pattern, str) or not pattern.strip():
                    found.append(f"auth.{kind}.{name}.{key}: {pattern!r} is not a {what}")
    return found
