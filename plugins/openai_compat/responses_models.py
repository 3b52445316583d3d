"""The ``POST /v1/responses`` request body (the subset the gateway serves)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from host.api import GatewayError
from plugins.openai_compat.models import (
    FORMAT_NAME,
    JsonSchemaFormat,
    Metadata,
    ObfuscationOption,
    ReasoningEffort,
    ResponseFormat,
    ServiceTier,
    StrictBody,
    check_parallel_tool_calls,
    check_tool_choice,
    only_function_tools,
    unsupported,
    validation_error,
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


class ReasoningConfig(StrictBody):
    """``reasoning``: its ``effort`` becomes chat's ``reasoning_effort``. Summaries are
    not served (chat completions return no reasoning to summarise)."""

    effort: ReasoningEffort | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None  # deprecated

    @field_validator("summary", "generate_summary")
    @classmethod
    def _no_summary(cls, v: Any) -> Any:
        if v is not None:
            raise unsupported("reasoning summaries are not supported (only null)")
        return v


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
    reasoning: ReasoningConfig | None = None
    # Passed on to chat under the same names.
    service_tier: ServiceTier | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    # Nothing extra is included: only [] is served.
    include: list[str] | None = None
    # A cap on calls to OpenAI's built-in tools; the gateway serves none, so any cap holds.
    max_tool_calls: int | None = Field(None, ge=0)
    # Logprobs are not carried into output_text: only 0 is served.
    top_logprobs: int | None = Field(None, ge=0, le=20)
    stream_options: ObfuscationOption | None = Field(None, exclude=True)

    @field_validator("include")
    @classmethod
    def _include_nothing(cls, v: Any) -> Any:
        if v:
            raise unsupported(f"include value {v[0]!r} is not supported (only [] is)")
        return v

    @field_validator("top_logprobs")
    @classmethod
    def _no_logprobs(cls, v: Any) -> Any:
        if v:
            raise unsupported("top_logprobs > 0 is not supported (logprobs are not returned)")
        return v

    def chat_parameters(self) -> dict[str, Any]:
        """The chat-completions parameters this request passes on (those given)."""
        given = {
            "reasoning_effort": self.reasoning.effort if self.reasoning else None,
            "service_tier": self.service_tier,
            "safety_identifier": self.safety_identifier,
            "prompt_cache_key": self.prompt_cache_key,
        }
        return {key: value for key, value in given.items() if value is not None}

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


class InputImage(StrictBody):
    """An ``input_image`` content part: becomes a chat ``image_url`` part."""

    type: Literal["input_image"]
    image_url: str | None = Field(None, min_length=1)
    file_id: str | None = None
    detail: Literal["auto", "low", "high", "original"] = "auto"

    @field_validator("file_id")
    @classmethod
    def _no_files(cls, v: Any) -> Any:
        if v is not None:
            raise unsupported("file ids are not supported (the gateway serves no files)")
        return v

    @field_validator("detail")
    @classmethod
    def _chat_detail(cls, v: Any) -> Any:
        if v == "original":
            raise unsupported("detail 'original' is not supported (auto, low, high are)")
        return v

    @model_validator(mode="after")
    def _url_given(self) -> InputImage:
        if self.image_url is None:
            raise ValueError("image_url is required")
        return self

    def chat_part(self) -> dict[str, Any]:
        return {"type": "image_url", "image_url": {"url": self.image_url, "detail": self.detail}}


def has_images(content: Any) -> bool:
    return isinstance(content, list) and any(
        isinstance(part, dict) and part.get("type") == "input_image" for part in content
    )


class InputText(StrictBody):
    type: Literal["input_text"]
    text: str


def user_parts(content: list[Any], where: str) -> list[dict[str, Any]]:
    """A user message's ``input_text`` and ``input_image`` parts (``where`` names the
    content, as ``input.0.content``) as chat content parts."""
    parts = []
    for i, part in enumerate(content):
        at = f"{where}.{i}"
        kind = part.get("type") if isinstance(part, dict) else type(part).__name__
        if kind not in ("input_text", "input_image"):
            raise GatewayError(
                400,
                "unsupported_parameter",
                f"{at}.type: content part type {kind!r} is not supported with images "
                "(input_text and input_image are)",
                param=f"{at}.type",
            )
        try:
            if kind == "input_text":
                parts.append({"type": "text", "text": InputText.model_validate(part).text})
            else:
                parts.append(InputImage.model_validate(part).chat_part())
        except ValidationError as exc:
            raise validation_error(exc, part, prefix=f"{at}.") from exc
    return parts
