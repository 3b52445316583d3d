"""The definition each run started with, kept for it (also across restarts): recorded
when the run is created, with a directory pipeline's module source stored once per
fingerprint, and found again whenever the run continues, in this or another process: the
definition this process loaded, or one rebuilt from the stored source. A run whose
definition cannot be had fails with ``definition_changed`` rather than run other steps."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from host.api import Store
from plugins.pipelines.catalog import Definition, PipelineCatalog
from plugins.pipelines.definition import Pipeline
from plugins.pipelines.runs import TERMINAL
from plugins.pipelines.tables import definition_sources, runs

log = logging.getLogger("gateway.pipelines")


class DefinitionChanged(Exception):
    """The definition a run started with cannot be had in this process."""


class RunDefinitions:
    def __init__(self, store: Store, catalog: PipelineCatalog) -> None:
        self.store = store
        self.catalog = catalog
        self._stored_sources: set[str] = set()  # digests known to be in the store

    async def store_source(self, conn: AsyncConnection, definition: Definition, now: int) -> None:
        """Store a directory definition's module source in ``conn``'s transaction (the
        creation of a run that uses it), unless it is known to be stored."""
        digest = definition.digest
        if digest is None or definition.text is None or digest in self._stored_sources:
            return
        await conn.execute(
            self.store.dialect.insert_ignore(definition_sources).values(
                digest=digest,
                path=definition.path or definition.source,
                source=definition.text,
                created_ms=now,
            )
        )

    def stored(self, definition: Definition) -> None:
        """The transaction that stored ``definition``'s source committed."""
        if definition.digest is not None:
            self._stored_sources.add(definition.digest)

    async def in_use(self) -> set[str]:
        """The definition keys of the runs not finished yet, whichever process runs them:
        what a reload must keep (``PipelineCatalog.load``)."""
        query = sa.select(runs.c.definition_key).where(runs.c.status.not_in(TERMINAL)).distinct()
        async with self.store.read() as conn:
            return {str(key) for key in (await conn.execute(query)).scalars()}

    async def for_run(self, conn: AsyncConnection, row: Any) -> Pipeline:
        """The definition the run started with: the one this process loaded, or one
        rebuilt from its stored module source. ``DefinitionChanged`` when it cannot be had
        (a plugin now registers another definition, or the stored source no longer loads)."""
        record = row.definition
        if not record:  # a run stored before definitions were recorded
            found = self.catalog.for_run(row.pipeline_id, row.definition_key)
            if found is None:
                raise DefinitionChanged(f"pipeline {row.pipeline_id!r} is no longer defined")
            return found
        known = self.catalog.by_key.get(row.definition_key)
        if known is not None:
            return known
        started = f"version {record.get('version')!r} ({record.get('fingerprint')})"
        if record.get("origin") == "directory":
            digest = str(record.get("fingerprint", "")).removeprefix("sha256:")
            stored = (
                await conn.execute(
                    sa.select(definition_sources).where(definition_sources.c.digest == digest)
                )
            ).first()
            if stored is None:
                raise DefinitionChanged(
                    f"pipeline {row.pipeline_id!r} changed since this run started with "
                    f"{started}, and that definition's stored source is missing"
                )
            try:
                pipeline = self.catalog.rebuild(row.pipeline_id, record, stored.source, stored.path)
            except BaseException as exc:  # the module's own sys.exit() too
                raise DefinitionChanged(
                    f"pipeline {row.pipeline_id!r} changed since this run started with "
                    f"{started}, and that definition could not be rebuilt from its stored "
                    f"source ({record.get('source')}): {type(exc).__name__}: {exc}"
                ) from None
            log.info("run %s continues with its stored definition, %s", row.id, started)
            return pipeline
        current = self.catalog.current.get(row.pipeline_id)
        now = (
            "no definition"
            if current is None
            else f"version {current.version!r} ({self.catalog.definition_of(current).fingerprint})"
        )
        raise DefinitionChanged(
            f"pipeline {row.pipeline_id!r} changed since this run started with {started}; "
            f"this gateway has {now}. A definition registered by a plugin cannot be rebuilt, "
            "so the run stops rather than run different steps"
        )
