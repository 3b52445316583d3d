"""Approvals bound to the exact tool call (``gateway_tool_approval``).

A call the policy holds (``approval_policy.py``) and whose caller brings no
``approval_id`` gets an approval in the shared approvals queue (the pipelines plugin's
``ApprovalQueue`` service: ``GET /approvals``, approve and deny, the CLI) and fails with
``approval_required`` carrying its id. The binding, kept in this plugin's
``tools_approvals`` table, is the tool, the SHA-256 of the canonical JSON arguments, the
caller (``kind``, ``owner``, ``run_id``, ``step`` of the caller dict), the policy version
and an expiry. A call with ``caller["approval_id"]`` runs only when that approval was
approved and every part of the binding still holds, and spends it: one conditional
UPDATE (``consumed_ms IS NULL``), so one call runs whichever processes race. Otherwise
nothing runs and the ``ToolError`` code says why.

Each request, refusal, use and outcome is an event on the ``tools`` stream with an
``audit`` object (the audit plugin records it, the arguments' digest included)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from host.api import (
    GatewayContext,
    GatewayError,
    Migration,
    Tool,
    ToolCall,
    ToolError,
    args_digest,
    now_ms,
)
from plugins.tools.approval_policy import ApprovalPolicy
from plugins.tools.config import config_of
from plugins.tools.stats import NAMESPACE

STREAM = "tools"
SOURCE = "tool_call"
# What of the caller dict an approval is bound to: who (owner), through what (kind) and,
# for a pipeline, which run and step.
BOUND_KEYS = ("kind", "owner", "run_id", "step")
# Arguments up to this size (canonical JSON) are shown to the approver in the queue.
SHOWN_ARGS_CHARS = 8192
RESOLVED = "approval.resolved"

metadata = sa.MetaData()
bindings = sa.Table(
    "tools_approvals",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("tool", sa.String(300), nullable=False),
    sa.Column("args_digest", sa.String(64), nullable=False),
    sa.Column("caller", sa.Text, nullable=False),
    sa.Column("owner", sa.String(300), nullable=True),
    sa.Column("policy_version", sa.String(64), nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("expires_ms", sa.BigInteger, nullable=False),
    sa.Column("consumed_ms", sa.BigInteger, nullable=True),
    sa.Column("outcome", sa.String(40), nullable=True),
)
MIGRATIONS = (
    Migration.create_tables(NAMESPACE, 2, "tool call approvals bound to the call", [bindings]),
)


@dataclass(frozen=True)
class ToolApprovalDecision:
    """How an approval of a tool call stands after :meth:`ToolApprovals.wait`: ``status``
    is ``approved``, ``denied``, ``timed_out`` (expired before a decision), ``cancelled``,
    or ``pending`` (the wait ended first)."""

    approval_id: str
    status: str
    approver: str | None = None
    reason: str | None = None

    @property
    def approved(self) -> bool:
        return self.status == "approved"


@dataclass(frozen=True)
class ToolApprovalProgress:
    """Given to a waiter's ``on_progress`` while the approval is pending."""

    approval_id: str
    tool: str
    elapsed_seconds: float
    timeout_seconds: float | None
    expires_ms: int


ProgressCallback = Callable[[ToolApprovalProgress], Awaitable[None] | None]


def caller_key(caller: dict[str, Any]) -> str:
    bound = {k: caller[k] for k in BOUND_KEYS if caller.get(k) is not None}
    return json.dumps(bound, sort_keys=True, separators=(",", ":"), default=str)


def _audit(
    action: str,
    approval_id: str,
    outcome: str,
    reason: str | None,
    actor: str | None = None,
    **detail: Any,
) -> dict[str, Any]:
    return {
        "action": action,
        "target": approval_id,
        "outcome": outcome,
        "reason_code": reason,
        "actor": actor,
        "detail": {k: v for k, v in detail.items() if v is not None},
    }


def _owner(caller: dict[str, Any]) -> str | None:
    owner = caller.get("owner")
    return owner if isinstance(owner, str) else None


class ToolApprovals:
    """The approvals of tool calls (the ``ToolApprovals`` service): what
    ``gateway_tool_approval`` asks, and :meth:`wait` for a caller that waits for the
    decision (the MCP server keeps its call open with progress)."""

    def __init__(self, gateway: GatewayContext) -> None:
        self.gateway = gateway
        # Calls that spent an approval and are running: (approval id, id of the caller
        # dict) -> the binding, for the outcome's audit event.
        self._spent: dict[tuple[str, int], dict[str, Any]] = {}

    def policy(self) -> ApprovalPolicy:
        return config_of(self.gateway).approval

    def _queue(self, name: str) -> Any:
        # Imported on use: the tools plugin imports nothing of pipelines at load.
        from plugins.pipelines.contract import ApprovalQueue

        services = self.gateway.services
        if not services.has(ApprovalQueue):
            raise ToolError(
                "approval_unavailable",
                f"tool {name!r} needs a person's approval, and the approvals queue is not "
                f"there: {services.missing(ApprovalQueue)}",
            )
        return services.get(ApprovalQueue)

    async def binding(self, approval_id: str) -> Any:
        """The binding row of ``approval_id``, or None."""
        async with self.gateway.store.read() as conn:
            return (
                await conn.execute(sa.select(bindings).where(bindings.c.id == approval_id))
            ).first()

    async def _publish(self, type_: str, data: dict[str, Any]) -> None:
        await self.gateway.hub.publish(STREAM, type_, data)

    # -- the hook ---------------------------------------------------------------------------

    def admit(
        self, name: str, args: dict[str, Any], caller: dict[str, Any], tool: Tool
    ) -> Awaitable[None] | None:
        """None when the call runs without approval; else what to await: it raises the
        ``ToolError`` that says why the call does not run, or spends the approval."""
        approval_id = caller.get("approval_id")
        policy = self.policy()
        if approval_id is None:
            reasons = policy.reasons(name, tool.approval, args, caller)
            if not reasons:
                return None
            return self._request(name, args, caller, policy.version(name, tool.approval), reasons)
        if not isinstance(approval_id, str) or not approval_id:
            raise ToolError("approval_not_found", "approval_id must be a non-empty string")
        return self._use(approval_id, name, args, caller, policy.version(name, tool.approval))

    async def _request(
        self,
        name: str,
        args: dict[str, Any],
        caller: dict[str, Any],
        version: str,
        reasons: list[str],
    ) -> None:
        queue = self._queue(name)
        digest = args_digest(args)
        canonical = json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        now = now_ms()
        expires = now + int(self.policy().expiry_seconds * 1000)
        owner = _owner(caller)
        bound = caller_key(caller)
        details: dict[str, Any] = {
            "tool": name,
            "args_digest": digest,
            "args": args if len(canonical) <= SHOWN_ARGS_CHARS else None,
            "args_preview": None if len(canonical) <= SHOWN_ARGS_CHARS else canonical[:1000],
            "caller": json.loads(bound),
            "policy_version": version,
            "expires_ms": expires,
            "reasons": reasons,
        }
        run_id = caller.get("run_id") if caller.get("kind") == "pipeline" else None
        approval_id: str = await queue.create(
            source=SOURCE,
            subject=name[:200],
            message=f"call of tool {name!r} needs approval: {'; '.join(reasons)}",
            owner=owner,
            details=details,
            run_id=run_id if isinstance(run_id, str) else None,
        )
        async with self.gateway.store.write() as conn:
            await conn.execute(
                bindings.insert().values(
                    id=approval_id,
                    tool=name,
                    args_digest=digest,
                    caller=bound,
                    owner=owner,
                    policy_version=version,
                    created_ms=now,
                    expires_ms=expires,
                )
            )
        await self._publish(
            "tool.approval.requested",
            {
                "approval_id": approval_id,
                "tool": name,
                "args_digest": digest,
                "caller": details["caller"],
                "policy_version": version,
                "expires_ms": expires,
                "reasons": reasons,
                "audit": _audit(
                    "tool.approval.request",
                    approval_id,
                    "pending",
                    "approval_required",
                    owner,
                    tool=name,
                    args_digest=digest,
                    policy_version=version,
                ),
            },
        )
        raise ToolError(
            "approval_required",
            f"the call of tool {name!r} waits for a person's approval ({'; '.join(reasons)});"
            f" once {approval_id} is approved, call again with that approval_id and the same"
            " arguments",
            {
                "approval_id": approval_id,
                "tool": name,
                "args_digest": digest,
                "policy_version": version,
                "expires_ms": expires,
            },
        )

    async def _refuse(
        self,
        code: str,
        message: str,
        approval_id: str,
        name: str,
        digest: str | None,
        actor: str | None,
        **more: Any,
    ) -> ToolError:
        await self._publish(
            "tool.approval.refused",
            {
                "approval_id": approval_id,
                "tool": name,
                "code": code,
                "args_digest": digest,
                **more,
                "audit": _audit(
                    "tool.approval.use",
                    approval_id,
                    "refused",
                    code,
                    actor,
                    tool=name,
                    args_digest=digest,
                    **more,
                ),
            },
        )
        return ToolError(code, message, {"approval_id": approval_id})

    async def _use(
        self,
        approval_id: str,
        name: str,
        args: dict[str, Any],
        caller: dict[str, Any],
        version: str,
    ) -> None:
        digest = args_digest(args)
        actor = _owner(caller)
        binding = await self.binding(approval_id)
        record = None
        if binding is not None:
            with contextlib.suppress(GatewayError):
                record = await self._queue(name).get(approval_id)
        if binding is None or record is None:
            raise await self._refuse(
                "approval_not_found",
                f"no approval {approval_id!r} of a tool call",
                approval_id,
                name,
                digest,
                actor,
            )
        if binding.caller != caller_key(caller):
            raise await self._refuse(
                "approval_caller_mismatch",
                f"approval {approval_id} was given to another caller",
                approval_id,
                name,
                digest,
                actor,
            )
        if binding.tool != name:
            raise await self._refuse(
                "approval_tool_mismatch",
                f"approval {approval_id} is for tool {binding.tool!r}, not {name!r}",
                approval_id,
                name,
                digest,
                actor,
            )
        now = now_ms()
        decided = {"decision": record.status, "approver": record.approver}
        if record.status == "pending":
            if now < binding.expires_ms:
                raise await self._refuse(
                    "approval_pending",
                    f"approval {approval_id} is not decided yet",
                    approval_id,
                    name,
                    digest,
                    actor,
                )
            await self._queue(name).resolve(
                approval_id, "timed_out", "expiry", "the approval expired before a decision"
            )
            decided["decision"] = "timed_out"
        if decided["decision"] in ("denied", "cancelled"):
            raise await self._refuse(
                "approval_denied",
                f"approval {approval_id} was {record.status}"
                + (f" by {record.approver}" if record.approver else "")
                + (f": {record.reason}" if record.reason else ""),
                approval_id,
                name,
                digest,
                actor,
                **decided,
            )
        if decided["decision"] == "timed_out" or now >= binding.expires_ms:
            raise await self._refuse(
                "approval_expired",
                f"approval {approval_id} expired (it was usable until {binding.expires_ms} ms)",
                approval_id,
                name,
                digest,
                actor,
                **decided,
            )
        if binding.consumed_ms is not None:
            raise await self._refuse(
                "approval_replayed",
                f"approval {approval_id} was used already: it runs one call, once",
                approval_id,
                name,
                digest,
                actor,
                **decided,
            )
        if digest != binding.args_digest:
            raise await self._refuse(
                "approval_arguments_changed",
                f"approval {approval_id} is for other arguments (approved digest "
                f"{binding.args_digest}, this call's {digest})",
                approval_id,
                name,
                digest,
                actor,
                **decided,
            )
        if version != binding.policy_version:
            raise await self._refuse(
                "approval_policy_changed",
                f"the approval policy of tool {name!r} changed since approval {approval_id} "
                "was asked for: ask again",
                approval_id,
                name,
                digest,
                actor,
                **decided,
            )
        async with self.gateway.store.write() as conn:
            spent = await conn.execute(
                bindings.update()
                .where(bindings.c.id == approval_id, bindings.c.consumed_ms.is_(None))
                .values(consumed_ms=now)
            )
        if spent.rowcount != 1:
            raise await self._refuse(
                "approval_replayed",
                f"approval {approval_id} was used already: it runs one call, once",
                approval_id,
                name,
                digest,
                actor,
                **decided,
            )
        self._spent[(approval_id, id(caller))] = {
            "tool": name,
            "args_digest": digest,
            "actor": actor,
            **decided,
        }
        await self._publish(
            "tool.approval.used",
            {
                "approval_id": approval_id,
                "tool": name,
                "args_digest": digest,
                **decided,
                "audit": _audit(
                    "tool.approval.use",
                    approval_id,
                    "allowed",
                    None,
                    actor,
                    tool=name,
                    args_digest=digest,
                    **decided,
                ),
            },
        )

    async def observe(self, call: ToolCall) -> None:
        """The outcome of a call that spent an approval: stored and audited."""
        approval_id = call.caller.get("approval_id")
        if not isinstance(approval_id, str):
            return
        spent = self._spent.pop((approval_id, id(call.caller)), None)
        if spent is None:
            return
        outcome = "executed" if call.ok else "failed"
        async with self.gateway.store.write() as conn:
            await conn.execute(
                bindings.update().where(bindings.c.id == approval_id).values(outcome=outcome)
            )
        await self._publish(
            "tool.approval.outcome",
            {
                "approval_id": approval_id,
                **spent,
                "outcome": outcome,
                "error": call.error,
                "audit": _audit(
                    "tool.approval.outcome",
                    approval_id,
                    "succeeded" if call.ok else "failed",
                    call.error,
                    result=outcome,
                    **spent,
                ),
            },
        )

    # -- waiting ----------------------------------------------------------------------------

    async def wait(
        self,
        approval_id: str,
        *,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        progress_seconds: float = 5.0,
    ) -> ToolApprovalDecision:
        """Await the decision on ``approval_id`` (from ``ToolError.approval_id``), decided
        in any process. ``on_progress`` is called every ``progress_seconds`` while it is
        pending. Past ``timeout`` seconds the decision is ``pending`` (the approval stays
        in the queue); past the approval's expiry it is resolved ``timed_out``. A
        ``ToolError("approval_not_found")`` for an id that is no tool call's approval."""
        binding = await self.binding(approval_id)
        if binding is None:
            raise ToolError("approval_not_found", f"no approval {approval_id!r} of a tool call")
        queue = self._queue(binding.tool)
        loop = asyncio.get_running_loop()
        started = loop.time()
        decided = asyncio.Event()

        async def follow() -> None:
            events = self.gateway.hub.subscribe(
                f"approval:{approval_id}", 0, lambda e: e.type == RESOLVED
            )
            async with contextlib.aclosing(events) as stream:
                async for event in stream:
                    if event is not None and event.type == RESOLVED:
                        decided.set()
                        return

        follower = asyncio.create_task(follow())
        try:
            while True:
                found = await queue.decision(approval_id)
                if found is not None:
                    return ToolApprovalDecision(
                        approval_id, found.status, found.approver, found.reason
                    )
                elapsed = loop.time() - started
                expiry_left = (binding.expires_ms - now_ms()) / 1000
                if expiry_left <= 0:
                    await queue.resolve(
                        approval_id, "timed_out", "expiry", "the approval expired before a decision"
                    )
                    continue
                left = math.inf if timeout is None else timeout - elapsed
                if left <= 0 or self.gateway.hub.draining:
                    return ToolApprovalDecision(approval_id, "pending")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(decided.wait(), min(progress_seconds, expiry_left, left))
                if not decided.is_set() and on_progress is not None:
                    progress = ToolApprovalProgress(
                        approval_id,
                        binding.tool,
                        loop.time() - started,
                        timeout,
                        int(binding.expires_ms),
                    )
                    result = on_progress(progress)
                    if inspect.isawaitable(result):
                        await result
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
