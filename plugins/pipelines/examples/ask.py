"""Wait for human input: the run stops at ``answer`` until
``POST /runs/{runId}/resume`` sends ``{"input": {"name": "..."}}``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from plugins.pipelines.definition import Pipeline, code, wait


class Answer(BaseModel):
    name: str = Field(..., min_length=1, max_length=100)


def reply(ctx: Any) -> dict[str, str]:
    return {"greeting": f"{ctx.input.get('greeting', 'hello')}, {ctx.results['answer']['name']}"}


PIPELINE = Pipeline(
    id="ask-name",
    description="Ask a human for a name, then greet them",
    steps=[
        wait("answer", schema=Answer, prompt="What is your name?"),
        code("reply", reply),
    ],
)
