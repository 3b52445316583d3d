"""Retention: removing old data by the ``[retention]`` settings.

The host removes expired auth sessions and the old events of its own log stream
(``safety``); each plugin removes its own data through the ``gateway_prune`` hook (the
control plugin its ``gateway`` stream, pipelines finished runs with their events,
openai_compat stored responses). Deletes go in short write transactions of at most
``retention.batch_size`` rows, so the workers that share the store keep writing meanwhile.

Every worker runs :meth:`Retention.run`; the time of the last prune is kept in the store
and taken by compare-and-set, so one worker prunes per ``retention.interval_seconds``
however many there are, and a restart does not prune again early. ``gateway db prune``
calls :func:`prune` once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from host.auth.backoff import prune_login_failures
from host.auth.shared_limits import prune_rate_buckets
from host.plugins import PluginHost
from host.safety import SAFETY_STREAM
from host.settings import Settings
from host.storage import Store, now_ms

if TYPE_CHECKING:
    from host.context import GatewayContext
    from host.metrics import GatewayMetrics

log = logging.getLogger("gateway.retention")

LAST_PRUNE_KEY = "retention.last_prune_ms"
CHECK_SECONDS = 60.0  # how often a worker looks whether a prune is due


@dataclass
class PruneReport:
    """What one prune removed (or, for a dry run, would remove): rows per kind, per
    plugin (``host`` for the host's own), and the plugins that failed."""

    dry_run: bool
    now_ms: int
    removed: dict[str, dict[str, int]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(n for kinds in self.removed.values() for n in kinds.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "now_ms": self.now_ms,
            "removed": self.removed,
            "total": self.total,
            "errors": self.errors,
        }


async def prune_host(store: Store, settings: Settings, now: int, dry_run: bool) -> dict[str, int]:
    r = settings.retention
    return {
        "auth_sessions": await store.purge_expired_auth_sessions(now, r.batch_size, dry_run),
        "events": await store.prune_stream(
            SAFETY_STREAM,
            before_ms=r.cutoff_ms(r.events_max_age_days, now),
            keep_last=r.limit(r.events_max_count),
            batch_size=r.batch_size,
            dry_run=dry_run,
        ),
        "rate_limits": await prune_rate_buckets(store, now, r.batch_size, dry_run),
        "login_failures": await prune_login_failures(
            store, settings.auth.login_backoff, now, r.batch_size, dry_run
        ),
    }


async def prune(
    store: Store,
    plugins: PluginHost,
    settings: Settings,
    *,
    now: int | None = None,
    dry_run: bool = False,
    metrics: GatewayMetrics | None = None,
) -> PruneReport:
    """Prune once: the host's data, then every plugin's (``gateway_prune``)."""
    report = PruneReport(dry_run, now if now is not None else now_ms())
    report.removed["host"] = await prune_host(store, settings, report.now_ms, dry_run)
    results = await plugins.call_async(
        "gateway_prune",
        return_errors=True,
        store=store,
        settings=settings,
        now_ms=report.now_ms,
        dry_run=dry_run,
    )
    for plugin, result in results:
        if isinstance(result, Exception):
            log.error("plugin %s failed to prune", plugin, exc_info=result)
            report.errors[plugin] = f"{type(result).__name__}: {result}"
        elif result:
            report.removed[plugin] = {str(kind): int(n) for kind, n in dict(result).items()}
    if metrics is not None and not dry_run:
        for plugin, kinds in report.removed.items():
            for kind, n in kinds.items():
                if n:
                    metrics.pruned.labels(plugin, kind).inc(n)
    return report


class Retention:
    """The background prune of one worker."""

    def __init__(self, ctx: GatewayContext) -> None:
        self.ctx = ctx
        self.last: PruneReport | None = None  # this worker's last prune
        self._task: asyncio.Task[None] | None = None

    async def prune(self, now: int | None = None, dry_run: bool = False) -> PruneReport:
        ctx = self.ctx
        report = await prune(
            ctx.store, ctx.plugins, ctx.settings, now=now, dry_run=dry_run, metrics=ctx.metrics
        )
        if not dry_run:
            self.last = report
            if report.total:
                log.info("retention removed %s", report.removed)
        return report

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="retention")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run(self) -> None:
        while True:
            settings = self.ctx.settings.retention
            try:
                if settings.enabled and await self._take_turn(settings.interval_seconds):
                    await self.prune()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("retention prune failed; trying again at the next interval")
            await asyncio.sleep(min(settings.interval_seconds, CHECK_SECONDS))

    async def _take_turn(self, interval_seconds: float) -> bool:
        """True for the one worker that claims a prune that is due."""
        store = self.ctx.store
        last = await store.get_value(LAST_PRUNE_KEY)
        now = now_ms()
        if last is not None and now - int(last) < interval_seconds * 1000:
            return False
        return await store.compare_and_set(LAST_PRUNE_KEY, last, now)
