"""Scalar keys of ``[plugins.openai_compat]``: one declaration gives the check that
``gateway config check``, a config PATCH and a reload run (``problems``, each naming the
key), the value read at start-up and reload into the gateway context (``configured``),
and the value a request reads from there (``current``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from host.api import GatewayError, Settings, context

SECTION = "openai_compat"
T = TypeVar("T")


@dataclass(frozen=True)
class PluginSetting(Generic[T]):
    key: str
    default: T
    valid: Callable[[Any], bool]
    expected: str  # what a valid value is, for the message: "a number of seconds > 0"
    convert: Callable[[Any], T]
    bounds: tuple[float, float] | None = None  # a number's floor and ceiling

    @property
    def extra_key(self) -> str:
        return f"{SECTION}.{self.key}"

    def _raw(self, settings: Settings) -> Any:
        return settings.plugin_section(SECTION).get(self.key, self.default)

    def problems(self, settings: Settings) -> list[str]:
        raw = self._raw(settings)
        if self.valid(raw):
            return []
        return [f"plugins.{SECTION}.{self.key}: must be {self.expected} (got {raw!r})"]

    def configured(self, settings: Settings) -> T:
        """The value; GatewayError (naming the key) when it is invalid."""
        found = self.problems(settings)
        if found:
            raise GatewayError(400, "config_invalid", "; ".join(found))
        return self.convert(self._raw(settings))

    def current(self) -> T:
        found: T = context().extras.get(self.extra_key, self.default)
        return found


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def bounded(
    key: str, default: T, low: float, high: float, what: str, convert: Callable[[Any], T]
) -> PluginSetting[T]:
    """A number from ``low`` to ``high``; whole when ``convert`` is ``int``. ``what``:
    ``"a number of seconds"``, ``"a whole number of characters"``."""
    kind = is_whole if convert is int else is_number
    shown = (lambda x: str(int(x))) if convert is int else (lambda x: f"{x:g}")
    return PluginSetting(
        key,
        default,
        lambda v: kind(v) and low <= v <= high,
        f"{what} from {shown(low)} to {shown(high)}",
        convert,
        (low, high),
    )
