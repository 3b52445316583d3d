"""Exports: the rollouts a principal may read, as a JSONL dataset in OpenAI's fine-tuning
chat format, written to a temporary file and renamed into place only when complete, with
each batch handed to the trainer plugins (``gateway_training_batch``) on the way."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from quart import Quart

from host.api import GatewayError, Principal, context, now_ms, owned_by, owner_key
from plugins.training import rollouts
from plugins.training.chat_format import line_of, problem
from plugins.training.collector import Collector
from plugins.training.config import export_dir
from plugins.training.gates import GATE_READ_ALL
from plugins.training.models import ExportList, ExportRecord, ExportRequest
from plugins.training.tables import exports as t

HOOK = "gateway_training_batch"
STREAM = "training"


def record(row: Any) -> ExportRecord:
    return ExportRecord(
        id=row.id,
        status=row.status,
        file=row.file,
        filters=row.filters,
        rollouts=row.rollouts,
        skipped=row.skipped,
        batches=row.batches,
        bytes=row.bytes,
        sha256=row.sha256,
        error=row.error,
        created_by=row.created_by,
        created_ms=row.created_ms,
        finished_ms=row.finished_ms,
    )


def audit(action: str, target: str, outcome: str, reason: str | None = None) -> dict[str, Any]:
    """The ``audit`` field the audit plugin turns into a record."""
    return {"action": action, "target": target, "outcome": outcome, "reason_code": reason}


class _Dataset:
    """The temporary file an export grows in, its digest and size."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.temp = final.with_name(f".{final.name}.tmp")
        self.digest = hashlib.sha256()
        self.size = 0
        self.fh: IO[bytes] | None = None

    def open(self) -> None:
        self.final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self.fh = os.fdopen(fd, "wb")

    async def write(self, lines: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()
        assert self.fh is not None
        await asyncio.to_thread(self.fh.write, data)
        self.digest.update(data)
        self.size += len(data)

    async def commit(self) -> None:
        assert self.fh is not None

        def finish() -> None:
            assert self.fh is not None
            self.fh.flush()
            os.fsync(self.fh.fileno())
            self.fh.close()
            os.replace(self.temp, self.final)
            with contextlib.suppress(OSError):  # not every filesystem syncs a directory
                dir_fd = os.open(self.final.parent, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)

        await asyncio.to_thread(finish)

    def discard(self) -> None:
        if self.fh is not None and not self.fh.closed:
            self.fh.close()
        with contextlib.suppress(FileNotFoundError):
            self.temp.unlink()


async def run_export(
    app: Quart, collector: Collector, body: ExportRequest, principal: Principal
) -> ExportRecord:
    ctx = context(app)
    config = await collector.config()
    filters = body.model_dump(exclude_none=True)
    export_id = f"ex_{uuid.uuid4().hex[:24]}"
    dataset = _Dataset(export_dir(ctx.settings, collector.file_config) / f"{export_id}.jsonl")
    created = now_ms()
    meta = {
        "id": export_id,
        "file": str(dataset.final),
        "filters": filters,
        "created_by": principal.name,
        "created_ms": created,
    }
    where = rollouts.filtered(body, principal)
    counts = {"rollouts": 0, "skipped": 0, "batches": 0}
    pending: list[dict[str, Any]] | None = None

    async def deliver(batch: list[dict[str, Any]], last: bool) -> None:
        await ctx.plugins.call_async(
            HOOK, app=app, export=meta, batch=batch, index=counts["batches"], last=last
        )
        counts["batches"] += 1

    try:
        after = 0
        while body.limit is None or counts["rollouts"] < body.limit:
            async with ctx.store.read() as conn:
                rows = await rollouts.batch_after(conn, where, after, config.export_batch_size)
            if not rows:
                break
            after = rows[-1].n
            batch = []
            for row in rows:
                if not rollouts.label_matches(row, body.label):
                    continue
                line = line_of(row.messages, row.tools)
                if problem(line) is not None:
                    counts["skipped"] += 1
                    continue
                batch.append(_item(row, line))
                if body.limit is not None and counts["rollouts"] + len(batch) >= body.limit:
                    break
            if not batch:
                continue
            if dataset.fh is None:
                dataset.open()
            await dataset.write([item["line"] for item in batch])
            counts["rollouts"] += len(batch)
            if pending is not None:
                await deliver(pending, last=False)
            pending = batch
        if pending is None:
            raise GatewayError(
                422,
                "no_rollouts",
                "no rollout you may read matches these filters (and fits the fine-tuning "
                f"format: {counts['skipped']} did not)",
            )
        await deliver(pending, last=True)
        await dataset.commit()
    except GatewayError as exc:
        dataset.discard()
        if exc.status == 422:
            raise
        await _failed(app, meta, principal, counts, str(exc))
        raise
    except Exception as exc:
        dataset.discard()
        notes = "; ".join(getattr(exc, "__notes__", []))
        reason = f"{type(exc).__name__}: {exc}" + (f" ({notes})" if notes else "")
        await _failed(app, meta, principal, counts, reason)
        raise GatewayError(
            500,
            "export_failed",
            f"export {export_id} failed and left no dataset: {reason}",
            details={"export_id": export_id},
        ) from None
    values = {
        **_row(meta, principal, counts),
        "status": "completed",
        "bytes": dataset.size,
        "sha256": dataset.digest.hexdigest(),
    }
    async with ctx.store.write() as conn:
        await conn.execute(t.insert().values(**values))
    await ctx.hub.publish(
        STREAM,
        "training.export.completed",
        {
            "export_id": export_id,
            "rollouts": counts["rollouts"],
            "by": principal.name,
            "audit": audit("training.export", export_id, "succeeded"),
        },
    )
    return ExportRecord(**{k: v for k, v in values.items() if k != "owner"})


def _item(row: Any, line: dict[str, Any]) -> dict[str, Any]:
    return {
        "rollout_id": row.id,
        "source": row.source,
        "outcome": row.outcome,
        "model": row.model,
        "reward": row.reward,
        "feedback": row.feedback,
        "line": line,
    }


def _row(meta: dict[str, Any], principal: Principal, counts: dict[str, int]) -> dict[str, Any]:
    return {
        "id": meta["id"],
        "file": meta["file"],
        "filters": meta["filters"],
        "rollouts": counts["rollouts"],
        "skipped": counts["skipped"],
        "batches": counts["batches"],
        "bytes": 0,
        "sha256": None,
        "error": None,
        "owner": owner_key(principal),
        "created_by": principal.name,
        "created_ms": meta["created_ms"],
        "finished_ms": now_ms(),
    }


async def _failed(
    app: Quart, meta: dict[str, Any], principal: Principal, counts: dict[str, int], reason: str
) -> None:
    ctx = context(app)
    values = {**_row(meta, principal, counts), "status": "failed", "file": None, "error": reason}
    async with ctx.store.write() as conn:
        await conn.execute(t.insert().values(**values))
    await ctx.hub.publish(
        STREAM,
        "training.export.failed",
        {
            "export_id": meta["id"],
            "by": principal.name,
            "error": reason,
            "audit": audit("training.export", meta["id"], "failed", "export_failed"),
        },
    )


async def listing(app: Quart, reader: Principal, limit: int = 50) -> ExportList:
    async with context(app).store.read() as conn:
        rows = await conn.execute(
            sa.select(t)
            .where(owned_by(t.c.owner, reader, GATE_READ_ALL))
            .order_by(t.c.n.desc())
            .limit(limit)
        )
        return ExportList(exports=[record(r) for r in rows])


async def last(app: Quart, reader: Principal) -> ExportRecord | None:
    found = (await listing(app, reader, 1)).exports
    return found[0] if found else None
