"""The hooks the pipelines plugin declares, for other plugins to implement. Step authors
import their types from ``plugins.pipelines.contract``."""

from __future__ import annotations

from host.api import Register, registry_hookspec


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
