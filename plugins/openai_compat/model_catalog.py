"""The model catalog: gateway model names (``[models.<name>]``) -> provider + route.

Clients see gateway model names; each maps to a registered provider and, for upstream
providers, a ``base_url`` and ``upstream_model``. With no ``[models]`` section the
catalog offers the offline ``echo`` model so a fresh gateway works at once. Other
plugins (the pipelines ``llm`` step) reach models through the catalog too.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from host.api import GatewayContext, GatewayError, Registry, Secret
from plugins.openai_compat.plugin_settings import bounded
from plugins.openai_compat.providers.base import DEFAULT_MAX_SSE_LINE_BYTES, ModelRoute, Provider
from plugins.openai_compat.routing import Deployment, Observer, Plan, Router

_MAX_SSE_LINE = 64 * 1024 * 1024  # as large as a whole non-streamed answer may be
SSE_LINE_SETTING = bounded(
    "max_sse_line_bytes",
    DEFAULT_MAX_SSE_LINE_BYTES,
    65536,
    _MAX_SSE_LINE,
    "a whole number of bytes",
    int,
)


def _check_url(v: str | None) -> str | None:
    if v is None:
        return v
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{v!r} is not an http:// or https:// URL")
    return v


class DeploymentSettings(BaseModel):
    """One ``[[models.<name>.deployments]]`` entry; what it leaves out, the model gives."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=100, description="its label in status/metrics")
    base_url: str | None = None
    api_key: Secret | None = None
    upstream_model: str | None = None
    weight: float = Field(1.0, gt=0, le=1000)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        return _check_url(v)


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
    deployments: list[DeploymentSettings] = Field(default_factory=list, max_length=64)
    fallbacks: list[str] = Field(default_factory=list, max_length=16)
    cooldown_seconds: float = Field(30.0, ge=0, le=3600)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        return _check_url(v)


DEFAULT_MODELS: dict[str, dict[str, Any]] = {
    "echo": {"provider": "echo", "description": "offline echo model (not a language model)"}
}


@dataclass(frozen=True)
class Resolved:
    """A model a request names: its provider and (first) route; a catalog model may
    answer from another deployment or a fallback (:meth:`ModelCatalog.route_call`)."""

    name: str
    provider: Provider
    route: ModelRoute
    routed: bool = False  # a catalog model, routed over deployments and fallbacks


@dataclass(frozen=True)
class ModelEntry:
    """A parsed ``[models.<name>]``: its deployments' routes (with weights and labels),
    how long a failed one rests, and the models it falls back to."""

    route: ModelRoute  # the first deployment's: description, listing
    deployments: tuple[tuple[ModelRoute, float, str], ...]
    cooldown_seconds: float = 30.0
    fallbacks: tuple[str, ...] = ()


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
    def __init__(
        self,
        providers: Registry,
        models: dict[str, ModelRoute],
        entries: dict[str, ModelEntry] | None = None,
        observe: Observer | None = None,
    ) -> None:
        self.providers = providers
        self.models = models
        entries = entries or {n: ModelEntry(r, ((r, 1.0, "0"),)) for n, r in models.items()}
        self.entries = entries
        self.router = Router(
            {
                name: Plan(
                    name,
                    providers[e.route.provider],
                    [Deployment(route, weight, label) for route, weight, label in e.deployments],
                    e.cooldown_seconds,
                    e.fallbacks,
                    random.Random(),
                )
                for name, e in entries.items()
            },
            observe,
        )

    @classmethod
    def from_config(
        cls,
        providers: Registry,
        raw: Any,
        *,
        max_sse_line_bytes: int = DEFAULT_MAX_SSE_LINE_BYTES,
        observe: Observer | None = None,
    ) -> ModelCatalog:
        """Build from the ``models`` config section; raises GatewayError naming the key."""
        entries, problems = parse_models(providers, raw, max_sse_line_bytes=max_sse_line_bytes)
        if problems:
            raise GatewayError(400, "config_invalid", "; ".join(problems))
        return cls(providers, {n: e.route for n, e in entries.items()}, entries, observe)

    def routes(self) -> list[ModelRoute]:
        """Every deployment's route (the upstreams in use)."""
        return [route for e in self.entries.values() for route, _, _ in e.deployments]

    def resolve(self, name: str) -> Resolved:
        route = self.models.get(name)
        if route is None:
            raise model_not_found(name)
        return Resolved(name, self.providers[route.provider], route, routed=True)

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

    async def route_call(
        self,
        resolved: Resolved,
        attempt: Callable[[Resolved], Any],
        release: Callable[[Callable[[], None]], None] | None = None,
    ) -> tuple[Any, Resolved]:
        """``await attempt(r)`` for the deployment ``r`` the router picks, then the next
        while one fails before answering (routing.py), then the fallbacks; returns the
        result and the :class:`Resolved` that answered. A model that is not the
        catalog's (a pipeline) is called once."""
        if not resolved.routed or resolved.name not in self.router.plans:
            result = await attempt(resolved)
            if release is not None:
                release(lambda: None)
            return result, resolved

        answered: list[Resolved] = []

        async def one(model: str, route: ModelRoute, provider: Provider) -> Any:
            r = Resolved(model, provider, route, routed=True)
            result = await attempt(r)
            answered.append(r)
            return result

        result, _ = await self.router.run(resolved.name, one, release)
        return result, answered[-1]

    # -- what other plugins call ------------------------------------------------------------

    async def chat(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        async def attempt(r: Resolved) -> dict[str, Any]:
            return await r.provider.chat(r.route, {**body, "model": r.route.upstream_model})

        result, answered = await self.route_call(self.resolve(model), attempt)
        out: dict[str, Any] = result
        out["model"] = answered.name
        return out

    def chat_stream(
        self, model: str, body: dict[str, Any], *, include_usage: bool = False
    ) -> AsyncIterator[dict[str, Any]]:
        """``include_usage``: ask the stream for a last chunk with ``usage`` (and empty
        ``choices``), unless the model's upstream refuses it (``stream_usage = false``).
        Routed like every call: another deployment or a fallback is tried while none
        has sent its first chunk."""
        resolved = self.resolve(model)
        return self._routed_stream(resolved, body, include_usage)

    async def _routed_stream(
        self,
        resolved: Resolved,
        body: dict[str, Any],
        include_usage: bool,
        answered: list[str] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        releases: list[Callable[[], None]] = []
        first, chunks, by = await open_stream(
            self, resolved, "chat", body, include_usage, releases.append
        )
        if answered is not None:
            answered.append(by.name)
        try:
            if first is not None:
                yield first
            async for chunk in chunks:
                yield chunk
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
            for release in releases:
                release()

    async def scanned_chat_stream(
        self,
        model: str,
        body: dict[str, Any],
        *,
        principal: str,
        gateway: GatewayContext,
        surface: str = "pipeline",
        include_usage: bool = False,
        owner: str | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """:meth:`chat_stream` behind the safety scanners, as the chat route is: the
        messages are scanned first (stage ``inbound``; redacted in place; a block is
        GatewayError 400 ``content_blocked``), the stream as it grows (``model_output``; a
        block is ProviderError 400 ``content_blocked`` mid-stream).

        ``owner``: the key of the principal the call is made for (a pipeline run's
        owner, ``host.api.owner_key``). Its ``models`` list and budgets apply as on the
        ``/v1`` routes, before any provider is called (GatewayError 403
        ``model_not_allowed``, 429 ``budget_exceeded``), and the call's tokens count in
        its usage (``GET /gateway/usage``, metrics) when the stream ends."""
        from plugins.openai_compat import model_calls
        from plugins.openai_compat.safety import OutputScanner, scan_messages

        resolved = self.resolve(model)
        ticket = None
        if owner is not None:
            ticket = await model_calls.admit_owner(gateway, owner, model, body)
        await scan_messages(body["messages"], surface, model, principal, gateway)
        scanner = OutputScanner(surface, model, principal, gateway)
        answered: list[str] = []
        chunks = scanner.stream(self._routed_stream(resolved, body, include_usage, answered))
        if ticket is None:
            return chunks
        return model_calls.metered(chunks, ticket, lambda: answered[-1] if answered else model)


async def open_stream(
    catalog: ModelCatalog,
    resolved: Resolved,
    api: str,
    body: dict[str, Any],
    include_usage: bool,
    release: Callable[[Callable[[], None]], None] | None = None,
    wrap: Callable[[AsyncIterator[dict[str, Any]], Resolved], AsyncIterator[dict[str, Any]]]
    | None = None,
) -> tuple[dict[str, Any] | None, AsyncIterator[dict[str, Any]], Resolved]:
    """Open a routed stream: ``(first chunk, the rest, who answers)``. A deployment that
    fails before its first chunk is passed over (routing.py). ``api``: ``chat`` or
    ``completions``; ``wrap`` (a safety scan) wraps each attempt's chunks."""

    async def attempt(r: Resolved) -> tuple[dict[str, Any] | None, AsyncIterator[Any]]:
        sent = {**body, "model": r.route.upstream_model}
        if include_usage:
            sent = with_stream_usage(r.route, sent)
        if api == "chat":
            chunks = r.provider.chat_stream(r.route, sent)
        else:
            chunks = r.provider.completion_stream(r.route, sent)
        if wrap is not None:
            chunks = wrap(chunks, r)
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            return None, chunks
        except BaseException:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
            raise
        return first, chunks

    (first, chunks), answered = await catalog.route_call(resolved, attempt, release)
    return first, chunks, answered


def with_stream_usage(route: ModelRoute, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` asking its stream for usage (``stream_options.include_usage``), unless the
    model says its upstream refuses ``stream_options`` (``stream_usage = false``)."""
    if not route.stream_usage:
        return body
    return {**body, "stream_options": {"include_usage": True}}


def parse_models(
    providers: Registry, raw: Any, *, max_sse_line_bytes: int = DEFAULT_MAX_SSE_LINE_BYTES
) -> tuple[dict[str, ModelEntry], list[str]]:
    """The models of the ``models`` section, and every problem found in it, each naming
    the model and the key (``models.gpt.base_url: ...``). ``max_sse_line_bytes`` (the
    plugin's setting) goes with every route."""
    section = raw if raw else DEFAULT_MODELS
    if not isinstance(section, dict):
        return {}, ["models must be a table of [models.<name>]"]
    models: dict[str, ModelEntry] = {}
    problems: list[str] = []
    fallbacks: dict[str, list[str]] = {}
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
        provider = providers[cfg.provider]
        base = ModelRoute(
            name=name,
            provider=cfg.provider,
            upstream_model=cfg.upstream_model or name,
            base_url=cfg.base_url,
            api_key=cfg.api_key,
            connect_timeout_seconds=cfg.connect_timeout_seconds,
            read_timeout_seconds=cfg.read_timeout_seconds,
            max_retries=cfg.max_retries,
            description=cfg.description or provider.description,
            stream_usage=cfg.stream_usage,
            max_sse_line_bytes=max_sse_line_bytes,
        )
        deployments: list[tuple[ModelRoute, float, str]] = []
        for i, dep in enumerate(cfg.deployments or [DeploymentSettings()]):
            route = replace(
                base,
                base_url=dep.base_url or base.base_url,
                api_key=dep.api_key if dep.api_key is not None else base.api_key,
                upstream_model=dep.upstream_model or base.upstream_model,
            )
            deployments.append((route, dep.weight, dep.name or str(i)))
        key = "deployments.base_url" if cfg.deployments else "base_url"
        if provider.needs_base_url and any(not r.base_url for r, _, _ in deployments):
            problems.append(
                f"models.{name}.{key}: required for provider {cfg.provider!r} "
                "(the upstream's API root, e.g. http://127.0.0.1:8000/v1)"
            )
            continue
        labels = [label for _, _, label in deployments]
        if len(set(labels)) != len(labels):
            problems.append(f"models.{name}.deployments.name: names must differ")
            continue
        fallbacks[name] = cfg.fallbacks
        models[name] = ModelEntry(
            deployments[0][0], tuple(deployments), cfg.cooldown_seconds, tuple(cfg.fallbacks)
        )
    for name, names in fallbacks.items():
        for other in names:
            if other == name or other not in section:
                why = "a model cannot fall back to itself" if other == name else "no such model"
                problems.append(f"models.{name}.fallbacks: {other!r}: {why}")
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
