"""Strict JSON parsing for everything a client sends: request bodies, WebSocket frames,
webhook bodies.

Python's ``json`` accepts ``NaN``, ``Infinity`` and ``-Infinity`` (not JSON: RFC 8259
has no such numbers) and turns a number too large for a float (``1e999``) into
infinity. Either would reach a handler as a float that compares and serialises
surprisingly (an upstream rejects it, a stored record no longer parses), so both are
refused at parse time.
"""

from __future__ import annotations

import json
import math
from typing import Any


class InvalidJSON(ValueError):
    """The text is not strict JSON; the message says why, for a person."""


def _refuse_constant(name: str) -> Any:
    raise InvalidJSON(f"{name} is not a JSON number (non-finite numbers are refused)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidJSON(f"the number {text[:40]} is too large (non-finite numbers are refused)")
    return value


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def parse_json(data: str | bytes) -> Any:
    """Parse ``data`` (bytes must be UTF-8) as strict JSON. Raises :class:`InvalidJSON`
    (a ``ValueError``) naming the problem: invalid UTF-8, a syntax error, a non-finite
    number, or nesting too deep for the parser."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidJSON("it is not UTF-8") from None
    else:
        text = data
    try:
        return _DECODER.decode(text)
    except InvalidJSON:
        raise
    except json.JSONDecodeError as exc:
        raise InvalidJSON(str(exc)) from None
    except RecursionError:
        raise InvalidJSON("nested too deeply") from None
