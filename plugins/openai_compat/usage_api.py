"""The :class:`UsageAPI` service (``service(UsageAPI)``): model usage per principal,
model and UTC day, as ``GET /gateway/usage`` reports it, for other plugins (the
dashboard's usage page)."""

from __future__ import annotations

from typing import Any

from host.api import Principal


class UsageAPI:
    """A plain base class, so ``service(UsageAPI)`` type-checks; the openai_compat plugin
    provides the implementation."""

    async def report(
        self,
        principal: Principal,
        *,
        principal_key: str | None = None,
        everyone: bool = False,
        since: str | None = None,
        until: str | None = None,
    ) -> list[dict[str, Any]]:
        """Rows ``{principal, model, day, requests, input_tokens, output_tokens,
        total_tokens, estimated_requests, errors}``, newest day first: ``principal``'s own;
        ``principal_key`` (another's) or ``everyone`` need ``allow_usage_read_all`` (403).
        ``since``/``until``: days, YYYY-MM-DD, inclusive (400 otherwise)."""
        raise NotImplementedError
