"""The ``ToolsAPI`` service: the tool inventory and its call statistics for a principal,
as ``GET /gateway/tools`` and ``GET /gateway/tools/stats`` answer them (same gate), for
plugins that show them (the ops console, without a script)."""

from __future__ import annotations

from host.api import GatewayContext, Principal
from plugins.tools.routes import GATE_READ, ToolList, ToolStatsList, inventory, usage


class ToolsAPI:
    def __init__(self, gateway: GatewayContext) -> None:
        self.gateway = gateway

    async def list_tools(self, principal: Principal) -> ToolList:
        """Every registered tool; 403 without ``allow_tools_read``."""
        self.gateway.auth.require_gate(principal, GATE_READ, "listing the tools")
        return inventory(self.gateway)

    async def stats(self, principal: Principal) -> ToolStatsList:
        """Calls, errors and latency per tool; 403 without ``allow_tools_read``."""
        self.gateway.auth.require_gate(principal, GATE_READ, "reading the tool statistics")
        return await usage(self.gateway)
