"""Approval-gated publish: draft a text, wait for a human to approve it, then publish.

The draft is written by an ``llm`` step on the built-in offline ``echo`` model, so the
example works without a network or a language model (echo answers ``echo: <prompt>``,
streamed word by word as ``step.delta`` events). Point it at a real model by naming a
``[models.<name>]`` of your gateway instead of ``"echo"``. The step needs the
OpenAI-compatible plugin, which provides the model catalog; without it the run fails at
``draft`` saying so.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from plugins.pipelines.definition import Pipeline, approval, code, llm


class PublishInput(BaseModel):
    topic: str = Field(..., min_length=1, max_length=200)
    audience: str = "everyone"


class PublishOutput(BaseModel):
    published: bool
    text: str
    approved_by: str


def draft_prompt(ctx: Any) -> str:
    return f"Write a short note on {ctx.input['topic']} for {ctx.input['audience']}."


def publish(ctx: Any) -> dict[str, Any]:
    return {
        "published": True,
        "text": ctx.results["draft"]["text"],
        "approved_by": ctx.results["review"]["approver"],
    }


PIPELINE = Pipeline(
    id="approval-publish",
    description="Draft a text, publish it only after a human approves it",
    version="2",
    input_model=PublishInput,
    output_model=PublishOutput,
    steps=[
        llm("draft", "echo", prompt=draft_prompt),
        approval("review", "Publish this draft?", timeout_seconds=86_400, on_timeout="deny"),
        code("publish", publish),
    ],
)
