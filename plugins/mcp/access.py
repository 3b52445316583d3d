"""Which tools a principal may list and call on ``/mcp``: the ``tools = [...]`` key of
its ``[auth.tokens.<name>]`` or ``[auth.users.<name>]`` table (names or glob patterns;
unset, every tool), the same machinery as the ``models = [...]`` allow-list. A tool it
may not use is not listed and is answered as unknown; pipeline tools also need the
``allow_pipeline_run`` gate."""

from __future__ import annotations

from host.api import (
    AllowList,
    GatewayContext,
    Principal,
    Settings,
    allow_list_problems,
    allow_lists,
)

KEY = "tools"
CACHE_KEY = "mcp.allow_lists"
EVERYTHING = AllowList(None)


def problems(settings: Settings) -> list[str]:
    return allow_list_problems(settings, KEY, "tool name or pattern")


def allow_list(gateway: GatewayContext, principal: Principal) -> AllowList:
    """``principal``'s list under the settings now (built once per settings object)."""
    cached: tuple[Settings, dict[str, AllowList]] | None = gateway.extras.get(CACHE_KEY)
    if cached is None or cached[0] is not gateway.settings:
        cached = (gateway.settings, allow_lists(gateway.settings, KEY))
        gateway.extras[CACHE_KEY] = cached
    return cached[1].get(principal.key, EVERYTHING)
