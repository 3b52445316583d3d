"""How much of a stream's tail could still become a match: the hold-back of the rule
scanner.

RE2 has no partial-match API, so each rule's pattern ``R`` is rewritten into a pattern
for the *prefix language* of ``R``: every string that some match of ``R`` starts with
(``""`` and every whole match among them). The rewrite is syntactic, over the parse
tree of the pattern:

- ``pref(a)`` is ``ε`` for one character (a literal, a class, ``.``);
- ``pref(A B) = pref(A) | A pref(B)``; ``pref(A|B) = pref(A) | pref(B)``;
- ``pref(A{lo,hi}) = A{0,hi-1} pref(A)`` (``A* pref(A)`` when unbounded);
- assertions (``^ $ \\b \\B \\A \\z``) are dropped, which can only add strings; except
  a ``\\b`` or ``\\B`` followed by one character, which is kept: a candidate that
  includes that character has both sides of it (the text before the candidate is
  given as context), so ``task`` holds nothing back for ``\\bsk-``.

So the rewritten pattern accepts a *superset* of the prefixes of the matches. Searched
with ``\\z`` after it, RE2 (leftmost semantics) gives the earliest position from which
the rest of the text is a prefix of some match: everything before that position can
never be part of a match that the text still to come completes, and is released; the
rest is held back. The guarantee, precisely: a match of a rule whose prefix pattern
was built never has a character sent before the whole match was scanned, provided the
text from the match's start to the end of what had arrived was at most the cap
(``stream_reach``) long at every step; longer, the engine blocks a match still growing
at the end (``engine.py``), and a mere possible start is released.

Patterns are parsed with Python's regular-expression parser (its syntax is RE2's for
what the rules use) and re-emitted in RE2 syntax. A pattern it cannot read, reads
differently from RE2 (POSIX classes, ``{,n}``), or whose prefix pattern RE2 refuses,
gets no prefix pattern: the caller holds back the fixed ``stream_reach`` for it.
"""

from __future__ import annotations

import re._constants as sre
import re._parser as sre_parse
import warnings
from typing import Any

import re2

_FLAGS = {sre.SRE_FLAG_IGNORECASE: "i", sre.SRE_FLAG_MULTILINE: "m", sre.SRE_FLAG_DOTALL: "s"}
_CATEGORIES = {
    sre.CATEGORY_DIGIT: r"\d",
    sre.CATEGORY_NOT_DIGIT: r"\D",
    sre.CATEGORY_SPACE: r"\s",
    sre.CATEGORY_NOT_SPACE: r"\S",
    sre.CATEGORY_WORD: r"\w",
    sre.CATEGORY_NOT_WORD: r"\W",
}
# RE2 syntax that Python's parser accepts but reads otherwise: POSIX classes, ``{,n}``.
_WORD_ASSERTIONS = {sre.AT_BOUNDARY: r"\b", sre.AT_NON_BOUNDARY: r"\B"}
_ONE_CHAR = (sre.LITERAL, sre.NOT_LITERAL, sre.ANY, sre.IN)
_AMBIGUOUS = re2.compile(r"\[:\^?[A-Za-z]+:\]|\{,")
_MAX_PREFIX_PATTERN = 200_000


class Unsupported(Exception):
    """The pattern has a construct the rewrite does not handle."""


def _char(code: int) -> str:
    c = chr(code)
    return c if c.isascii() and c.isalnum() else f"\\x{{{code:x}}}"


def _flags(flags: int) -> str:
    return "".join(letter for bit, letter in _FLAGS.items() if flags & bit)


def _class(items: list[Any]) -> str:
    out, negate = [], False
    for op, av in items:
        if op is sre.NEGATE:
            negate = True
        elif op is sre.LITERAL:
            out.append(_char(av))
        elif op is sre.RANGE:
            out.append(f"{_char(av[0])}-{_char(av[1])}")
        elif op is sre.CATEGORY and av in _CATEGORIES:
            out.append(_CATEGORIES[av])
        else:
            raise Unsupported(str(op))
    return f"[{'^' if negate else ''}{''.join(out)}]"


def _repeat(lo: int, hi: int) -> str:
    return f"{{{lo},}}" if hi is sre.MAXREPEAT else f"{{{lo},{hi}}}"


def _emit(seq: Any) -> str:
    """The pattern of ``seq`` in RE2 syntax, assertions dropped (a superset)."""
    return "".join(_emit_one(op, av) for op, av in seq)


def _emit_one(op: Any, av: Any) -> str:
    if op is sre.LITERAL:
        return _char(av)
    if op is sre.NOT_LITERAL:
        return f"[^{_char(av)}]"
    if op is sre.ANY:
        return "."
    if op is sre.IN:
        return _class(av)
    if op is sre.AT:
        return ""
    if op is sre.BRANCH:
        return "(?:" + "|".join(_emit(s) for s in av[1]) + ")"
    if op is sre.SUBPATTERN:
        return _group(av[1], av[2], _emit(av[3]))
    if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
        lo, hi, body = av
        return f"(?:{_emit(body)}){_repeat(lo, hi)}"
    if op is sre.ATOMIC_GROUP:
        return f"(?:{_emit(av)})"
    raise Unsupported(str(op))


def _group(add: int, remove: int, inner: str) -> str:
    on, off = _flags(add), _flags(remove)
    if not (on or off):
        return f"(?:{inner})"
    return f"(?{on}{'-' + off if off else ''}:{inner})"


def _pref(seq: Any) -> str:
    """A pattern for (a superset of) the prefixes of the strings ``seq`` matches."""
    items = list(seq)
    while items and items[0][0] is sre.AT:
        if items[0][1] in _WORD_ASSERTIONS and len(items) > 1 and items[1][0] in _ONE_CHAR:
            # Kept where it is followed by a character of the candidate: both of its
            # sides are then known (the left one from the context before the text).
            op, av = items[1]
            assertion = _WORD_ASSERTIONS[items[0][1]]
            return f"(?:|{assertion}{_emit_one(op, av)}{_pref(items[2:])})"
        items = items[1:]  # dropped: at the end of the text it cannot be evaluated yet
    if not items:
        return ""
    # For a literal c this is (?:|c rest): the prefixes of abc are (?:|a(?:|b(?:|c))).
    op, av = items[0]
    rest = _pref(items[1:])
    return f"(?:{_pref_one(op, av)}|{_emit_one(op, av)}{rest})"


def _pref_one(op: Any, av: Any) -> str:
    if op in (sre.LITERAL, sre.NOT_LITERAL, sre.ANY, sre.IN):
        return ""
    if op is sre.BRANCH:
        return "(?:" + "|".join(_pref(s) for s in av[1]) + ")"
    if op is sre.SUBPATTERN:
        return _group(av[1], av[2], _pref(av[3]))
    if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
        _lo, hi, body = av
        if hi == 0:
            return ""
        most = "*" if hi is sre.MAXREPEAT else f"{{0,{hi - 1}}}"
        return f"(?:{_emit(body)}){most}{_pref(body)}"
    if op is sre.ATOMIC_GROUP:
        return _pref(av)
    raise Unsupported(str(op))


def prefix_pattern(source: str) -> str | None:
    """The prefix pattern (RE2 syntax, flags scoped to it) of the RE2 pattern ``source``;
    None when it cannot be built soundly."""
    if _AMBIGUOUS.search(source):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Python's "possible set operation" and the like
            parsed = sre_parse.parse(source)
        flags = _flags(parsed.state.flags)
        body = _pref(list(parsed))
        pattern = f"(?{flags}:{body})" if flags else f"(?:{body})"
        if len(pattern) > _MAX_PREFIX_PATTERN:
            return None
        re2.compile(pattern, _options())
    except Exception:  # unreadable, unsupported or refused: the caller's fixed reach
        return None
    return pattern


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False
    options.max_mem = 64 << 20
    return options


class Holdback:
    """The prefix patterns of a set of rules, as one RE2 search for the earliest
    position from which the rest of a text could still grow into a match."""

    def __init__(self, patterns: list[str]) -> None:
        self.regex: Any = None
        if patterns:
            # the empty alternative: a text none of whose tails can grow into a match
            self.regex = re2.compile(f"(?:{'|'.join(patterns)}|)\\z", _options())

    def need(self, text: str, before: str = "") -> int:
        """How many trailing characters of ``text`` could be the start of a match;
        ``before``: the text just before it (a word boundary's left side)."""
        if self.regex is None or not text:
            return 0
        left = before[-1:]
        found = self.regex.search(left + text, len(left))
        return len(left) + len(text) - found.start() if found is not None else len(text)
