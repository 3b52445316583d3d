"""The hooks the pipelines plugin declares, for other plugins to implement. Step authors
import their types from ``plugins.pipelines.contract``."""

from __future__ import annotations

from typing import Any

from host.api import GatewayContext, Register, hookspec, registry_hookspec


@registry_hookspec("step_kinds", "step kind")
def gateway_register_step_kinds(register: Register) -> None:
    """Register pipeline step kinds: ``register(name, step_kind)``.

    :param register: ``register(name: str, step_kind: object)``; a step kind has
        ``async run(step: contract.Step, ctx: contract.StepContext) -> Any``.

    All implementations are called; a step kind registered twice fails start-up.
    """


@registry_hookspec("pipelines", "pipeline")
def gateway_register_pipelines(register: Register) -> None:
    """Register pipelines defined in code: ``register(pipeline_id, pipeline)``.

    :param register: ``register(pipeline_id: str, pipeline: contract.Pipeline)``.

    All implementations are called; a pipeline id registered twice fails start-up.
    """


@hookspec
def gateway_admit_run(gateway: GatewayContext, pipeline_id: str, trigger: dict[str, Any]) -> Any:
    """Admit or refuse a new run of ``pipeline_id`` (an API start, a webhook delivery, a
    schedule's fire, a pipeline model call) before it is stored.

    :param gateway: the app's gateway context (``store``, ``settings``).
    :param pipeline_id: the pipeline the run is of.
    :param trigger: what starts it (``{"type": "api" | "webhook" | "schedule" | ...}``).

    Awaitable. All implementations are called; one that raises ``host.api.GatewayError``
    refuses the run with that error (a schedule's fire records ``skipped_<code>``).
    Return values are ignored. Called once per run: keep it to one indexed read.
    """
