"""What ``GET /gateway/config`` and ``gateway config show`` may show, and which literal
values a PATCH may not write.

A value is a secret when its key is one a plugin declared (``gateway_register_secret_keys``:
``models.*.api_key``), when the host types it as one (:class:`host.secrets.Secret`), or,
in the parts of the configuration the host does not type (plugin sections, extra
top-level tables), when its key is named like one (``api_key``, ``password``, ...). A
secret shows as its reference, or masked when it is a literal. Apart from that, the
user-info of every URL in any string value is masked (``postgresql://gw:***@db/gw``,
``https://***@host``): passwords and tokens ride in URLs more often than in keys.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from host.secret_refs import is_reference
from host.secrets import MASK
from host.settings import Settings

SECRET_NAME = re.compile(
    r"token|secret|passw|passphrase|pwd|api_?key|private_?key|access_?key|signing_?key"
    r"|credential|authorization|cookie",
    re.IGNORECASE,
)
# scheme://user-info@ up to the last "@" before the host's end ("/", "?", "#", a space).
_URL_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.\-]*://)([^\s/?#]*)@")
# Tables whose next key is an entry's own name ("models.token-counter"), not a setting.
_NAMED_ENTRIES = ("models", "plugins")

KeyPattern = tuple[str, ...]


def mask_url_userinfo(text: str) -> str:
    """``text`` with the user-info of each URL in it masked: the password after the user
    name, or the whole user-info when it has no password (a token used as a user name)."""

    def hide(match: re.Match[str]) -> str:
        user, colon, _ = match.group(2).partition(":")
        return f"{match.group(1)}{user}:***@" if colon else f"{match.group(1)}***@"

    return _URL_USERINFO.sub(hide, text) if "@" in text else text


def key_patterns(declared: Iterable[str]) -> list[KeyPattern]:
    return [tuple(path.split(".")) for path in declared]


def _matches(path: Sequence[str], patterns: Sequence[KeyPattern]) -> bool:
    return any(
        len(pattern) == len(path) and all(p in ("*", k) for p, k in zip(pattern, path, strict=True))
        for pattern in patterns
    )


def _free(top: str) -> bool:
    """The host does not type this top-level key's values (a plugin reads them)."""
    return top == "plugins" or top not in Settings.model_fields


def _named_secret(path: Sequence[str]) -> bool:
    """The last key of ``path`` is named like a secret (an entry's own name is not)."""
    if len(path) == 2 and path[0] in _NAMED_ENTRIES:
        return False
    return bool(SECRET_NAME.search(path[-1]))


def is_secret_key(path: Sequence[str], patterns: Sequence[KeyPattern]) -> bool:
    """Whether the key at ``path`` or one above it holds a secret."""
    free = _free(path[0])
    return any(
        _matches(path[:n], patterns) or (free and _named_secret(path[:n]))
        for n in range(1, len(path) + 1)
    )


def masked_config(settings: Settings, secret_keys: Iterable[str] = ()) -> dict[str, Any]:
    """The configuration as JSON with no secret in clear (see the module's docstring).
    ``secret_keys``: the key patterns plugins declared."""
    data: dict[str, Any] = settings.model_dump(mode="json")
    patterns = key_patterns(secret_keys)
    return {key: _mask(value, (key,), patterns, False) for key, value in data.items()}


def _mask(value: Any, path: tuple[str, ...], patterns: list[KeyPattern], secret: bool) -> Any:
    if is_reference(value):
        return value  # a reference, not a secret
    secret = secret or _matches(path, patterns) or (_free(path[0]) and _named_secret(path))
    if isinstance(value, dict):
        return {k: _mask(v, (*path, str(k)), patterns, secret) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, path, patterns, secret) for v in value]
    if isinstance(value, str) and value:
        return MASK if secret else mask_url_userinfo(value)
    return value


def literal_secret_keys(patch: dict[str, Any], secret_keys: Iterable[str]) -> list[str]:
    """The dotted keys of ``patch`` that :func:`masked_config` would mask and that hold
    text: the host cannot tell such a literal from a secret, so it is never written."""
    patterns = key_patterns(secret_keys)
    return sorted(
        ".".join(path)
        for path, value in _leaves(patch, ())
        if _has_text(value) and is_secret_key(path, patterns)
    )


def _leaves(value: Any, path: tuple[str, ...]) -> Iterable[tuple[tuple[str, ...], Any]]:
    if isinstance(value, dict) and not is_reference(value):
        for key, item in value.items():
            yield from _leaves(item, (*path, str(key)))
    elif path:
        yield path, value


def _has_text(value: Any) -> bool:
    if isinstance(value, list):
        return any(_has_text(v) for v in value)
    return isinstance(value, str) and bool(value)
