"""Request bodies of the OpenAI-compatible routes (the subset the gateway serves)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from host.errors import GatewayError, validation_message


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class StreamOptions(_Strict):
    include_usage: bool = False


def _metadata_limits(v: dict[str, str]) -> dict[str, str]:
    # OpenAI's limits: 16 pairs, keys up to 64 characters, values up to 512.
    if len(v) > 16:
        raise ValueError("at most 16 metadata pairs")
    for key, value in v.items():
        if len(key) > 64:
            raise ValueError(f"metadata key {key[:20]!r}... is longer than 64 characters")
        if len(value) > 512:
            raise ValueError(f"metadata.{key} is longer than 512 characters")
    return v


Metadata = Annotated[dict[str, str], AfterValidator(_metadata_limits)]


class ChatCompletionRequest(_Strict):
    model: str = Field(..., min_length=1)
    messages: list[ChatMessage] = Field(..., min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    n: int = Field(1, ge=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    stop: str | list[str] | None = None
    user: str | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    seed: int | None = None
    response_format: dict[str, Any] | None = None
    metadata: Metadata | None = None

    @field_validator("stop")
    @classmethod
    def _at_most_four_stops(cls, v: Any) -> Any:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        return v


class CompletionRequest(_Strict):
    model: str = Field(..., min_length=1)
    prompt: str | list[str]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n: int = Field(1, ge=1)
    user: str | None = None
    seed: int | None = None


def parse_body(model: type[BaseModel], body: Any) -> Any:
    """Validate an OpenAI request body: unknown parameters are named as unsupported,
    type errors name the field; both 400 before any provider is called."""
    if not isinstance(body, dict):
        raise GatewayError(400, "invalid_json", "the request body must be a JSON object")
    unknown = sorted(set(body) - set(model.model_fields))
    if unknown:
        raise GatewayError(
            400,
            "unsupported_parameter",
            f"unsupported parameter: {', '.join(unknown)}",
            param=unknown[0],
        )
    try:
        parsed = model.model_validate(body)
    except ValidationError as exc:
        message, field = validation_message(exc)
        raise GatewayError(400, "invalid_request_body", message, param=field) from exc
    if getattr(parsed, "n", 1) != 1:
        raise GatewayError(400, "unsupported_parameter", "n: only n = 1 is supported", param="n")
    return parsed
