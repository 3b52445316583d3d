"""Request and response bodies of the cortex routes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str = Field(max_length=20000)


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1, max_length=20000, description="the operator's question")
    history: list[Turn] = Field(
        default_factory=list, max_length=50, description="earlier turns of this conversation"
    )
    model: str | None = Field(
        None, min_length=1, max_length=200, description="a gateway model (default: the configured)"
    )


class ChatEvent(BaseModel):
    """One SSE event of ``POST /cortex/chat`` (``event: <type>``, ``data: <JSON>``)."""

    type: Literal[
        "cortex.started",
        "message.delta",
        "tool.call",
        "tool.result",
        "message.completed",
        "done",
        "error",
    ]
    data: dict[str, Any]


class ModelReadiness(BaseModel):
    name: str
    configured: bool = Field(description="the model is in the catalog")
    provider: str | None = None
    reachable: bool | None = Field(
        None, description="the last call or probe reached it (null: never tried here)"
    )
    checked_ms: int | None = None
    error: str | None = None


class ToolInfo(BaseModel):
    name: str
    description: str


class LastUse(BaseModel):
    at_ms: int
    outcome: str
    model: str
    tool_calls: int
    error_code: str | None = None


class CortexStatus(BaseModel):
    ready: bool = Field(description="model configured and reachable (or not yet tried)")
    model: ModelReadiness
    tools: list[ToolInfo] = Field(description="the read-only tools the caller's chat may use")
    last_use: LastUse | None = Field(None, description="the caller's last chat")
    last_use_any_ms: int | None = Field(None, description="when anyone last used the cortex")
