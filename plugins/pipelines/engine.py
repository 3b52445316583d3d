"""The durable run engine of one gateway process, built from its parts:

- ``start.py`` stores new runs (``RunStarter``), with the definition each started with
  (``run_definitions.py``);
- ``worker.py`` claims runs, holds their leases, sweeps lapsed ones, fires schedules
  (``scheduler.py``) and keeps the gauges;
- ``runner.py`` runs a claimed run's steps (``execution.py``, ``isolation.py`` for
  each attempt) and stores its progress (``progress.py``);
- ``actions.py`` holds the operator actions (approve, deny, resume, release, cancel).

Every state change is written with its event in one store transaction, and the event is
published (``EventHub.notify``) only after the commit (``writer.py``). A run's ``cursor``
is the index of the next top-level step; ``results`` holds every completed step's output;
the step journal holds every step by its path, so a run resumed after its process died
continues from its last completed step. A run keeps the definition it started with:
resumed in a process whose catalog holds another definition, it is rebuilt from the
stored module source, or fails with ``definition_changed``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid

from quart import Quart

from host.api import GatewayError, context
from plugins.pipelines.actions import OperatorActions
from plugins.pipelines.catalog import PipelineCatalog
from plugins.pipelines.config import PipelinesConfig
from plugins.pipelines.metrics import PipelineMetrics
from plugins.pipelines.run_definitions import RunDefinitions
from plugins.pipelines.runner import RunRunner
from plugins.pipelines.scheduler import Scheduler
from plugins.pipelines.start import RunStarter
from plugins.pipelines.worker import Worker
from plugins.pipelines.worker_state import WorkerState
from plugins.pipelines.writer import RunWriter

ENGINE_KEY = "pipelines.engine"


class Engine:
    def __init__(self, app: Quart, catalog: PipelineCatalog, config: PipelinesConfig) -> None:
        gateway = context(app)
        self.catalog = catalog
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.state = WorkerState(self.worker_id)
        self.metrics = PipelineMetrics(gateway.metrics.registry)
        writer = RunWriter(gateway, self.state)
        self.definitions = RunDefinitions(gateway.store, catalog)
        self.starter = RunStarter(gateway, self.definitions, writer)
        self.actions = OperatorActions(writer, self.definitions, self.metrics)
        self.runner = RunRunner(gateway, config, writer, self.definitions, self.metrics)
        self.scheduler = Scheduler(
            gateway,
            catalog,
            self.starter,
            self.actions,
            self.metrics,
            lease_ms=int(config.lease_seconds * 1000),
            poll_seconds=config.poll_seconds,
        )
        self.worker = Worker(
            gateway,
            config,
            catalog,
            writer,
            self.runner,
            self.scheduler,
            self.actions,
            self.metrics,
        )

    @property
    def tasks(self) -> dict[str, asyncio.Task[None]]:
        """This process's runs in progress, by id."""
        return self.state.tasks

    @property
    def max_concurrent(self) -> int:
        return self.worker.max_concurrent

    async def start(self) -> None:
        await self.worker.start()

    async def stop(self) -> None:
        await self.worker.stop()

    async def definitions_in_use(self) -> set[str]:
        return await self.definitions.in_use()


def engine_of(app: Quart | None = None) -> Engine:
    engine: Engine | None = context(app).extras.get(ENGINE_KEY)
    if engine is None:
        raise GatewayError(503, "pipelines_not_ready", "the pipelines engine is not running")
    return engine
