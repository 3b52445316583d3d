"""What a step author, a pipeline author and another plugin import from the pipelines
plugin: nothing else of it is public.

- Step kinds (``gateway_register_step_kinds``): an object with
  ``async run(step: Step, ctx: StepContext) -> Any``; raise :class:`StepError` for a
  failure retrying cannot fix, :class:`Suspend` to make the run wait.
- Pipelines (``gateway_register_pipelines``, or a module in the pipelines directory):
  :class:`Pipeline` with :class:`Step` objects, built with the helpers (``code``,
  ``approval``, ``wait``, ``tool``, ``llm``, ``branch``, ``parallel``, ``loop``).
- The :class:`PipelinesAPI` service (``host.api.service(PipelinesAPI)``): look up a
  pipeline, start a run, follow its events, await its :class:`RunState`.
- The :class:`ApprovalQueue` service (``host.api.service(ApprovalQueue)``): ask people for
  an approval beside the runs' gates (``GET /approvals``), await its
  :class:`ApprovalDecision`.
"""

from __future__ import annotations

from plugins.pipelines.api import STOP_EVENTS, PipelinesAPI, RunState
from plugins.pipelines.approval_queue import ApprovalDecision, ApprovalQueue
from plugins.pipelines.definition import (
    DefinitionError,
    Pipeline,
    Step,
    StepContext,
    StepError,
    approval,
    branch,
    code,
    llm,
    loop,
    parallel,
    tool,
    wait,
)
from plugins.pipelines.kinds import Suspend
from plugins.pipelines.models import ApprovalQuery, RunQuery, RunRecord
from plugins.pipelines.run_stats import RunCounts

__all__ = [
    "STOP_EVENTS",
    "ApprovalDecision",
    "ApprovalQuery",
    "ApprovalQueue",
    "DefinitionError",
    "Pipeline",
    "PipelinesAPI",
    "RunCounts",
    "RunQuery",
    "RunRecord",
    "RunState",
    "Step",
    "StepContext",
    "StepError",
    "Suspend",
    "approval",
    "branch",
    "code",
    "llm",
    "loop",
    "parallel",
    "tool",
    "wait",
]
