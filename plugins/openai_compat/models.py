"""Request bodies of the OpenAI-compatible routes (the subset the gateway serves)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from host.api import GatewayError, validation_message


class StrictBody(BaseModel):
    """A request body (or a part of one): unknown keys are refused, and numbers and
    booleans are never coerced (``true`` is not 1.0, ``5.0`` is not 5)."""

    model_config = ConfigDict(extra="forbid", strict=True)


def unsupported(message: str) -> PydanticCustomError:
    """A validation error that :func:`parse_body` answers as ``unsupported_parameter``."""
    return PydanticCustomError("unsupported_parameter", message)


def only_function_tools(tool: Any) -> Any:
    """Before a tool is validated: a tool of another type (``web_search``, ``custom``...)
    is a parameter the gateway does not serve, not a malformed one."""
    kind = tool.get("type") if isinstance(tool, dict) else None
    if isinstance(kind, str) and kind != "function":
        raise unsupported(f"only function tools are supported, got type {kind!r}")
    return tool


def check_tool_choice(
    choice: Any, info: ValidationInfo, named: Callable[[dict[str, Any]], str | None]
) -> Any:
    """``tool_choice``: ``none``, ``auto``, ``required`` or a function choice (whose name
    ``named`` reads, ``None`` if malformed); ``required`` and a named function need
    ``tools``, and the name must be one of them."""
    if choice is None:
        return None
    name = named(choice) if isinstance(choice, dict) else None
    if choice not in ("none", "auto", "required") and name is None:
        raise ValueError(
            f"must be 'none', 'auto', 'required' or a function choice (got {choice!r})"
        )
    if "tools" not in info.data:  # the tools are invalid; that error is reported
        return choice
    names = [tool.name for tool in info.data["tools"] or []]
    if (choice == "required" or name is not None) and not names:
        raise ValueError(f"{choice!r} needs tools")
    if name is not None and name not in names:
        raise ValueError(f"names function {name!r}, which is not among the tools")
    return choice


class ContentPart(BaseModel):
    """One part of a message's content (``text``, ``image_url``, ``input_audio``...):
    passed on as given."""

    model_config = ConfigDict(extra="allow", strict=True)

    type: str = Field(..., min_length=1)


def text_or_parts(part: type[BaseModel]) -> Callable[[Any], Any]:
    """A before-validator for a ``str | list[part]`` field: a list is validated here, so
    an error names ``<field>.<i>.<key>``, not the union member (``<field>.str``)."""
    parts = TypeAdapter(list[part])  # type: ignore[valid-type]

    def check(v: Any) -> Any:
        if v is None or isinstance(v, str):
            return v
        if not isinstance(v, list):
            raise ValueError("must be a string or a list of content parts")
        return parts.validate_python(v)

    return check


class ToolCallFunction(StrictBody):
    name: str = Field(..., min_length=1)
    arguments: str
    # The SDK's parse/stream helpers add the arguments parsed: not sent on.
    parsed_arguments: Any = Field(None, exclude=True)


class ToolCall(StrictBody):
    """An assistant message's tool call, as the model made it."""

    id: str = Field(..., min_length=1)
    type: Literal["function"]
    function: ToolCallFunction
    index: int | None = Field(None, exclude=True)  # a streamed delta's; not sent on


class ChatMessage(StrictBody):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = Field(None, validate_default=True)
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = Field(None, validate_default=True)
    # Assistant turns as the SDKs give them back.
    refusal: str | None = None
    audio: dict[str, Any] | None = None
    function_call: dict[str, Any] | None = None
    # Output only (``parsed``: the SDK's parse helpers): accepted, not sent on.
    annotations: list[Any] | None = Field(None, exclude=True)
    parsed: Any = Field(None, exclude=True)

    _content_parts = field_validator("content", mode="before")(text_or_parts(ContentPart))

    @field_validator("content")
    @classmethod
    def _content_unless_assistant(cls, v: Any, info: ValidationInfo) -> Any:
        if v is None and info.data.get("role") not in (None, "assistant"):
            raise ValueError(f"required for role {info.data['role']!r}")
        return v

    @field_validator("tool_calls")
    @classmethod
    def _calls_are_the_assistants(cls, v: Any, info: ValidationInfo) -> Any:
        if v is not None and info.data.get("role") not in (None, "assistant"):
            raise ValueError("only assistant messages carry tool_calls")
        return v

    @field_validator("tool_call_id")
    @classmethod
    def _tool_results_name_their_call(cls, v: Any, info: ValidationInfo) -> Any:
        role = info.data.get("role")
        if role == "tool" and not v:
            raise ValueError("required for role 'tool' (the id of the call it answers)")
        if role not in (None, "tool") and v is not None:
            raise ValueError("only tool messages carry tool_call_id")
        return v


class FunctionDefinition(StrictBody):
    name: str = Field(..., min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON Schema object
    strict: bool | None = None


class ChatTool(StrictBody):
    type: Literal["function"]
    function: FunctionDefinition

    @property
    def name(self) -> str:
        return self.function.name


FunctionTool = Annotated[ChatTool, BeforeValidator(only_function_tools)]


def _chat_named_choice(choice: dict[str, Any]) -> str | None:
    fn = choice.get("function")
    if set(choice) != {"type", "function"} or choice["type"] != "function":
        return None
    if not isinstance(fn, dict) or set(fn) != {"name"} or not isinstance(fn["name"], str):
        return None
    return fn["name"] or None


FORMAT_NAME = r"^[a-zA-Z0-9_-]{1,64}$"  # a json_schema format's name, as OpenAI allows


class JsonSchemaFormat(StrictBody):
    """The schema a ``json_schema`` output format follows (chat's ``response_format.
    json_schema``; the same fields sit flat in Responses' ``text.format``)."""

    name: str = Field(..., pattern=FORMAT_NAME)
    description: str | None = None
    json_schema: dict[str, Any] | None = Field(None, alias="schema")  # a JSON Schema object
    strict: bool | None = None


class ResponseFormat(StrictBody):
    """Chat's ``response_format``: plain text, any JSON object, or JSON following
    ``json_schema``."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = Field(None, validate_default=True)

    @field_validator("json_schema")
    @classmethod
    def _only_for_json_schema(cls, v: Any, info: ValidationInfo) -> Any:
        kind = info.data.get("type")
        if kind == "json_schema" and v is None:
            raise ValueError("required when type is 'json_schema'")
        if kind not in (None, "json_schema") and v is not None:
            raise ValueError("only a 'json_schema' format has one")
        return v


def check_parallel_tool_calls(v: Any, info: ValidationInfo) -> Any:
    """``parallel_tool_calls`` means something only with ``tools`` (OpenAI refuses it
    without)."""
    if v is not None and "tools" in info.data and not info.data["tools"]:
        raise ValueError("only allowed when tools are given")
    return v


class ObfuscationOption(StrictBody):
    # OpenAI pads streamed events against side channels; the gateway adds no padding,
    # so the option is accepted and dropped.
    include_obfuscation: bool | None = Field(None, exclude=True)


class StreamOptions(ObfuscationOption):
    include_usage: bool = False


# OpenAI's values (the upstream decides which its model supports).
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
ServiceTier = Literal["auto", "default", "flex", "scale", "priority", "fast"]


def _token_ids(v: dict[str, int]) -> dict[str, int]:
    for key in v:
        if not key.isdigit():
            raise ValueError(f"keys are token ids (digits), got {key!r}")
    return v


LogitBias = Annotated[dict[str, Annotated[int, Field(ge=-100, le=100)]], AfterValidator(_token_ids)]


class PredictionText(StrictBody):
    type: Literal["text"]
    text: str


class Prediction(StrictBody):
    """``prediction``: predicted output content (passed on as given)."""

    type: Literal["content"]
    content: str | list[PredictionText]

    _content_parts = field_validator("content", mode="before")(text_or_parts(PredictionText))


def _text_only(v: list[str] | None) -> list[str] | None:
    if v is not None and any(m != "text" for m in v):
        raise unsupported("only text output is supported (modalities: ['text'])")
    return v


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


class ChatCompletionRequest(StrictBody):
    model: str = Field(..., min_length=1)
    messages: list[ChatMessage] = Field(..., min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
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
    response_format: ResponseFormat | None = None
    metadata: Metadata | None = None
    # Passed on to the upstream as given.
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    logit_bias: LogitBias | None = None
    reasoning_effort: ReasoningEffort | None = None
    service_tier: ServiceTier | None = None
    store: bool | None = None
    prediction: Prediction | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    # Text is the only output modality served; ``["text"]`` (the default) is dropped.
    modalities: Annotated[list[Literal["text", "audio"]], AfterValidator(_text_only)] | None = (
        Field(None, exclude=True)
    )

    @field_validator("top_logprobs")
    @classmethod
    def _needs_logprobs(cls, v: Any, info: ValidationInfo) -> Any:
        if v is not None and "logprobs" in info.data and info.data["logprobs"] is not True:
            raise ValueError("needs logprobs: true")
        return v

    @field_validator("stop")
    @classmethod
    def _at_most_four_stops(cls, v: Any) -> Any:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        return v

    @field_validator("tool_choice", mode="before")
    @classmethod
    def _tool_choice(cls, v: Any, info: ValidationInfo) -> Any:
        return check_tool_choice(v, info, _chat_named_choice)

    @field_validator("parallel_tool_calls")
    @classmethod
    def _parallel_tool_calls(cls, v: Any, info: ValidationInfo) -> Any:
        return check_parallel_tool_calls(v, info)

    @model_validator(mode="after")
    def _tool_results_answer_calls(self) -> ChatCompletionRequest:
        calls: set[str] = set()
        for i, message in enumerate(self.messages):
            calls.update(call.id for call in message.tool_calls or [])
            if message.role == "tool" and message.tool_call_id not in calls:
                raise GatewayError(
                    400,
                    "invalid_request_body",
                    f"messages.{i}.tool_call_id: {message.tool_call_id!r} answers no tool "
                    "call of an earlier assistant message",
                    param=f"messages.{i}.tool_call_id",
                )
        return self


class CompletionRequest(StrictBody):
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


def validation_error(exc: ValidationError, given: Any, prefix: str = "") -> GatewayError:
    """The 400 for a validation error of ``given``, naming its first field (after
    ``prefix``) as the client sent it: ``unsupported_parameter`` for an unknown key or a
    value not served."""
    message, field = validation_message(exc, prefix=prefix, given=given)
    kind = exc.errors()[0]["type"] if exc.errors() else ""
    code = (
        "unsupported_parameter"
        if kind in ("extra_forbidden", "unsupported_parameter")
        else "invalid_request_body"
    )
    return GatewayError(400, code, message, param=field)


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
        raise validation_error(exc, body) from exc
    if getattr(parsed, "n", 1) != 1:
        raise GatewayError(400, "unsupported_parameter", "n: only n = 1 is supported", param="n")
    return parsed
