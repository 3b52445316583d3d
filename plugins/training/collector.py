"""Recording rollouts off the request and run paths.

The run path and the answer path only hand an item to a bounded queue (no I/O, no
await): a finished run's id (``gateway_on_event``) or a conversation's exchange
(``gateway_record_conversation``). One task per process takes the items in order, reads
the collection settings (stored in the database, cached for ``CONFIG_TTL`` seconds, so
another replica's change applies here within that), samples, redacts and writes. A full
queue drops the item and counts it; shutdown drains the queue for a few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from quart import Quart

from host.api import context, has_service, now_ms, scan_text, service
from plugins.training import rollouts, tables
from plugins.training.config import Collection, FileConfig, merged
from plugins.training.trajectory import REDACTED, mask_keys, run_messages, tools_called
from plugins.training.trajectory import conversation_turn as turn_messages

log = logging.getLogger("gateway.training")

COLLECTOR_KEY = "training.collector"
CONFIG_ROW = "collection"
ENABLED_SINCE = "enabled_since_ms"
CATCH_UP_PAGE = 200
CATCH_UP_PAGES = 20
CONFIG_TTL = 1.0
DRAIN_SECONDS = 5.0
TERMINAL_EVENTS = frozenset({"run.completed", "run.failed", "run.cancelled"})
TERMINAL = ("completed", "failed", "cancelled")
WITHHELD = "[WITHHELD BY SAFETY]"


def sampled(key: str, rate: float) -> bool:
    """The same answer for one key on every replica (a conversation stays in or out)."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


@dataclass
class StoredConfig:
    changes: dict[str, Any] = field(default_factory=dict)
    updated_ms: int | None = None
    updated_by: str | None = None


class Collector:
    def __init__(self, app: Quart, file_config: FileConfig) -> None:
        self.app = app
        self.file_config = file_config
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=file_config.queue_max)
        self.counters = {"recorded": 0, "sampled_out": 0, "dropped": 0, "failed": 0}
        self._config = file_config.collection()
        self._stored = StoredConfig()
        self._config_at = -CONFIG_TTL
        self._task: asyncio.Task[None] | None = None
        self._busy = 0
        self._missed = False

    @property
    def pending(self) -> int:
        """Items queued or being recorded now."""
        return self.queue.qsize() + self._busy

    # -- the hot path ---------------------------------------------------------------------

    def offer(self, kind: str, item: Any) -> None:
        try:
            self.queue.put_nowait((kind, item))
        except asyncio.QueueFull:
            self.counters["dropped"] += 1
            self._missed = True

    # -- settings -------------------------------------------------------------------------

    async def stored(self) -> StoredConfig:
        t = tables.settings
        async with context(self.app).store.read() as conn:
            row = (await conn.execute(sa.select(t).where(t.c.key == CONFIG_ROW))).first()
        if row is None:
            return StoredConfig()
        return StoredConfig(dict(row.value), row.updated_ms, row.updated_by)

    async def config(self, fresh: bool = False) -> Collection:
        if fresh or time.monotonic() - self._config_at >= CONFIG_TTL:
            self._stored = await self.stored()
            self._config = merged(self.file_config.collection(), self._stored.changes)
            self._config_at = time.monotonic()
        return self._config

    async def save(self, changes: dict[str, Any], by: str) -> tuple[Collection, StoredConfig]:
        """Store ``changes`` over what is stored (one row, locked while it changes)."""
        store = context(self.app).store
        t = tables.settings
        async with store.write() as conn:
            await store.dialect.serialize(conn, "training.settings")
            row = (await conn.execute(sa.select(t).where(t.c.key == CONFIG_ROW))).first()
            value = {**(dict(row.value) if row is not None else {}), **changes}
            stamp = now_ms()
            was_on = merged(self.file_config.collection(), dict(row.value) if row else {}).enabled
            if changes.get("enabled") is True and not was_on:
                # The catch-up pass never reaches back past the moment collection began.
                value[ENABLED_SINCE] = stamp
            await conn.execute(
                store.dialect.upsert(
                    t,
                    ["key"],
                    {"key": CONFIG_ROW, "value": value, "updated_ms": stamp, "updated_by": by},
                )
            )
        self._stored = StoredConfig(value, stamp, by)
        self._config = merged(self.file_config.collection(), value)
        self._config_at = time.monotonic()
        return self._config, self._stored

    # -- the task -------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="training-collector")
        self.offer("catch_up", None)

    async def stop(self) -> None:
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.queue.join(), DRAIN_SECONDS)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            kind, item = await self.queue.get()
            self._busy = 1
            try:
                await self.record(kind, item)
            except Exception:
                self.counters["failed"] += 1
                log.exception("could not record a %s rollout", kind)
            finally:
                self._busy = 0
                self.queue.task_done()
            if self._missed and self.queue.empty():
                # Runs dropped while the queue was full: find them in the store.
                self._missed = False
                self.offer("catch_up", None)

    async def record(self, kind: str, item: Any) -> None:
        config = await self.config()
        if not config.enabled:
            return
        if kind == "run":
            await self._record_run(str(item), config)
        elif kind == "catch_up":
            await self.catch_up(config)
        else:
            await self._record_conversation(item, config)

    # -- runs -----------------------------------------------------------------------------

    async def _record_run(self, run_id: str, config: Collection) -> None:
        if "runs" not in config.sources:
            return
        if not sampled(run_id, config.sample_rate):
            self.counters["sampled_out"] += 1
            return
        # Imported on use: a gateway without the pipelines plugin never imports it.
        from plugins.pipelines.contract import PipelinesAPI

        if not has_service(PipelinesAPI, app=self.app):
            return
        api = service(PipelinesAPI, app=self.app)
        run = (await api.record(run_id)).model_dump(mode="json")
        kinds, models = _step_kinds(api, run)
        keys = set(config.redact_keys)
        run, masked = mask_keys(run, keys)
        messages, tools = run_messages(run, kinds)
        messages, scanned = await self._scan(messages, config)
        stamp = now_ms()
        values = {
            "id": rollouts.new_id(),
            "source": "runs",
            "source_key": run_id,
            "run_id": run_id,
            "pipeline_id": run["pipeline_id"],
            "response_id": None,
            "session_key": None,
            "model": models[0] if len(models) == 1 else f"pipeline:{run['pipeline_id']}",
            "outcome": run["status"],
            "owner": run.get("owner"),
            "created_by": run.get("created_by"),
            "messages": messages,
            "tools": tools or None,
            "details": {
                "pipeline_version": run.get("pipeline_version"),
                "trigger": (run.get("trigger") or {}).get("type"),
                "models": models,
                "error": run.get("error"),
                "steps": [
                    {
                        "step_id": s["step_id"],
                        "kind": kinds.get(s["step_id"]),
                        "status": s["status"],
                        "attempts": s["attempts"],
                        "duration_ms": s["duration_ms"],
                        "error": s.get("error"),
                    }
                    for s in run.get("steps") or []
                ],
                "started_ms": run.get("started_ms"),
                "finished_ms": run.get("finished_ms"),
            },
            "turns": 1,
            "redactions": masked + scanned,
            "reward": None,
            "feedback": None,
            "created_ms": stamp,
            "updated_ms": stamp,
        }
        if await rollouts.insert_once(context(self.app).store, values):
            self.counters["recorded"] += 1

    async def catch_up(self, config: Collection) -> int:
        """Record the finished runs that have no rollout yet: those whose item was lost
        (a full queue, a process that stopped before it recorded them). It looks at the
        runs finished in the last ``catch_up_hours`` and since collection was turned on
        through the API, newest first, at most ``CATCH_UP_PAGES`` pages. Returns how
        many it recorded."""
        hours = self.file_config.catch_up_hours
        if hours <= 0 or "runs" not in config.sources:
            return 0
        from plugins.pipelines.contract import PipelinesAPI

        if not has_service(PipelinesAPI, app=self.app):
            return 0
        api = service(PipelinesAPI, app=self.app)
        since = max(
            now_ms() - int(hours * 3_600_000), int(self._stored.changes.get(ENABLED_SINCE, 0))
        )
        recorded = 0
        before = None
        for _ in range(CATCH_UP_PAGES):
            page = await api.run_page(
                owner=None, statuses=TERMINAL, before=before, limit=CATCH_UP_PAGE
            )
            if not page:
                break
            before = page[-1][0]
            ids = [r.id for _, r in page if (r.finished_ms or r.updated_ms) >= since]
            if ids:
                t = tables.rollouts
                async with context(self.app).store.read() as conn:
                    found = await conn.execute(
                        sa.select(t.c.source_key).where(
                            t.c.source == "runs", t.c.source_key.in_(ids)
                        )
                    )
                    done = {row.source_key for row in found}
                for run_id in ids:
                    if run_id not in done and sampled(run_id, config.sample_rate):
                        await self._record_run(run_id, config)
                        recorded += 1
            # Runs are paged by creation; a run created a day before the window may still
            # have finished in it.
            if page[-1][1].created_ms < since - 86_400_000:
                break
        return recorded

    # -- conversations --------------------------------------------------------------------

    async def _record_conversation(self, record: dict[str, Any], config: Collection) -> None:
        source = record.get("api")
        if source not in config.sources:
            return
        owner = record.get("owner")
        session_key = str(record.get("session_key"))
        source_key = f"{owner or record.get('principal')}/{session_key}"[:700]
        if not sampled(source_key, config.sample_rate):
            self.counters["sampled_out"] += 1
            return
        keys = set(config.redact_keys)
        record, masked = mask_keys(record, keys)
        first = source == "chat" or not record.get("previous_response_id")
        messages = turn_messages(record, first)
        messages, arg_masked = _mask_arguments(messages, keys)
        messages, scanned = await self._scan(messages, config)
        stamp = now_ms()
        values = {
            "id": rollouts.new_id(),
            "source": source,
            "source_key": source_key,
            "run_id": None,
            "pipeline_id": None,
            "response_id": record.get("response_id"),
            "session_key": session_key,
            "model": record.get("model"),
            "outcome": "incomplete" if record.get("status") == "incomplete" else "completed",
            "owner": owner,
            "created_by": record.get("principal"),
            "messages": messages,
            "tools": tools_called(messages) or None,
            "details": {
                "turns": [
                    {
                        "response_id": record.get("response_id"),
                        "previous_response_id": record.get("previous_response_id"),
                        "model": record.get("model"),
                        "status": record.get("status"),
                        "usage": record.get("usage"),
                        "user": record.get("user"),
                        "metadata": record.get("metadata"),
                        "created_ms": record.get("created_ms"),
                    }
                ]
            },
            "turns": 1,
            "redactions": masked + arg_masked + scanned,
            "reward": None,
            "feedback": None,
            "created_ms": stamp,
            "updated_ms": stamp,
        }
        # Chat completions resend the whole conversation: the latest exchange replaces it.
        await rollouts.add_turn(context(self.app).store, values, replace=source == "chat")
        self.counters["recorded"] += 1

    # -- redaction ------------------------------------------------------------------------

    async def _scan(
        self, messages: list[dict[str, Any]], config: Collection
    ) -> tuple[list[dict[str, Any]], int]:
        """Every text through the safety scanners (stage ``training``): a redacted text
        is kept redacted, a blocked one withheld."""
        ctx = context(self.app)
        if not config.redact_safety or not len(ctx.registry("safety_scanners")):
            return messages, 0
        count = 0

        async def clean(text: str) -> str:
            nonlocal count
            result = await scan_text(ctx, text, "output", {"stage": "training"})
            if result.action == "block":
                count += 1
                return WITHHELD
            if result.action == "redact" and result.text != text:
                count += 1
                return result.text
            return text

        out = []
        for message in messages:
            message = dict(message)
            if isinstance(message.get("content"), str) and message["content"]:
                message["content"] = await clean(message["content"])
            if message.get("tool_calls"):
                calls = []
                for call in message["tool_calls"]:
                    fn = dict(call["function"])
                    fn["arguments"] = await clean(fn.get("arguments") or "{}")
                    try:
                        json.loads(fn["arguments"])
                    except ValueError:  # a redaction broke the JSON: keep valid arguments
                        fn["arguments"] = json.dumps({"redacted": REDACTED})
                    calls.append({**call, "function": fn})
                message["tool_calls"] = calls
            out.append(message)
        return out, count


def _mask_arguments(
    messages: list[dict[str, Any]], keys: set[str]
) -> tuple[list[dict[str, Any]], int]:
    """Tool-call arguments are JSON in a string: their keys are masked too."""
    count = 0
    out = []
    for message in messages:
        if message.get("tool_calls"):
            calls = []
            for call in message["tool_calls"]:
                fn = dict(call["function"])
                try:
                    parsed = json.loads(fn.get("arguments") or "{}")
                except ValueError:
                    parsed = None
                if parsed is not None:
                    masked, n = mask_keys(parsed, keys)
                    if n:
                        count += n
                        fn["arguments"] = json.dumps(masked)
                calls.append({**call, "function": fn})
            message = {**message, "tool_calls": calls}
        out.append(message)
    return out, count


def _step_kinds(api: Any, run: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """Step path -> kind, and the models of the run's llm steps, from the pipeline's
    current definition (a step it no longer has is left out)."""
    pipeline = api.pipeline(run["pipeline_id"])
    kinds: dict[str, str] = {}
    models: list[str] = []
    for step in run.get("steps") or []:
        found = pipeline.step_at(step["step_id"]) if pipeline is not None else None
        if found is None:
            continue
        kinds[step["step_id"]] = found.kind
        model = found.config.get("model") if found.kind == "llm" else None
        if isinstance(model, str) and model not in models:
            models.append(model)
    return kinds, models


def collector_of(app: Quart) -> Collector | None:
    found: Collector | None = context(app).extras.get(COLLECTOR_KEY)
    return found
