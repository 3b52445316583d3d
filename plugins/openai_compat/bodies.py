"""What the request bodies of both surfaces share: strict parsing and the 400 it answers,
the tool checks, and the fields chat completions and Responses both take.

The bodies of each surface: ``chat/bodies.py`` (``/v1/models``, chat completions,
completions) and ``responses/bodies.py`` (``/v1/responses``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError
from quart import request

from host.api import GatewayError, validation_message

Body = TypeVar("Body", bound=BaseModel)


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


class ToolChoiceChecks(StrictBody):
    """A request body with ``tools``, ``tool_choice`` and ``parallel_tool_calls`` (declared
    by the subclass, ``tools`` first), checked alike on both surfaces. ``tool_choice`` is
    ``none``, ``auto``, ``required`` or a function choice; ``required`` and a named
    function need ``tools``, and the name must be one of them. ``parallel_tool_calls``
    means something only with ``tools`` (OpenAI refuses it without)."""

    @staticmethod
    def named_choice(choice: dict[str, Any]) -> str | None:
        """The function a ``tool_choice`` object names (``None`` if malformed): each
        surface spells the object its own way."""
        raise NotImplementedError

    @field_validator("tool_choice", mode="before", check_fields=False)
    @classmethod
    def _tool_choice(cls, choice: Any, info: ValidationInfo) -> Any:
        if choice is None:
            return None
        name = cls.named_choice(choice) if isinstance(choice, dict) else None
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

    @field_validator("parallel_tool_calls", check_fields=False)
    @classmethod
    def _parallel_tool_calls(cls, v: Any, info: ValidationInfo) -> Any:
        if v is not None and "tools" in info.data and not info.data["tools"]:
            raise ValueError("only allowed when tools are given")
        return v


class AnswerBody(BaseModel):
    """An answer's shape, for the OpenAPI document: the fields named, and any other the
    upstream sent (the bodies are OpenAI's, passed through)."""

    model_config = ConfigDict(extra="allow")


class ObfuscationOption(StrictBody):
    # OpenAI pads streamed events against side channels; the gateway adds no padding,
    # so the option is accepted and dropped.
    include_obfuscation: bool | None = Field(None, exclude=True)


# OpenAI's values (the upstream decides which its model supports).
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
ServiceTier = Literal["auto", "default", "flex", "scale", "priority", "fast"]


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


def parse_body(model: type[Body], body: Any) -> Body:
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


async def read_body(model: type[Body]) -> Body:
    """The current request's JSON body, parsed by :func:`parse_body`."""
    body = await request.get_json(silent=True)
    if body is None:
        raise GatewayError(400, "invalid_json", "the request body must be a JSON object")
    return parse_body(model, body)
