"""Deploying, rolling back and stopping agents: each change is one write transaction
that holds the agent's named lock (so concurrent deploys switch one after the other, on
any replica) and records the switch; it is published on the ``deploy`` stream with its
``audit`` field after it committed."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from host.api import GatewayContext, GatewayError, Principal, now_ms
from plugins.deploy.contract import AgentKind
from plugins.deploy.models import AgentRecord, DeployRequest, SwitchRecord, VersionRecord
from plugins.deploy.tables import agents, switches, versions

EVENTS = "deploy"


def kinds(ctx: GatewayContext) -> dict[str, AgentKind]:
    registry = ctx.registry("agent_kinds")
    return {name: registry[name] for name in registry}


def _kind(ctx: GatewayContext, name: str | None, param: str = "kind") -> AgentKind:
    found = kinds(ctx).get(name or "")
    if found is None:
        known = ", ".join(sorted(kinds(ctx))) or "none"
        raise GatewayError(
            422,
            "validation_failed",
            f"{param}: unknown agent kind {name!r} (known: {known})",
            param=param,
        )
    return found


async def _row(conn: AsyncConnection, ctx: GatewayContext, agent_id: str) -> Any:
    """The agent's row, with this transaction holding the agent's named lock: changes to
    one agent (a first deploy included, when there is no row to lock yet) run one at a
    time on every replica."""
    await ctx.store.dialect.serialize(conn, f"deploy:{agent_id}")
    stmt = sa.select(agents).where(agents.c.agent_id == agent_id)
    return (await conn.execute(stmt)).first()


async def record(
    ctx: GatewayContext,
    agent_id: str,
    previous: str | None = None,
    cancelled: list[str] | None = None,
    changed: bool = True,
) -> AgentRecord:
    async with ctx.store.read() as conn:
        row = (await conn.execute(sa.select(agents).where(agents.c.agent_id == agent_id))).first()
        if row is None:
            raise GatewayError(404, "agent_not_found", f"no agent {agent_id!r}")
        found = (
            await conn.execute(
                sa.select(versions)
                .where(versions.c.agent_id == agent_id)
                .order_by(versions.c.created_ms.desc(), versions.c.version.desc())
            )
        ).all()
        history = (
            await conn.execute(
                sa.select(switches)
                .where(switches.c.agent_id == agent_id)
                .order_by(switches.c.n.desc())
                .limit(20)
            )
        ).all()
    return AgentRecord(
        agent_id=agent_id,
        kind=row.kind,
        state=row.state,
        live_version=row.live_version,
        live_spec=row.live_spec,
        previous_version=previous,
        versions=[
            VersionRecord(
                version=v.version,
                created_ms=v.created_ms,
                created_by=v.created_by,
                live=v.version == row.live_version,
            )
            for v in found
        ],
        history=[
            SwitchRecord(
                action=h.action,
                from_version=h.from_version,
                to_version=h.to_version,
                by=h.by,
                reason=h.reason,
                at_ms=h.at_ms,
            )
            for h in history
        ],
        cancelled=cancelled or [],
        changed=changed,
    )


def _audit(action: str, agent_id: str) -> dict[str, Any]:
    return {"action": action, "target": agent_id, "outcome": "succeeded", "reason_code": None}


async def deploy(ctx: GatewayContext, body: DeployRequest, principal: Principal) -> AgentRecord:
    """Make ``body.version`` (new, with its spec) or ``body.rollback_to`` (stored) live."""
    rollback = body.rollback_to is not None
    if rollback and (body.version is not None or body.spec is not None):
        raise GatewayError(
            400,
            "invalid_request_body",
            "rollback_to: send it alone, without version or spec",
            param="rollback_to",
        )
    if not rollback and (body.version is None or body.spec is None):
        missing = "version" if body.version is None else "spec"
        raise GatewayError(
            400,
            "invalid_request_body",
            f"{missing}: required (or send rollback_to)",
            param=missing,
        )
    spec: dict[str, Any] | None = None
    if not rollback:
        assert body.spec is not None
        spec = await _kind(ctx, body.kind).validate(ctx, body.agent_id, body.spec)
    now = now_ms()
    target = body.rollback_to if rollback else body.version
    async with ctx.store.write() as conn:
        row = await _row(conn, ctx, body.agent_id)
        live = row.live_version if row is not None else None
        if body.expected_version is not None and body.expected_version != live:
            raise GatewayError(
                409,
                "version_conflict",
                f"agent {body.agent_id!r} is live at {live!r}, not {body.expected_version!r}",
            )
        stored = (
            await conn.execute(
                sa.select(versions).where(
                    versions.c.agent_id == body.agent_id, versions.c.version == target
                )
            )
        ).first()
        if rollback:
            if stored is None:
                raise GatewayError(
                    404, "version_not_found", f"agent {body.agent_id!r} has no version {target!r}"
                )
            kind, spec = stored.kind, stored.spec
        else:
            kind = str(body.kind)
            if row is not None and row.kind != kind:
                raise GatewayError(
                    409,
                    "agent_kind_conflict",
                    f"agent {body.agent_id!r} is a {row.kind!r} agent, not {kind!r}",
                )
            if stored is not None and stored.spec != spec:
                raise GatewayError(
                    409,
                    "version_exists",
                    f"version {target!r} of {body.agent_id!r} exists with another spec; "
                    "deploy a new version, or roll back to it",
                )
            if stored is None:
                await conn.execute(
                    versions.insert().values(
                        agent_id=body.agent_id,
                        version=target,
                        kind=kind,
                        spec=spec,
                        created_ms=now,
                        created_by=principal.name,
                    )
                )
        values = {
            "kind": kind,
            "live_version": target,
            "live_spec": spec,
            "state": "live",
            "updated_ms": now,
            "updated_by": principal.name,
            "reason": body.reason,
        }
        if row is None:
            await conn.execute(agents.insert().values(agent_id=body.agent_id, **values))
        else:
            await conn.execute(
                agents.update().where(agents.c.agent_id == body.agent_id).values(**values)
            )
        action = "rollback" if rollback else "deploy"
        await conn.execute(
            switches.insert().values(
                agent_id=body.agent_id,
                action=action,
                from_version=live,
                to_version=target,
                by=principal.name,
                reason=body.reason,
                at_ms=now,
            )
        )
    await ctx.hub.publish(
        EVENTS,
        f"agent.{action}",
        {
            "agent_id": body.agent_id,
            "kind": kind,
            "from_version": live,
            "to_version": target,
            "by": principal.name,
            "audit": _audit(f"agent.{action}", body.agent_id),
        },
    )
    return await record(ctx, body.agent_id, previous=live)


async def stop(
    ctx: GatewayContext, agent_id: str, principal: Principal, reason: str | None
) -> AgentRecord:
    """Mark the agent stopped (stored first: from then on every replica refuses its new
    work), then have its kind stop what runs. 404 ``agent_not_found``."""
    now = now_ms()
    async with ctx.store.write() as conn:
        row = await _row(conn, ctx, agent_id)
        kind_name = row.kind if row is not None else None
        if row is None:
            for name, candidate in kinds(ctx).items():
                if await candidate.exists(ctx, agent_id):
                    kind_name = name
                    break
            if kind_name is None:
                raise GatewayError(404, "agent_not_found", f"no agent {agent_id!r}")
        changed = row is None or row.state != "stopped"
        values = {
            "state": "stopped",
            "updated_ms": now,
            "updated_by": principal.name,
            "reason": reason,
        }
        if row is None:
            await conn.execute(
                agents.insert().values(
                    agent_id=agent_id, kind=kind_name, live_version=None, live_spec=None, **values
                )
            )
        elif changed:
            await conn.execute(
                agents.update().where(agents.c.agent_id == agent_id).values(**values)
            )
        live = row.live_version if row is not None else None
        if changed:
            await conn.execute(
                switches.insert().values(
                    agent_id=agent_id,
                    action="stop",
                    from_version=live,
                    to_version=None,
                    by=principal.name,
                    reason=reason,
                    at_ms=now,
                )
            )
    cancelled = await kinds(ctx)[str(kind_name)].stop(ctx, agent_id, principal.name, reason)
    await ctx.hub.publish(
        EVENTS,
        "agent.stopped",
        {
            "agent_id": agent_id,
            "kind": kind_name,
            "by": principal.name,
            "reason": reason,
            "cancelled": cancelled,
            "audit": _audit("agent.stop", agent_id),
        },
    )
    return await record(ctx, agent_id, previous=live, cancelled=cancelled, changed=changed)


async def live_spec(ctx: GatewayContext, agent_id: str, kind: str) -> dict[str, Any] | None:
    """The agent's live spec (None: never deployed); 409 ``agent_stopped`` while stopped."""
    async with ctx.store.read() as conn:
        row = (
            await conn.execute(
                sa.select(agents.c.state, agents.c.live_spec).where(
                    agents.c.agent_id == agent_id, agents.c.kind == kind
                )
            )
        ).first()
    if row is None:
        return None
    if row.state == "stopped":
        raise GatewayError(
            409, "agent_stopped", f"agent {agent_id!r} is stopped until it is deployed again"
        )
    spec: dict[str, Any] | None = row.live_spec
    return spec


async def admit(ctx: GatewayContext, agent_id: str, kind: str, loaded_version: str | None) -> None:
    """409 ``agent_stopped`` while the agent is stopped; 409 ``agent_version_mismatch``
    when its live spec pins a version other than ``loaded_version``."""
    async with ctx.store.read() as conn:
        row = (
            await conn.execute(
                sa.select(agents.c.state, agents.c.live_spec, agents.c.live_version).where(
                    agents.c.agent_id == agent_id, agents.c.kind == kind
                )
            )
        ).first()
    if row is None:
        return
    if row.state == "stopped":
        raise GatewayError(
            409, "agent_stopped", f"agent {agent_id!r} is stopped until it is deployed again"
        )
    pinned = (row.live_spec or {}).get("pipeline_version")
    if pinned is not None and loaded_version is not None and pinned != loaded_version:
        raise GatewayError(
            409,
            "agent_version_mismatch",
            f"agent {agent_id!r} is live at {row.live_version!r} (pipeline version {pinned!r}) "
            f"but version {loaded_version!r} is loaded; deploy it or roll back",
        )


async def states(ctx: GatewayContext) -> list[dict[str, Any]]:
    """Every agent that was deployed or stopped: its kind, state and live version."""
    async with ctx.store.read() as conn:
        rows = (await conn.execute(sa.select(agents).order_by(agents.c.agent_id))).all()
    return [
        {
            "agent_id": r.agent_id,
            "kind": r.kind,
            "state": r.state,
            "live_version": r.live_version,
            "updated_ms": r.updated_ms,
            "updated_by": r.updated_by,
        }
        for r in rows
    ]
