"""A pipeline that answers chat messages, meant to be exposed as a model: with
``[plugins.openai_compat] pipeline_models = ["echo-chat"]`` any OpenAI client can call
``model="pipeline:echo-chat"``. Its input is the chat request's ``{"messages": [...]}``;
its ``llm`` step on the offline ``echo`` model streams the reply (``step.delta`` events).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from plugins.pipelines.definition import Pipeline, llm


class ChatInput(BaseModel):
    messages: list[dict[str, Any]] = Field(..., min_length=1)


PIPELINE = Pipeline(
    id="echo-chat",
    description="Answer chat messages with the offline echo model (a pipeline as a model)",
    input_model=ChatInput,
    steps=[llm("answer", "echo", prompt=lambda ctx: ctx.input["messages"])],
)
