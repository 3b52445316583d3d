"""The ``session`` and ``memory`` pipeline step kinds (registered through the pipelines
plugin's ``gateway_register_step_kinds``; built with ``contract.session_step`` and
``contract.memory_step``). A step's sessions are owned by its run's owner (who started
it), or ``pipeline:<id>`` for a run that has none."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from host.api import GatewayError, validation_message
from plugins.pipelines.contract import PipelinesAPI, Step, StepContext, StepError
from plugins.sessions.contract import NewMessage, SessionsService
from plugins.sessions.models import MemoryEntryRequest, MemoryQuery


def _value(step: Step, ctx: StepContext, key: str, default: Any = None) -> Any:
    value = step.config.get(key, default)
    return value(ctx) if callable(value) else value


async def _owner(ctx: StepContext) -> str:
    services = ctx.gateway.services
    if services.has(PipelinesAPI):
        record = await services.get(PipelinesAPI).record(ctx.run_id)
        if record.owner:
            return str(record.owner)
    return f"pipeline:{ctx.pipeline.id}"


def _service(ctx: StepContext) -> SessionsService:
    services = ctx.gateway.services
    if not services.has(SessionsService):
        raise StepError(
            f"session and memory steps need the sessions plugin: "
            f"{services.missing(SessionsService)}"
        )
    return services.get(SessionsService)


def _failed(step: Step, exc: GatewayError) -> StepError:
    # A bad key, blocked content or a missing entry: retrying the step cannot fix it.
    return StepError(f"{step.kind} step {step.id!r}: {exc.code}: {exc.message}")


class SessionKind:
    """``op``: ``append`` (``role``, ``content``) returns the message; ``read`` returns
    ``{"messages": [...]}`` (the current conversation); ``reset`` returns the session."""

    async def run(self, step: Step, ctx: StepContext) -> Any:
        service = _service(ctx)
        op = step.config.get("op")
        key = str(_value(step, ctx, "session_key"))
        owner = await _owner(ctx)
        try:
            if op == "append":
                item = NewMessage(
                    str(_value(step, ctx, "role", "assistant")),
                    str(_value(step, ctx, "content", "")),
                    {"run_id": ctx.run_id, "step": ctx.step_path},
                )
                stored, _ = await service.append(owner, key, [item], source="pipeline")
                return stored[0].model_dump()
            if op == "read":
                messages = await service.conversation(owner, key)
                return {"messages": [m.model_dump() for m in messages]}
            if op == "reset":
                return (await service.reset(owner, key)).model_dump()
        except GatewayError as exc:
            raise _failed(step, exc) from None
        raise StepError(f"session step {step.id!r}: op must be append, read or reset (got {op!r})")


class MemoryKind:
    """``op``: ``put`` (``entry_id``, ``entry``), ``get`` / ``delete`` (``entry_id``),
    ``search`` (``query``, ``limit``, ``memory_type``, ``tags``, scope ids) or
    ``document`` (``document``)."""

    async def run(self, step: Step, ctx: StepContext) -> Any:
        service = _service(ctx)
        op = step.config.get("op")
        key = str(_value(step, ctx, "session_key"))
        owner = await _owner(ctx)
        try:
            if op == "put":
                entry = MemoryEntryRequest.model_validate(_value(step, ctx, "entry") or {})
                record, created = await service.put_memory(
                    owner, key, str(_value(step, ctx, "entry_id")), entry
                )
                return {**record.model_dump(), "created": created}
            if op == "get":
                entry_id = str(_value(step, ctx, "entry_id"))
                return (await service.memory_entry(owner, key, entry_id)).model_dump()
            if op == "delete":
                entry_id = str(_value(step, ctx, "entry_id"))
                await service.delete_memory(owner, key, entry_id)
                return {"deleted": entry_id}
            if op == "search":
                fields = (
                    "query",
                    "limit",
                    "memory_type",
                    "tags",
                    "workspace_id",
                    "channel_id",
                    "actor_id",
                )
                raw = {f: _value(step, ctx, f) for f in fields if step.config.get(f) is not None}
                view = await service.search_memory(owner, key, MemoryQuery.model_validate(raw))
                return {"entries": [e.model_dump() for e in view.entries]}
            if op == "document":
                document = str(_value(step, ctx, "document", ""))
                return (await service.put_document(owner, key, document)).model_dump()
        except ValidationError as exc:
            raise StepError(f"memory step {step.id!r}: {validation_message(exc)[0]}") from None
        except GatewayError as exc:
            raise _failed(step, exc) from None
        raise StepError(
            f"memory step {step.id!r}: op must be put, get, delete, search or document (got {op!r})"
        )
