"""Where a validation error is, in the body as the client sent it.

pydantic puts a tag for each member of a union in an error's ``loc``
(``stop.str``, ``input.list[dict[str,any]].0``): a path no client wrote. Walking the
``loc`` through the data validated tells the path's real steps from those tags, so an
error can name the field the client sent.
"""

from __future__ import annotations

from typing import Any

# How a union member's tag reads to a client.
_KINDS = {"str": "a string", "int": "an integer", "float": "a number", "bool": "a boolean"}
_ITEMS = {"str": "strings", "int": "integers", "float": "numbers", "bool": "booleans"}


def walk(loc: tuple[Any, ...], given: Any, missing: bool) -> tuple[tuple[Any, ...], int | None]:
    """The steps of ``loc`` that are a path in ``given``, and the index in ``loc`` of the
    first union tag (None: there is none). ``missing``: the error is a required field not
    sent (its name, last in ``loc``, is a step though ``given`` lacks it)."""
    path: list[Any] = []
    tag: int | None = None
    value = given
    for i, part in enumerate(loc):
        if isinstance(value, dict) and isinstance(part, str) and part in value:
            value = value[part]
        elif isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value):
            value = value[part]
        elif part == "[key]" or (missing and i == len(loc) - 1):
            value = None  # a dict's key, or the required field not sent
        else:
            tag = i if tag is None else tag
            continue
        path.append(part)
    return tuple(path), tag


def union_error(
    errors: list[Any], at: tuple[Any, ...], given: Any
) -> tuple[tuple[Any, ...], str, int] | None:
    """For a union field at ``at`` that no member accepted: the path to name, its
    message, and how many of ``errors`` are left unreported. A value with the shape of a
    member (a list, for ``str | list[str]``) gets the first error inside it
    (``stop.1``); any other, the field itself with the types it accepts. None when the
    errors at ``at`` are not those of a union's members (``given`` is not what pydantic
    validated: a validator reshaped it)."""
    members: list[tuple[str, tuple[Any, ...], Any]] = []  # (tag, path inside, error)
    for error in errors:
        loc = clean(error)
        if loc[: len(at)] != at or len(loc) <= len(at):
            continue
        path, tag = walk(loc, given, error["type"] == "missing")
        if tag == len(at):
            members.append((str(loc[len(at)]), path[len(at) :], error))
    if len({member[0] for member in members}) < 2:
        return None
    others = len(errors) - len(members)
    inside = [member for member in members if member[1]]
    if inside:
        name, inner, error = inside[0]
        same = sum(1 for member in members if member[0] == name)
        return at + inner, error.get("msg", "invalid value"), others + same - 1
    value = given
    for part in at:  # the steps walk() took
        value = value[part]
    kinds = list(dict.fromkeys(_accepted(member[0]) for member in members))
    accepted = " or ".join([", ".join(kinds[:-1]), kinds[-1]] if len(kinds) > 1 else kinds)
    return at, f"must be {accepted}, not {_json_kind(value)}", others


def clean(error: Any) -> tuple[Any, ...]:
    return tuple(part for part in error.get("loc", ()) if part != "__root__")


def _accepted(tag: str) -> str:
    if tag in _KINDS:
        return _KINDS[tag]
    if tag.startswith("list[") and tag.endswith("]"):
        inner = tag[5:-1]
        if inner in _ITEMS:
            return f"a list of {_ITEMS[inner]}"
        return "a list of objects" if _is_object(inner) else "a list"
    if _is_object(tag):
        return "an object"
    if tag.startswith("literal[") and tag.endswith("]"):
        return "one of " + tag[8:-1].replace(",", ", ")
    return tag


def _is_object(tag: str) -> bool:
    return tag.startswith("dict[") or tag[:1].isupper()  # a dict, or a model (its class)


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object" if isinstance(value, dict) else "null"
