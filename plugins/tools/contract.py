"""What other plugins import from the tools plugin: the :class:`ToolApprovals` service
(``host.api.service(ToolApprovals)``) and :func:`wait_for_tool_approval`, for a caller
that holds a tool call open until a person decides (the MCP server); the
:class:`ToolsAPI` service (the inventory and call statistics for a principal).

The contract of a call that needs approval (``host.api.call_tool``): it raises
``ToolError("approval_required")`` whose ``approval_id`` names the approval created in the
approvals queue; once approved, the same call (same tool, same arguments, same caller)
with ``caller["approval_id"]`` set runs, once."""

from __future__ import annotations

from typing import Any

from host.api import GatewayContext
from plugins.tools.approvals import (
    ProgressCallback,
    ToolApprovalDecision,
    ToolApprovalProgress,
    ToolApprovals,
)
from plugins.tools.routes import ToolList, ToolStatsList
from plugins.tools.service import ToolsAPI

__all__ = [
    "ProgressCallback",
    "ToolApprovalDecision",
    "ToolApprovalProgress",
    "ToolApprovals",
    "ToolList",
    "ToolStatsList",
    "ToolsAPI",
    "wait_for_tool_approval",
]


async def wait_for_tool_approval(
    ctx: GatewayContext,
    approval_id: str,
    *,
    timeout: float | None = None,
    on_progress: ProgressCallback | None = None,
    progress_seconds: float = 5.0,
) -> ToolApprovalDecision:
    """Await the decision on the approval a ``ToolError("approval_required")`` named
    (:meth:`ToolApprovals.wait`): ``on_progress(ToolApprovalProgress)`` (sync or async) is
    called every ``progress_seconds`` while it is pending; ``timeout`` seconds give up
    with status ``pending``. 503 ``service_unavailable`` without the tools plugin."""
    approvals: Any = ctx.services.get(ToolApprovals)
    decision: ToolApprovalDecision = await approvals.wait(
        approval_id, timeout=timeout, on_progress=on_progress, progress_seconds=progress_seconds
    )
    return decision
