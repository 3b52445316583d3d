"""The model catalog: gateway model names (``[models.<name>]``) -> provider + route.

Clients see gateway model names; each maps to a registered provider and, for upstream
providers, a ``base_url`` and ``upstream_model``. With no ``[models]`` section the
catalog offers the offline ``echo`` model so a fresh gateway works at once. Other
plugins (the pipelines ``llm`` step) reach models through the catalog too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from host.api import GatewayContext, GatewayError, Registry, Secret
from plugins.openai_compat.plugin_settings import bounded
from plugins.openai_compat.providers.base import DEFAULT_MAX_SSE_LINE_BYTES, ModelRoute, Provider

_MAX_SSE_LINE = 64 * 1024 * 1024  # as large as a whole non-streamed answer may be
SSE_LINE_SETTING = bounded(
    "max_sse_line_bytes",
    DEFAULT_MAX_SSE_LINE_BYTES,
    65536,
    _MAX_SSE_LINE,
    "a whole number of bytes",
    int,
)


class ModelSettings(BaseModel):
    """One ``[models.<name>]`` table."""

    model_config = ConfigDict(extra="forbid")

    provider: str
    upstream_model: str | None = Field(None, description="model name the upstream knows")
    base_url: str | None = None
    api_key: Secret | None = None
    connect_timeout_seconds: float = Field(5.0, ge=0.1, le=300)
    read_timeout_seconds: float = Field(120.0, ge=0.1, le=3600)
    max_retries: int = Field(2, ge=0, le=10)
    stream_usage: bool = Field(True, description="ask streams for usage (stream_options)")
    description: str = ""

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{v!r} is not an http:// or https:// URL")
        return v


DEFAULT_MODELS: dict[str, dict[str, Any]] = {
    "echo": {"provider": "echo", "description": "offline echo model (not a language model)"}
}


@dataclass(frozen=True)
class Resolved:
    name: str
    provider: Provider
    route: ModelRoute


def model_not_found(name: str, hint: str = "") -> GatewayError:
    """404 ``model_not_found`` in OpenAI's shape (``param: model``)."""
    return GatewayError(
        404,
        "model_not_found",
        f"the model {name!r} does not exist; GET /v1/models lists the models{hint}",
        type="invalid_request_error",
        param="model",
    )


class ModelCatalog:
    def __init__(self, providers: Registry, models: dict[str, ModelRoute]) -> None:
        self.providers = providers
        self.models = models

    @classmethod
    def from_config(
        cls, providers: Registry, raw: Any, *, max_sse_line_bytes: int = DEFAULT_MAX_SSE_LINE_BYTES
    ) -> ModelCatalog:
        """Build from the ``models`` config section; raises GatewayError naming the key."""
        models, problems = parse_models(providers, raw, max_sse_line_bytes=max_sse_line_bytes)
        if problems:
            raise GatewayError(400, "config_invalid", "; ".join(problems))
        return cls(providers, models)

    def resolve(self, name: str) -> Resolved:
        route = self.models.get(name)
        if route is None:
            raise model_not_found(name)
        return Resolved(name, self.providers[route.provider], route)

    def listing(self, created: int) -> list[dict[str, Any]]:
        return [
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": f"agent-gateway:{route.provider}",
                "description": route.description,
            }
            for name, route in sorted(self.models.items())
        ]

    # -- what other plugins call ------------------------------------------------------------

    async def chat(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        r = self.resolve(model)
        return await r.provider.chat(r.route, {**body, "model": r.route.upstream_model})

    def chat_stream(
        self, model: str, body: dict[str, Any], *, include_usage: bool = False
    ) -> AsyncIterator[dict[str, Any]]:
        """``include_usage``: ask the stream for a last chunk with ``usage`` (and empty
        ``choices``), unless the model's upstream refuses it (``stream_usage = false``)."""
        r = self.resolve(model)
        body = {**body, "model": r.route.upstream_model}
        if include_usage:
            body = with_stream_usage(r.route, body)
        return r.provider.chat_stream(r.route, body)

    async def scanned_chat_stream(
        self,
        model: str,
        body: dict[str, Any],
        *,
        principal: str,
        gateway: GatewayContext,
        surface: str = "pipeline",
        include_usage: bool = False,
    ) -> AsyncIterator[dict[str, Any]]:
        """:meth:`chat_stream` behind the safety scanners, as the chat route is: the
        messages are scanned first (stage ``inbound``; redacted in place; a block is
        GatewayError 400 ``content_blocked``), the stream as it grows (``model_output``; a
        block is ProviderError 400 ``content_blocked`` mid-stream)."""
        from plugins.openai_compat.safety import OutputScanner, scan_messages

        await scan_messages(body["messages"], surface, model, principal, gateway)
        scanner = OutputScanner(surface, model, principal, gateway)
        return scanner.stream(self.chat_stream(model, body, include_usage=include_usage))


def with_stream_usage(route: ModelRoute, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` asking its stream for usage (``stream_options.include_usage``), unless the
    model says its upstream refuses ``stream_options`` (``stream_usage = false``)."""
    if not route.stream_usage:
        return body
    return {**body, "stream_options": {"include_usage": True}}


def parse_models(
    providers: Registry, raw: Any, *, max_sse_line_bytes: int = DEFAULT_MAX_SSE_LINE_BYTES
) -> tuple[dict[str, ModelRoute], list[str]]:
    """The routes of the ``models`` section, and every problem found in it, each naming
    the model and the key (``models.gpt.base_url: ...``). ``max_sse_line_bytes`` (the
    plugin's setting) goes with every route."""
    section = raw if raw else DEFAULT_MODELS
    if not isinstance(section, dict):
        return {}, ["models must be a table of [models.<name>]"]
    models: dict[str, ModelRoute] = {}
    problems: list[str] = []
    for name, table in section.items():
        try:
            cfg = ModelSettings.model_validate(table)
        except ValidationError as exc:
            problems.extend(_field_problems(exc, f"models.{name}."))
            continue
        if cfg.provider not in providers:
            known = ", ".join(sorted(providers)) or "none"
            problems.append(
                f"models.{name}.provider: unknown provider {cfg.provider!r} (known: {known})"
            )
            continue
        if providers[cfg.provider].needs_base_url and not cfg.base_url:
            problems.append(
                f"models.{name}.base_url: required for provider {cfg.provider!r} "
                "(the upstream's API root, e.g. http://127.0.0.1:8000/v1)"
            )
            continue
        models[name] = ModelRoute(
            name=name,
            provider=cfg.provider,
            upstream_model=cfg.upstream_model or name,
            base_url=cfg.base_url,
            api_key=cfg.api_key,
            connect_timeout_seconds=cfg.connect_timeout_seconds,
            read_timeout_seconds=cfg.read_timeout_seconds,
            max_retries=cfg.max_retries,
            description=cfg.description or providers[cfg.provider].description,
            stream_usage=cfg.stream_usage,
            max_sse_line_bytes=max_sse_line_bytes,
        )
    return models, problems


def _field_problems(exc: ValidationError, prefix: str) -> list[str]:
    out = []
    for error in exc.errors():
        loc = ".".join(str(p) for p in error.get("loc", ()))
        out.append(
            f"{prefix}{loc}: {error.get('msg', 'invalid value')}"
            if loc
            else f"{prefix.rstrip('.')}: {error.get('msg', 'invalid value')}"
        )
    return out
