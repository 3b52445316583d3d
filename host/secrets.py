"""Secret references: ``{ env = "NAME" }``, ``{ file = "path" }`` or a literal string.

A :class:`Secret` keeps both the reference (what the user wrote) and the resolved value.
Serialising a secret gives back the reference, with literals masked, so no route or
command can echo a secret in clear.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

MASK = "**********"


class SecretError(ValueError):
    pass


class Secret:
    __slots__ = ("_value", "ref")

    def __init__(self, ref: str | dict[str, str], value: str) -> None:
        self.ref = ref
        self._value = value

    @property
    def is_literal(self) -> bool:
        return isinstance(self.ref, str)

    def get(self) -> str:
        return self._value

    def masked(self) -> str | dict[str, str]:
        return MASK if isinstance(self.ref, str) else dict(self.ref)

    def __repr__(self) -> str:
        return f"Secret({self.masked()!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other.ref == self.ref

    def __hash__(self) -> int:
        return hash(repr(self.ref))

    @classmethod
    def resolve(cls, raw: Any, base_dir: Path | None = None) -> Secret:
        if isinstance(raw, Secret):
            return raw
        if isinstance(raw, str):
            if not raw:
                raise SecretError("a secret may not be empty")
            return cls(raw, raw)
        if isinstance(raw, dict) and set(raw) == {"env"}:
            name = str(raw["env"])
            value = os.environ.get(name)
            if not value:
                raise SecretError(f"environment variable {name} is not set or empty")
            return cls({"env": name}, value)
        if isinstance(raw, dict) and set(raw) == {"file"}:
            path = Path(str(raw["file"])).expanduser()
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
            # Outside the config directory say nothing more: whether a path exists, is
            # empty or is unreadable is not for whoever wrote the reference to learn.
            inside = _inside(path, base_dir)
            try:
                value = path.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                detail = f": {exc.strerror}" if inside and isinstance(exc, OSError) else ""
                raise SecretError(f"cannot read secret file {raw['file']}{detail}") from None
            if not value:
                message = "secret file {} is empty" if inside else "cannot read secret file {}"
                raise SecretError(message.format(raw["file"]))
            return cls({"file": str(raw["file"])}, value)
        raise SecretError('a secret is a string, { env = "NAME" } or { file = "path" }')

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        def validate(raw: Any) -> Secret:
            try:
                return cls.resolve(raw, _base_dir())
            except SecretError as exc:
                raise ValueError(str(exc)) from exc

        return core_schema.no_info_plain_validator_function(
            validate,
            serialization=core_schema.plain_serializer_function_ser_schema(lambda s: s.masked()),
            json_schema_input_schema=core_schema.union_schema(
                [
                    core_schema.str_schema(),
                    core_schema.typed_dict_schema(
                        {"env": core_schema.typed_dict_field(core_schema.str_schema())}
                    ),
                    core_schema.typed_dict_schema(
                        {"file": core_schema.typed_dict_field(core_schema.str_schema())}
                    ),
                ]
            ),
        )


def _inside(path: Path, base_dir: Path | None) -> bool:
    if base_dir is None:
        return False
    try:
        return path.resolve().is_relative_to(base_dir.resolve())
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
        return False


def _base_dir() -> Path | None:
    # Relative secret files resolve against the config file's folder while it loads.
    from host.settings import CURRENT_CONFIG_DIR

    return CURRENT_CONFIG_DIR.get()
