"""Approval-gated publish: draft a text, wait for a human to approve it, then publish.

The draft is written by a ``code`` step so the example works offline and without the
OpenAI-compatible plugin; with that plugin loaded, replace ``draft`` by
``llm("draft", "echo", prompt=lambda ctx: f"Write about {ctx.input['topic']}")``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from plugins.pipelines.definition import Pipeline, approval, code


class PublishInput(BaseModel):
    topic: str = Field(..., min_length=1, max_length=200)
    audience: str = "everyone"


class PublishOutput(BaseModel):
    published: bool
    text: str
    approved_by: str


def draft(ctx: Any) -> dict[str, str]:
    topic, audience = ctx.input["topic"], ctx.input["audience"]
    return {"text": f"A short note on {topic}, written for {audience}."}


def publish(ctx: Any) -> dict[str, Any]:
    return {
        "published": True,
        "text": ctx.results["draft"]["text"],
        "approved_by": ctx.results["review"]["approver"],
    }


PIPELINE = Pipeline(
    id="approval-publish",
    description="Draft a text, publish it only after a human approves it",
    version="1",
    input_model=PublishInput,
    output_model=PublishOutput,
    steps=[
        code("draft", draft),
        approval("review", "Publish this draft?", timeout_seconds=86_400, on_timeout="deny"),
        code("publish", publish),
    ],
)
