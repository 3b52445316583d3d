"""A safety scanner for the audit tests: blocks input that says ``forbidden`` (reason
``test_forbidden``), warns on input that says ``hmm`` (reason ``test_hmm``). The host
publishes its non-clean decisions on the ``safety`` stream; the audit plugin records
them."""

from __future__ import annotations

from typing import Any

from host.api import Register, Verdict, hookimpl


class WordScanner:
    async def scan(self, text: str, *, direction: str, context: dict[str, Any]) -> Verdict | None:
        if "forbidden" in text:
            return Verdict("block", reason="test_forbidden")
        if direction == "input" and "hmm" in text:
            return Verdict("warn", reason="test_hmm")
        return None


@hookimpl
def gateway_register_safety_scanners(register: Register) -> None:
    register("audit_words", WordScanner())
