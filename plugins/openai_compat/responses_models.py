"""The ``POST /v1/responses`` request body (the subset the gateway serves)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from plugins.openai_compat.models import (
    FORMAT_NAME,
    JsonSchemaFormat,
    Metadata,
    ResponseFormat,
    StrictBody,
    check_parallel_tool_calls,
    check_tool_choice,
    only_function_tools,
    unsupported,
)


class ResponsesTool(StrictBody):
    """A function tool, Responses-style (flat: no ``function`` wrapper)."""

    type: Literal["function"]
    name: str = Field(..., min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON Schema object
    strict: bool | None = None


class TextFormat(StrictBody):
    """``text.format``: plain text, any JSON object, or JSON following ``schema``: chat's
    ``response_format`` with the ``json_schema`` fields flat."""

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(None, pattern=FORMAT_NAME, validate_default=True)
    json_schema: dict[str, Any] | None = Field(None, alias="schema")
    description: str | None = None
    strict: bool | None = None

    @field_validator("name", "json_schema")
    @classmethod
    def _only_for_json_schema(cls, v: Any, info: ValidationInfo) -> Any:
        kind = info.data.get("type")
        if kind == "json_schema" and v is None:  # (a missing schema: _schema_given)
            raise ValueError("required when type is 'json_schema'")
        if kind not in (None, "json_schema") and v is not None:
            raise ValueError("only a 'json_schema' format has one")
        return v

    @model_validator(mode="after")
    def _schema_given(self) -> TextFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("schema is required when type is 'json_schema'")
        return self

    def response_format(self) -> ResponseFormat | None:
        """The chat-completions ``response_format`` this format asks for."""
        if self.type == "text":
            return None
        spec = None
        if self.type == "json_schema":
            fields = self.model_dump(exclude={"type"}, exclude_none=True, by_alias=True)
            spec = JsonSchemaFormat.model_validate(fields)
        return ResponseFormat(type=self.type, json_schema=spec)


class TextConfig(StrictBody):
    format: TextFormat | None = None


def _named_choice(choice: dict[str, Any]) -> str | None:
    if set(choice) != {"type", "name"} or choice["type"] != "function":
        return None
    return choice["name"] if isinstance(choice["name"], str) and choice["name"] else None


class ResponsesRequest(StrictBody):
    model: str = Field(..., min_length=1)
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    tools: list[Annotated[ResponsesTool, BeforeValidator(only_function_tools)]] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    previous_response_id: str | None = None
    store: bool = True
    metadata: Metadata | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    user: str | None = None
    stream: bool = False
    # text.format json_object / json_schema become chat's response_format.
    text: TextConfig | None = None
    truncation: Literal["auto", "disabled"] | None = None

    @field_validator("tool_choice", mode="before")
    @classmethod
    def _tool_choice(cls, v: Any, info: ValidationInfo) -> Any:
        return check_tool_choice(v, info, _named_choice)

    @field_validator("parallel_tool_calls")
    @classmethod
    def _parallel_tool_calls(cls, v: Any, info: ValidationInfo) -> Any:
        return check_parallel_tool_calls(v, info)

    @field_validator("truncation")
    @classmethod
    def _no_truncation(cls, v: Any) -> Any:
        if v == "auto":
            raise unsupported("truncation 'auto' is not supported (only 'disabled' is)")
        return v


class _InputItem(BaseModel):
    # Items given back from an earlier output carry ``id`` and ``status``: ignored.
    model_config = ConfigDict(extra="ignore", strict=True)


class FunctionCallInput(_InputItem):
    """A ``function_call`` input item: a call the model made earlier."""

    call_id: str = Field(..., min_length=1)
    name: str = Field(..., min_length=1)
    arguments: str


class FunctionCallOutputInput(_InputItem):
    """A ``function_call_output`` input item: the result of a call."""

    call_id: str = Field(..., min_length=1)
    output: str | list[dict[str, Any]]
