"""The ``word_count`` step kind, and the ``count-words`` pipeline made of it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from plugins.pipelines.contract import Pipeline, Step, StepContext, StepError

KIND = "word_count"


class WordCount:
    """Count the words of ``config["text"]``: a string, or a function of the step context
    (``lambda ctx: ctx.input["text"]``). Returns ``{"words": n}``."""

    async def run(self, step: Step, ctx: StepContext) -> dict[str, int]:
        text = step.config.get("text")
        if callable(text):
            text = text(ctx)
        if not isinstance(text, str):
            # Retrying cannot fix a step written without a text: fail the run at once.
            raise StepError(f"word_count step {step.id!r} needs a text, got {type(text).__name__}")
        return {"words": len(text.split())}


class CountInput(BaseModel):
    text: str = Field(..., min_length=1, max_length=10_000)


def _text(ctx: StepContext) -> Any:
    return ctx.input.get("text")


COUNT_WORDS = Pipeline(
    id="count-words",
    description="Count the words of a text (the wordplay plugin's step kind)",
    input_model=CountInput,
    steps=[Step(id="count", kind=KIND, config={"text": _text})],
)
