"""The built-in step kinds. A step kind is an object with ``async run(step, ctx)`` that
returns the step's output; it raises :class:`Suspend` to make the run wait (also from a
step nested in a branch, parallel or loop step) and :class:`StepError` for a failure
that must not be retried."""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa

from host.api import GatewayError, ToolError, call_tool
from plugins.pipelines.definition import Step, StepContext, StepError
from plugins.pipelines.tables import runs


class Suspend(Exception):
    """Make the run wait; ``waiting_for`` says for what (stored on the run)."""

    def __init__(self, waiting_for: dict[str, Any]) -> None:
        super().__init__(waiting_for.get("type", "wait"))
        self.waiting_for = waiting_for


def _resolve(value: Any, ctx: StepContext) -> Any:
    return value(ctx) if callable(value) else value


class CodeKind:
    """Call ``config["fn"](ctx)``, sync or async, by the step's isolation (a sync function
    in a worker thread by default: ``execution.py``)."""

    async def run(self, step: Step, ctx: StepContext) -> Any:
        fn = step.config.get("fn")
        if not callable(fn):
            raise StepError(f"code step {step.id!r} has no callable 'fn'")
        return await ctx.engine.execution.call(fn, step, ctx)


class ApprovalKind:
    """A human gate; the engine stores the request and the decision."""

    async def run(self, step: Step, ctx: StepContext) -> Any:
        decision = ctx.resolution
        if decision is None:
            timeout = step.config.get("approval_timeout_seconds")
            raise Suspend(
                {
                    "type": "approval",
                    "step": ctx.step_path,
                    "message": str(step.config.get("message") or ""),
                    "timeout_seconds": timeout,
                    "on_timeout": step.config.get("on_timeout", "fail"),
                }
            )
        if decision.get("decision") == "approved":
            return decision
        raise StepError(
            f"approval {step.id!r} denied by {decision.get('approver')}: "
            f"{decision.get('reason') or 'no reason given'}"
        )


class WaitKind:
    """Wait for ``POST /runs/{id}/resume``; the resume input is the step output."""

    async def run(self, step: Step, ctx: StepContext) -> Any:
        if ctx.resolution is None:
            schema = step.config.get("schema")
            raise Suspend(
                {
                    "type": "input",
                    "step": ctx.step_path,
                    "prompt": str(step.config.get("prompt") or ""),
                    "schema": schema.model_json_schema() if schema is not None else None,
                }
            )
        return ctx.resolution.get("input")


class ToolKind:
    """Calls a registered tool through ``host.api.call_tool`` (timed, scanned, observed);
    a refused call, bad arguments or blocked output fail the step without a retry. A call
    that waits for a person's approval parks the run (``tool_approval``) like an approval
    step; the decision queues it again (``approval_queue.resume_tool_wait``) and the step
    calls again with that approval, which runs the call once, or fails when denied."""

    async def run(self, step: Step, ctx: StepContext) -> Any:
        name = str(step.config.get("tool") or "")
        args = _resolve(step.config.get("args"), ctx) or {}
        if not isinstance(args, dict):
            raise StepError(f"tool step {step.id!r}: args must be a dict")
        async with ctx.gateway.store.read() as conn:
            owner = (
                await conn.execute(sa.select(runs.c.owner).where(runs.c.id == ctx.run_id))
            ).scalar()
        caller: dict[str, Any] = {"kind": "pipeline", "run_id": ctx.run_id}
        caller.update(pipeline_id=ctx.pipeline.id, step=ctx.path, owner=owner)
        decided = ctx.resolution or {}
        if decided.get("approval_id"):
            if decided.get("decision") != "approved":
                raise StepError(
                    f"tool step {step.id!r}: the call of tool {name!r} was not approved "
                    f"({decided.get('decision')}"
                    + (f" by {decided['approver']}" if decided.get("approver") else "")
                    + f"): {decided.get('reason') or 'no reason given'}"
                )
            caller["approval_id"] = decided["approval_id"]
        try:
            return await call_tool(ctx.gateway, name, args, caller=caller)
        except ToolError as exc:
            if exc.code == "approval_required" and exc.approval_id:
                raise Suspend(
                    {
                        "type": "tool_approval",
                        "step": ctx.step_path,
                        "approval_id": exc.approval_id,
                        "tool": name,
                        "message": exc.message,
                    }
                ) from None
            raise StepError(f"tool step {step.id!r}: {exc}") from None


class LlmKind:
    """A model call through the OpenAI-compatible plugin's catalog; deltas become
    ``step.delta`` events and the stream's usage (asked for unless the model's upstream
    refuses it) a ``step.usage`` event. Returns ``{"text", "usage"}`` (usage None when
    the upstream gave none). The call is the run owner's: its ``models`` list and
    budgets apply (a refusal fails the step, ``model_not_allowed`` or
    ``budget_exceeded``, without a retry) and its tokens count in the owner's usage."""

    async def run(self, step: Step, ctx: StepContext) -> Any:
        # Imported on use: a gateway that runs no llm step never imports openai_compat.
        from plugins.openai_compat.contract import ModelCatalog, ProviderError

        services = ctx.gateway.services
        if not services.has(ModelCatalog):
            raise StepError(f"llm steps need the model catalog: {services.missing(ModelCatalog)}")
        catalog = services.get(ModelCatalog)
        prompt = _resolve(step.config.get("prompt"), ctx)
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        body = {"model": step.config["model"], "messages": messages, "stream": True}
        parts: list[str] = []
        usage: dict[str, Any] | None = None
        # Behind the safety scanners like the chat route: the prompt (stage inbound) and
        # the streamed answer (model_output, held back and redacted as it grows).
        try:
            chunks = await catalog.scanned_chat_stream(
                step.config["model"],
                body,
                principal=f"pipeline:{ctx.pipeline.id}:{ctx.run_id}",
                gateway=ctx.gateway,
                include_usage=True,
                owner=ctx.owner,
            )
            async for chunk in chunks:
                if isinstance(chunk.get("usage"), dict):
                    # Published at once: an attempt that fails after it consumed the tokens.
                    usage = chunk["usage"]
                    await ctx.usage(*(_tokens(usage, key) for key in USAGE_KEYS))
                for choice in chunk.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        parts.append(text)
                        await ctx.delta(text)
        except (GatewayError, ProviderError) as exc:
            if exc.code not in REFUSALS:
                raise
            # Not retried: the run's owner may not use the model, has spent a budget
            # (a retry a moment later would spend more of the run's time, not less), or
            # the content is blocked.
            raise StepError(f"llm step {step.id!r}: {exc.code}: {exc.message}") from None
        return {"text": "".join(parts), "usage": usage}


USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")
REFUSALS = ("content_blocked", "model_not_allowed", "budget_exceeded")


def _tokens(usage: dict[str, Any], key: str) -> int:
    value = usage.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class BranchKind:
    """Runs ``then`` or ``else``; the choice is stored, so a resumed run takes the same."""

    async def run(self, step: Step, ctx: StepContext) -> Any:
        condition = step.config.get("if")
        taken = await ctx.decide(
            "#if", lambda: bool(condition(ctx)) if callable(condition) else bool(condition)
        )
        steps = step.config.get("then" if taken else "else") or []
        results = await ctx.run_steps(steps)
        return {"branch": "then" if taken else "else", "results": results}


class ParallelKind:
    """Runs the branches concurrently and ends when every branch has ended. A failure
    wins over a suspension; a branch at an approval or wait step suspends the run once
    its siblings have finished or stopped at a gate of their own (one gate at a time)."""

    async def run(self, step: Step, ctx: StepContext) -> Any:
        branches: dict[str, list[Step]] = step.config.get("branches") or {}
        names = list(branches)
        outs = await asyncio.gather(
            *(ctx.run_steps(branches[n]) for n in names), return_exceptions=True
        )
        errors = [o for o in outs if isinstance(o, BaseException)]
        for error in errors:
            if not isinstance(error, Suspend):
                raise error
        if errors:
            raise errors[0]
        return dict(zip(names, outs, strict=True))


class LoopKind:
    """Pass ``i`` runs the body with paths ``<loop>[i].<id>``; each ``while`` test is
    stored, so a resumed run repeats the same passes."""

    async def run(self, step: Step, ctx: StepContext) -> Any:
        maximum = int(step.config["max"])
        condition = step.config.get("while")
        passes: list[Any] = []
        for i in range(maximum):
            ctx.iteration = i
            if callable(condition) and not await ctx.decide(
                f"[{i}]#while", lambda: bool(condition(ctx))
            ):
                break
            passes.append(await ctx.run_steps(step.config.get("body") or [], scope=f"[{i}]"))
        return {"iterations": len(passes), "results": passes}


BUILTIN_KINDS: dict[str, Any] = {
    "code": CodeKind(),
    "llm": LlmKind(),
    "tool": ToolKind(),
    "approval": ApprovalKind(),
    "wait": WaitKind(),
    "branch": BranchKind(),
    "parallel": ParallelKind(),
    "loop": LoopKind(),
}
