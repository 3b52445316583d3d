"""The pipeline step kind ``agent``: open a session of a configured agent, send it the
step's prompt, stream its updates as the run's step events, close it. The agent's
permission requests are approvals of the run (``GET /approvals`` shows their ``run_id``);
the step's output is ``{"session_id", "stop_reason", "text"}``."""

from __future__ import annotations

from typing import Any

from host.api import Event, GatewayError
from plugins.pipelines.contract import PipelinesAPI, Step, StepContext, StepError


def agent(step_id: str, agent_id: str, prompt: Any, **options: Any) -> Step:
    """A step that asks agent ``agent_id`` (``[agents.<id>]``); ``prompt`` is a string or
    a function of the step context; ``workspace=`` a folder of the agent's root."""
    workspace = options.pop("workspace", None)
    config = {"agent": agent_id, "prompt": prompt, "workspace": workspace}
    return Step(step_id, "agent", config, **options)


class AgentKind:
    async def run(self, step: Step, ctx: StepContext) -> Any:
        from plugins.agents.service import AgentSessions

        services = ctx.gateway.services
        if not services.has(AgentSessions):
            raise StepError(
                f"agent steps need the agents plugin: {services.missing(AgentSessions)}"
            )
        sessions = services.get(AgentSessions)
        prompt = step.config.get("prompt")
        text = prompt(ctx) if callable(prompt) else prompt
        if not isinstance(text, str) or not text:
            raise StepError(f"agent step {step.id!r}: the prompt must be a non-empty string")
        owner = (await services.get(PipelinesAPI).record(ctx.run_id)).owner
        try:
            session = await sessions.open(
                str(step.config.get("agent")),
                owner=owner,
                created_by=f"run:{ctx.run_id}",
                workspace=step.config.get("workspace"),
                metadata={"run_id": ctx.run_id, "step": ctx.step_path},
                run_id=ctx.run_id,
            )
        except GatewayError as exc:
            raise StepError(f"agent step {step.id!r}: {exc.message}") from None

        async def forward(event: Event) -> None:
            update = event.data.get("update") or {}
            content = update.get("content") or {}
            if (
                update.get("sessionUpdate") == "agent_message_chunk"
                and content.get("type") == "text"
            ):
                await ctx.delta(str(content.get("text", "")))
            data = {"step": ctx.step_path, "session_id": session.id, "type": event.type}
            await ctx.engine.publish(ctx.run_id, "step.agent", {**data, "data": event.data})

        try:
            outcome = await sessions.prompt(session.id, text, on_event=forward)
        except GatewayError as exc:
            raise StepError(f"agent step {step.id!r}: {exc.message}") from None
        finally:
            await sessions.close(session.id, None, "the pipeline step ended")
        return {"session_id": session.id, "stop_reason": outcome.stop_reason, "text": outcome.text}
