"""URL rules that compile their URL builders on first use.

Werkzeug compiles two URL-building functions per rule (generated Python code, one
``compile()`` each) when the rule is added; with ~420 routes that is most of the time
``create_app`` spends, paid by every worker at start-up, although the gateway builds
URLs for almost none of its routes. Matching is unchanged: the rule's regular
expression is still made at once; only the builder waits until ``url_for`` (or a
strict-slashes redirect) first asks for it.
"""

from __future__ import annotations

from typing import Any

from quart.routing import QuartRule


class LazyBuilderRule(QuartRule):
    def _compile_builder(self, append_unknown: bool = True) -> Any:
        compile_now = super()._compile_builder
        compiled: list[Any] = []

        def build(rule: QuartRule, *args: Any, **kwargs: Any) -> Any:
            if not compiled:
                compiled.append(compile_now(append_unknown).__get__(rule, None))
            return compiled[0](*args, **kwargs)

        return build


def rule_class() -> type[QuartRule]:
    """:class:`LazyBuilderRule` when this Werkzeug compiles builders the way it expects
    (a private method), else Quart's own rule: a newer Werkzeug costs time, not
    correctness."""
    return LazyBuilderRule if hasattr(QuartRule, "_compile_builder") else QuartRule
