"""The pipeline definition API: what a pipelines module builds, and what a step sees.

A pipeline is an id, a description, a version, optional pydantic input and output models
and a list of steps. Each step has an id (unique in the pipeline), a kind (registered
through ``gateway_register_step_kinds``), a kind-specific ``config`` and the common
options: ``retries`` with exponential ``backoff_seconds``, ``timeout_seconds``, a ``when``
predicate, ``continue_on_error`` and, for ``code`` steps, ``isolation`` (how the function
runs: see ``execution.py``; a pipeline's ``isolation`` is the default of its code steps).

Helpers build the built-in kinds::

    from plugins.pipelines.definition import Pipeline, approval, code, wait

    PIPELINE = Pipeline(
        id="greet",
        description="Say hello",
        steps=[code("hello", lambda ctx: {"text": f"hello {ctx.input['name']}"})],
    )

A module in the pipelines directory exposes its pipelines as module-level ``Pipeline``
objects (or a ``PIPELINES`` list).

A step function (and a step kind's ``run``) gets a :class:`StepContext`; it raises
:class:`StepError` for a failure that retrying cannot fix.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

if TYPE_CHECKING:
    from host.api import Event, GatewayContext

Predicate = Callable[["StepContext"], bool]
StepFn = Callable[["StepContext"], Any | Awaitable[Any]]

KNOWN_ON_TIMEOUT = ("fail", "approve", "deny")
# How a code step's function runs (``execution.py``): ``thread`` (default: a sync function
# in a worker thread, an async one on the event loop), ``process`` (a step process, killed
# on timeout and cancel) or ``loop`` (a sync function on the event loop itself).
ISOLATIONS = ("thread", "process", "loop")
# They join step ids into step paths (``review.approve``, ``count[2].tick``, ``pick#if``).
PATH_CHARACTERS = (".", "[", "]", "#")
# One part of a step path: a step id, with the pass index if a loop ran it (``rounds[2]``).
PATH_PART = re.compile(r"([^.\[\]#]+)(?:\[(\d+)\])?")


class DefinitionError(ValueError):
    """A pipeline or step that cannot be run as written."""


class StepError(Exception):
    """A failure that retrying cannot fix (a denial, a misconfigured step)."""


@dataclass
class Step:
    id: str
    kind: str
    config: dict[str, Any] = field(default_factory=dict)
    retries: int = 0
    backoff_seconds: float = 0.5
    timeout_seconds: float | None = None
    when: Predicate | None = None
    continue_on_error: bool = False
    description: str = ""
    isolation: str | None = None  # code steps; None: the pipeline's

    def __post_init__(self) -> None:
        if not self.id or not isinstance(self.id, str):
            raise DefinitionError("a step needs a non-empty string id")
        if any(c in self.id for c in PATH_CHARACTERS):
            raise DefinitionError(
                f"step {self.id!r}: a step id may not contain {' '.join(PATH_CHARACTERS)} "
                "(they separate the parts of a nested step's path)"
            )
        if self.retries < 0:
            raise DefinitionError(f"step {self.id!r}: retries must be >= 0")
        if self.timeout_seconds is not None and self.timeout_seconds <= 0:
            raise DefinitionError(f"step {self.id!r}: timeout_seconds must be > 0")
        if self.isolation is not None:
            if self.isolation not in ISOLATIONS:
                raise DefinitionError(
                    f"step {self.id!r}: isolation must be one of {ISOLATIONS} "
                    f"(got {self.isolation!r})"
                )
            if self.kind != "code":
                raise DefinitionError(
                    f"step {self.id!r}: isolation applies to code steps (this is {self.kind!r})"
                )
            _check_isolated(self, self.isolation)

    def children(self) -> list[Step]:
        """Steps nested in a branch, parallel or loop step."""
        out: list[Step] = []
        for key in ("then", "else", "body"):
            out += list(self.config.get(key) or [])
        for branch in (self.config.get("branches") or {}).values():
            out += list(branch)
        return out

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "description": self.description,
            "retries": self.retries,
            "backoff_seconds": self.backoff_seconds,
            "timeout_seconds": self.timeout_seconds,
            "conditional": self.when is not None,
            "continue_on_error": self.continue_on_error,
        }
        if self.isolation is not None:
            info["isolation"] = self.isolation
        schema = self.config.get("schema")
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            info["input_schema"] = schema.model_json_schema()
        for key in ("then", "else", "body"):
            if self.config.get(key):
                info[key] = [s.describe() for s in self.config[key]]
        if self.config.get("branches"):
            info["branches"] = {
                name: [s.describe() for s in steps]
                for name, steps in self.config["branches"].items()
            }
        if "max" in self.config:
            info["max"] = self.config["max"]
        return info


@dataclass
class Pipeline:
    id: str
    steps: Sequence[Step]
    description: str = ""
    version: str = "1"
    input_model: type[BaseModel] | None = None
    output_model: type[BaseModel] | None = None
    output: Callable[[StepContext], Any] | None = None
    source: str = "code"
    isolation: str = "thread"  # the default of its code steps (``Step.isolation``)
    # Set by the catalog that loaded it: where this definition came from, its fingerprint.
    origin: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.id or not isinstance(self.id, str) or "/" in self.id:
            raise DefinitionError("a pipeline needs a non-empty id without '/'")
        if not self.steps:
            raise DefinitionError(f"pipeline {self.id!r} has no steps")
        if self.isolation not in ISOLATIONS:
            raise DefinitionError(
                f"pipeline {self.id!r}: isolation must be one of {ISOLATIONS} "
                f"(got {self.isolation!r})"
            )
        self.steps = list(self.steps)
        seen: set[str] = set()
        for step in self.all_steps():
            if step.id in seen:
                raise DefinitionError(f"pipeline {self.id!r}: step id {step.id!r} is used twice")
            seen.add(step.id)
            if step.kind == "code" and step.isolation is None:
                _check_isolated(step, self.isolation)

    def all_steps(self) -> list[Step]:
        out: list[Step] = []
        todo = list(self.steps)
        while todo:
            step = todo.pop(0)
            out.append(step)
            todo = step.children() + todo
        return out

    def step(self, step_id: str) -> Step | None:
        for step in self.all_steps():
            if step.id == step_id:
                return step
        return None

    def step_at(self, path: str) -> Step | None:
        """The step a path names as the built-in kinds form it (``review.approve``,
        ``rounds[1].reply``: a loop's pass index is required, below its ``max``), or the
        step with that id if ``path`` is a bare id; ``None`` if there is none."""
        parts = [PATH_PART.fullmatch(part) for part in path.split(".")]
        if len(parts) == 1:
            return self.step(path)  # a bare id names the step at any depth
        found: Step | None = None
        candidates = list(self.steps)
        for n, match in enumerate(parts):
            if match is None:
                return None
            step_id, index = match[1], match[2]
            found = next((s for s in candidates if s.id == step_id), None)
            if found is None:
                return None
            last = n == len(parts) - 1
            if last and index is not None:
                return None
            if not last and found.kind == "loop":
                if index is None or int(index) >= int(found.config.get("max", 0)):
                    return None
            elif not last and found.kind in ("branch", "parallel") and index is not None:
                return None
            candidates = found.children()
        return found

    def input_schema(self) -> dict[str, Any]:
        if self.input_model is None:
            return {"type": "object"}
        return self.input_model.model_json_schema()

    def output_schema(self) -> dict[str, Any]:
        if self.output_model is None:
            return {"type": "object"}
        return self.output_model.model_json_schema()


def _check_isolated(step: Step, isolation: str) -> None:
    """A step process finds a step's function by module and qualified name (it cannot be
    sent as an object): a lambda or a function defined inside another is refused here,
    when the module loads, rather than when the step runs."""
    if isolation != "process":
        return
    fn = step.config.get("fn")
    qualname = getattr(fn, "__qualname__", None)
    if not callable(fn) or not isinstance(qualname, str) or "<" in qualname:
        raise DefinitionError(
            f"step {step.id!r}: isolation 'process' needs a function defined at the top level "
            f"of a module (a step process imports it by name), not {fn!r}"
        )


# -- what a step sees ------------------------------------------------------------------------


class CodeRunner(Protocol):
    """Calls a code step's function by its isolation (``execution.StepExecution``)."""

    async def call(self, fn: Callable[..., Any], step: Step, ctx: StepContext) -> Any: ...


class StepEngine(Protocol):
    """The engine as a step context reaches it (``runner.RunRunner``)."""

    @property
    def gateway(self) -> GatewayContext: ...

    @property
    def execution(self) -> CodeRunner: ...

    async def publish(self, run_id: str, type_: str, data: dict[str, Any]) -> Event: ...

    async def run_nested(
        self, parent: StepContext, steps: list[Step], scope: str = ""
    ) -> dict[str, Any]: ...

    async def decide(self, ctx: StepContext, path: str, compute: Callable[[], Any]) -> Any: ...


@dataclass
class StepContext:
    """What a step function sees."""

    engine: StepEngine
    run_id: str
    pipeline: Pipeline
    input: dict[str, Any]
    results: dict[str, Any]
    step: Step
    resolution: dict[str, Any] | None = None
    iteration: int = 0
    nested: bool = False
    extras: dict[str, Any] = field(default_factory=dict)
    path: str = ""  # the step's path: its id, under its parents' (``review.approve``)
    attempt: int = 0  # 1 on the first start of this step; counts retries and re-runs
    resolutions: dict[str, Any] = field(default_factory=dict)  # by step path
    journal: dict[str, dict[str, Any]] = field(default_factory=dict)  # by step path
    released: str | None = None  # the step path a release lets past its breakpoint once
    owner: str | None = None  # the run owner's principal key (its model access, budgets)

    @property
    def gateway(self) -> GatewayContext:
        return self.engine.gateway

    @property
    def step_path(self) -> str:
        return self.path or self.step.id

    @property
    def step_key(self) -> str:
        """``<run id>:<step path>``: the same on every attempt of this step, also when it
        runs again after a restart. Pass it to external systems as an idempotency key."""
        return f"{self.run_id}:{self.step_path}"

    async def delta(self, text: str) -> None:
        """Publish a ``step.delta`` event (token streaming), naming this attempt: a retried
        step streams its text again, and a reader tells the attempts apart by it."""
        await self.engine.publish(
            self.run_id,
            "step.delta",
            {"step": self.step_path, "attempt": self.attempt, "text": text},
        )

    async def usage(self, prompt_tokens: int, completion_tokens: int, total_tokens: int) -> None:
        """Publish a ``step.usage`` event: the tokens this attempt consumed (a failed
        attempt's tokens count too)."""
        await self.engine.publish(
            self.run_id,
            "step.usage",
            {
                "step": self.step_path,
                "attempt": self.attempt,
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": total_tokens,
            },
        )

    async def run_steps(self, steps: list[Step], scope: str = "") -> dict[str, Any]:
        """Run nested steps in order (branch, parallel, loop); returns their outputs.
        A nested step's path is ``<this path><scope>.<id>``: a kind that runs the same
        steps more than once must give each pass its own ``scope`` (loops use ``[i]``)."""
        return await self.engine.run_nested(self, steps, scope)

    async def decide(self, suffix: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per run: the value is stored under ``<path><suffix>`` and a
        resumed run gets the stored value (branch conditions, loop tests)."""
        return await self.engine.decide(self, self.step_path + suffix, compute)


# -- helpers for the built-in kinds ----------------------------------------------------------


def code(step_id: str, fn: StepFn, **options: Any) -> Step:
    """Call ``fn(ctx)`` (sync or async); its JSON-able return value is the step output."""
    return Step(step_id, "code", {"fn": fn}, **options)


def approval(
    step_id: str,
    message: str = "",
    *,
    timeout_seconds: float | None = None,
    on_timeout: str = "fail",
    **options: Any,
) -> Step:
    """A human gate: the run waits until ``POST /runs/{id}/approve`` or ``/deny``.
    With ``timeout_seconds`` the gate resolves by ``on_timeout``: fail, approve or deny.
    A denial fails the step (and the run, unless ``continue_on_error``)."""
    if on_timeout not in KNOWN_ON_TIMEOUT:
        raise DefinitionError(f"step {step_id!r}: on_timeout must be one of {KNOWN_ON_TIMEOUT}")
    config = {"message": message, "approval_timeout_seconds": timeout_seconds}
    config["on_timeout"] = on_timeout
    return Step(step_id, "approval", config, **options)


def wait(
    step_id: str, schema: type[BaseModel] | None = None, prompt: str = "", **options: Any
) -> Step:
    """Wait for ``POST /runs/{id}/resume`` with ``input`` valid against ``schema``."""
    return Step(step_id, "wait", {"schema": schema, "prompt": prompt}, **options)


def tool(step_id: str, name: str, args: Any = None, **options: Any) -> Step:
    """Call the tool ``name`` (``gateway_register_tools``) with ``args`` (a dict, or a
    function of the step context returning one)."""
    return Step(step_id, "tool", {"tool": name, "args": args}, **options)


def llm(step_id: str, model: str, prompt: Any, **options: Any) -> Step:
    """Ask ``model`` (a gateway model name of the OpenAI-compatible plugin); ``prompt`` is
    a string or a function of the step context. Token deltas become ``step.delta`` events."""
    return Step(step_id, "llm", {"model": model, "prompt": prompt}, **options)


def branch(
    step_id: str,
    condition: Predicate,
    then: Sequence[Step],
    otherwise: Sequence[Step] = (),
    **options: Any,
) -> Step:
    return Step(
        step_id, "branch", {"if": condition, "then": list(then), "else": list(otherwise)}, **options
    )


def parallel(step_id: str, branches: dict[str, Sequence[Step]], **options: Any) -> Step:
    return Step(
        step_id, "parallel", {"branches": {k: list(v) for k, v in branches.items()}}, **options
    )


def loop(
    step_id: str,
    body: Sequence[Step],
    *,
    max: int,
    while_: Predicate | None = None,
    **options: Any,
) -> Step:
    """Run ``body`` while ``while_`` holds (checked before each pass), at most ``max`` times."""
    if not isinstance(max, int) or max < 1:
        raise DefinitionError(f"loop step {step_id!r} needs a maximum >= 1")
    return Step(step_id, "loop", {"body": list(body), "while": while_, "max": max}, **options)
