"""Starting a run. Every way a run starts (the API for a principal, a webhook delivery, a
schedule's tick) goes through :meth:`RunStarter.start_run`, or, for a schedule that
checked the pause and the input itself, :meth:`RunStarter.create_run`; a
:class:`RunOrigin` says who or what started it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from host.api import (
    GatewayContext,
    GatewayError,
    Principal,
    now_ms,
    owner_key,
    validation_message,
)
from plugins.pipelines.catalog import definition_key
from plugins.pipelines.definition import Pipeline
from plugins.pipelines.idempotency import api_keys, fingerprint, shown
from plugins.pipelines.run_definitions import RunDefinitions
from plugins.pipelines.runs import jsonable, stream_of
from plugins.pipelines.tables import runs
from plugins.pipelines.writer import RunWriter


@dataclass(frozen=True)
class RunOrigin:
    """Who or what starts a run, as stored on it."""

    trigger: dict[str, Any]
    created_by: str | None
    owner: str | None = None
    idempotency_key: str | None = None  # its stored form (``idempotency.py``)
    also_matches: Sequence[str] = ()  # older forms of the same key
    fingerprint: str | None = None  # of the request the key is used with

    @classmethod
    def of(
        cls,
        principal: Principal,
        trigger: dict[str, Any],
        pipeline_id: str,
        raw_input: Any,
        idempotency_key: str | None = None,
    ) -> RunOrigin:
        """A principal's run: owned by it, with its idempotency key scoped to it."""
        stored, older = api_keys(principal, idempotency_key)
        return cls(
            trigger=trigger,
            created_by=principal.name,
            owner=owner_key(principal),
            idempotency_key=stored,
            also_matches=older,
            fingerprint=fingerprint(pipeline_id, raw_input) if stored else None,
        )


def validate_input(pipeline: Pipeline, raw: Any) -> dict[str, Any]:
    """The run input as stored; 422 ``validation_failed`` (``details.param`` names the
    field) when it fails the pipeline's schema."""
    if pipeline.input_model is None:
        if not isinstance(raw, dict):
            raise GatewayError(422, "validation_failed", "input: must be a JSON object")
        return jsonable(raw)
    try:
        model = pipeline.input_model.model_validate(raw)
    except ValidationError as exc:
        message, param = validation_message(exc, "input.")
        raise GatewayError(422, "validation_failed", message, details={"param": param}) from None
    return jsonable(model)


class RunStarter:
    def __init__(
        self, gateway: GatewayContext, definitions: RunDefinitions, writer: RunWriter
    ) -> None:
        self.gateway = gateway
        self.store = gateway.store
        self.definitions = definitions
        self.writer = writer

    async def start_run(
        self, pipeline: Pipeline, raw_input: Any, origin: RunOrigin
    ) -> tuple[str, bool]:
        """Refused while the gateway is paused (503), input validated against the
        pipeline's schema (422), then stored (:meth:`create_run`)."""
        await self.gateway.lifecycle.require_running()
        run_input = validate_input(pipeline, raw_input)
        return await self.create_run(pipeline, run_input, origin)

    async def create_run(
        self, pipeline: Pipeline, run_input: dict[str, Any], origin: RunOrigin
    ) -> tuple[str, bool]:
        """Store a new pending run (once ``gateway_admit_run`` admits it); with an
        idempotency key an existing run with it, or
        with one of ``also_matches``, is returned instead, unless it was stored with
        another ``fingerprint`` (of the request): 422 ``idempotency_key_reused``, nothing
        stored. Returns ``(run_id, created)``."""
        if self.gateway.plugins.has_impls("gateway_admit_run"):  # e.g. a stopped agent
            await self.gateway.plugins.call_async(
                "gateway_admit_run",
                gateway=self.gateway,
                pipeline_id=pipeline.id,
                trigger=origin.trigger,
            )
        run_id = uuid.uuid4().hex
        now = now_ms()
        definition = self.definitions.catalog.definition_of(pipeline)
        key = origin.idempotency_key
        async with self.store.write() as conn:
            if key is not None:
                # Requests racing with one key (on several replicas) take turns: the
                # second finds the first's run instead of failing on the unique key.
                await self.store.dialect.serialize(conn, f"pipelines-idem:{pipeline.id}:{key}")
                existing = await _keyed_run(conn, pipeline.id, [key, *origin.also_matches])
                if existing is not None:
                    _same_request(existing, key, origin.fingerprint)
                    return str(existing.id), False
            await self.definitions.store_source(conn, definition, now)
            # ON CONFLICT DO NOTHING: on PostgreSQL another replica may store a run with
            # the same key between the read above and this insert (SQLite's write lock
            # rules that out); the insert then waits for it to commit and stores nothing,
            # and that run is the key's run, as if the read had found it.
            inserted = await conn.execute(
                self.store.dialect.insert_ignore(runs).values(
                    id=run_id,
                    pipeline_id=pipeline.id,
                    pipeline_version=pipeline.version,
                    definition_key=definition_key(pipeline, definition.fingerprint),
                    definition=definition.record(pipeline),
                    status="pending",
                    input=run_input,
                    cursor=0,
                    results={},
                    resolutions={},
                    trigger=origin.trigger,
                    idempotency_key=key,
                    idempotency_fingerprint=origin.fingerprint,
                    created_by=origin.created_by,
                    owner=origin.owner,
                    created_ms=now,
                    updated_ms=now,
                    claims=0,
                )
            )
            if not inserted.rowcount:
                existing = await _keyed_run(conn, pipeline.id, [key] if key else [])
                if existing is None:  # no key: a conflict on the random id, never seen
                    raise RuntimeError(f"run {run_id} could not be stored")
                _same_request(existing, str(key), origin.fingerprint)
                return str(existing.id), False
            event = await self.store.append_event(
                stream_of(run_id),
                "run.created",
                {"run_id": run_id, "pipeline_id": pipeline.id, "trigger": origin.trigger},
                conn,
            )
        self.definitions.stored(definition)
        await self.writer.notify([event])
        self.writer.worker.wake.set()
        return run_id, True


async def _keyed_run(conn: AsyncConnection, pipeline_id: str, keys: list[str]) -> Any:
    """The run of ``pipeline_id`` stored with one of ``keys`` (id and fingerprint), or None."""
    if not keys:
        return None
    query = (
        sa.select(runs.c.id, runs.c.idempotency_fingerprint)
        .where(runs.c.pipeline_id == pipeline_id, runs.c.idempotency_key.in_(keys))
        .limit(1)
    )
    return (await conn.execute(query)).first()


def _same_request(existing: Any, key: str, fingerprint: str | None) -> None:
    """422 ``idempotency_key_reused`` when the run found by ``key`` was started by another
    request (a run stored before fingerprints were, or without one, matches any)."""
    stored = existing.idempotency_fingerprint
    if fingerprint is None or stored is None or stored == fingerprint:
        return
    raise GatewayError(
        422,
        "idempotency_key_reused",
        f"Idempotency-Key {shown(key)!r} was already used with another input for this "
        f"pipeline (run {existing.id}); send a new key for a new request",
        details={"idempotency_key": shown(key), "run_id": str(existing.id)},
    )
