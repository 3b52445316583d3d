"""Step and run outputs as strict JSON.

Outputs are stored and served as JSON. Python's ``json`` writes ``NaN`` and ``Infinity``
for non-finite floats, which strict parsers (browsers' ``JSON.parse``, Go, Rust, jq's
strict mode) refuse, so one such number in a step's output would make the run record,
the run list and the event pages unreadable for them. An output holding one is refused
instead, naming where it is (``$.scores[2]``).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from pydantic import BaseModel

from plugins.pipelines.definition import StepError

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class NotJSON(ValueError):
    """A value strict JSON cannot carry; ``path`` names it (``$.x``, ``$.items[2]``)."""

    def __init__(self, path: str) -> None:
        super().__init__(f"non-finite number at {path}")
        self.path = path


def strict_jsonable(value: Any) -> Any:
    """``value`` as plain JSON data (a pydantic model dumped, anything else unknown as its
    ``str``); ``NotJSON`` naming the first NaN or infinity in it."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    try:
        return json.loads(json.dumps(value, default=str, allow_nan=False))
    except ValueError as exc:
        path = non_finite_path(value)
        if path is None:
            raise  # not a number's fault (a circular reference): as before
        raise NotJSON(path) from exc


def step_output(value: Any) -> Any:
    """A step's output as stored; a ``StepError`` (the step fails, not retried) naming the
    first NaN or infinity in it."""
    try:
        return strict_jsonable(value)
    except NotJSON as exc:
        raise StepError(f"step output is not JSON: {exc}") from None


def non_finite_path(value: Any, path: str = "$") -> str | None:
    """The JSONPath of the first non-finite float in ``value``, or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, dict):
        for key, item in value.items():
            name = str(key)
            step = f".{name}" if _PLAIN_KEY.match(name) else f"[{json.dumps(name)}]"
            found = non_finite_path(item, path + step)
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = non_finite_path(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None
