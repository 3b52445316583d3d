"""The hook the jobs plugin declares, for plugins whose background work shows in
``/gateway/jobs``. Sources implement ``plugins.jobs.contract.JobSource``."""

from __future__ import annotations

from host.api import Register, registry_hookspec


@registry_hookspec("job_sources", "job source")
def gateway_register_job_sources(register: Register) -> None:
    """Register sources of background jobs: ``register(name, source)``.

    :param register: ``register(name: str, source: contract.JobSource)``; ``name`` is the
        prefix of its jobs' ids (``pipelines:<run id>``) and holds no ``:``.

    All implementations are called; a source registered twice fails start-up.
    """
