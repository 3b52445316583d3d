"""What every ``/v1`` route does around a model call: find the model a request names (a
catalog model, or a pipeline exposed as one) among those the caller may use, admit the
call against the caller's budgets, route it over deployments and fallbacks, measure it,
record its usage, and answer a provider's failure."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from quart import Response, jsonify

from host.api import GatewayContext, GatewayError, context, current_principal
from plugins.openai_compat import access, pipeline_models, usage
from plugins.openai_compat.access import Policy
from plugins.openai_compat.metrics import LLMMetrics, ModelCall
from plugins.openai_compat.model_catalog import ModelCatalog, Resolved, model_not_found
from plugins.openai_compat.model_catalog import open_stream as _open_stream
from plugins.openai_compat.providers.base import ProviderError
from plugins.openai_compat.streaming import provider_error_body

METRICS_KEY = "openai_compat.metrics"
USAGE_KEY = "openai_compat.usage"  # the UsageBuffer of this process
BUDGETS_KEY = "openai_compat.budgets"  # its usage.Budgets
MODEL_HEADER = "X-Gateway-Model"


def catalog() -> ModelCatalog:
    """The catalog this plugin provides as the ``ModelCatalog`` service (one copy, for its
    own routes and for other plugins alike)."""
    services = context().services
    if not services.has(ModelCatalog):
        raise GatewayError(503, "models_unavailable", "the model catalog is not loaded")
    return services.get(ModelCatalog)


def resolve_model(name: str) -> Resolved:
    """A configured model, or a pipeline exposed as one (``pipeline:<id>``), that the
    caller may use; another is 404 ``model_not_found``, as if it did not exist."""
    if not access.policy_of(current_principal()).allows(name):
        raise model_not_found(name)
    if name.startswith(pipeline_models.PREFIX):
        return pipeline_models.resolve(name)
    return catalog().resolve(name)


def model_listing() -> list[dict[str, Any]]:
    created = context().lifecycle.started_ms // 1000
    policy = access.policy_of(current_principal())
    found = catalog().listing(created) + pipeline_models.listing(created)
    return [m for m in found if policy.allows(m["id"])]


def measure(resolved: Resolved, api: str) -> ModelCall:
    """The metrics of a call of ``resolved`` through ``api``, starting now."""
    metrics: LLMMetrics = context().extras[METRICS_KEY]
    return ModelCall(metrics, resolved.name, resolved.provider.name, api)


def provider_failure(exc: ProviderError) -> Response:
    response = jsonify(provider_error_body(exc))
    response.status_code = exc.status
    if exc.retry_after:
        response.headers["Retry-After"] = exc.retry_after
    return response


def json_answer(obj: dict[str, Any]) -> Response:
    """``obj`` as a JSON response, keys in the order the upstream gave them: Quart's
    ``jsonify`` sorts them and goes through the app's JSON provider, ~20 µs more on
    every model call's answer."""
    return Response(json.dumps(obj, separators=(",", ":")), content_type="application/json")


def answered_by(response: Any, resolved: Resolved) -> Any:
    """``response`` with the header naming the model that answered."""
    response.headers[MODEL_HEADER] = resolved.name
    return response


# -- budgets and usage ----------------------------------------------------------------------


def estimate_tokens(chars: int) -> int:
    """Tokens of ``chars`` characters of text, when the upstream reported none (about
    four characters a token for English text, as OpenAI's guidance has it)."""
    return math.ceil(chars / 4)


@dataclass
class Meter:
    """What a streamed answer said, for an estimate of its tokens when the upstream
    gives no usage."""

    chars: int = 0
    usage: dict[str, Any] | None = None

    def feed(self, chunk: dict[str, Any]) -> None:
        found = chunk.get("usage")
        if isinstance(found, dict):
            self.usage = found
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            for key in ("content", "refusal"):
                if isinstance(delta.get(key), str):
                    self.chars += len(delta[key])
            for call in delta.get("tool_calls") or []:
                fn = call.get("function") or {}
                self.chars += len(fn.get("arguments") or "") + len(fn.get("name") or "")
            if isinstance(choice.get("text"), str):
                self.chars += len(choice["text"])


@dataclass
class Ticket:
    """An admitted call: the caller's policy, the model it asked for, the input's size;
    ``finish`` counts what the call used (once)."""

    policy: Policy
    principal: str
    model: str
    buffer: usage.UsageBuffer
    budgets: usage.Budgets
    metrics: LLMMetrics
    body: dict[str, Any]  # what was asked: its size is the estimate of input tokens
    done: bool = field(default=False)

    def input_chars(self) -> int:
        text = self.body.get("messages") if "messages" in self.body else self.body.get("prompt")
        return len(text) if isinstance(text, str) else len(json.dumps(text, default=str))

    def spent(self, result: dict[str, Any] | None, meter: Meter | None, error: bool) -> usage.Spent:
        found = (result or {}).get("usage") if meter is None else meter.usage
        if isinstance(found, dict) and isinstance(found.get("prompt_tokens"), int):
            return usage.Spent(
                int(found.get("prompt_tokens") or 0),
                int(found.get("completion_tokens") or 0),
                error=error,
            )
        if meter is None and (error or result is None):
            return usage.Spent(error=error)
        # A stream that gave no usage (or ended early): estimated from its text.
        out = estimate_tokens(meter.chars) if meter is not None else 0
        return usage.Spent(estimate_tokens(self.input_chars()), out, estimated=True, error=error)

    def finish(
        self,
        model: str,
        result: dict[str, Any] | None = None,
        meter: Meter | None = None,
        error: bool = False,
    ) -> None:
        """The call ended, answered by ``model``: counted in the metrics and the usage
        buffer (written to the store within ``usage_flush_seconds``, and before this
        principal's next budget check)."""
        if self.done:
            return
        self.done = True
        spent = self.spent(result, meter, error)
        self.metrics.count_principal(self.policy.label, model, spent)
        if self.policy.budgets is not None:
            self.budgets.used(self.principal, self.model, spent.input_tokens + spent.output_tokens)
        self.buffer.add(
            self.principal,
            model,
            self.model,
            spent,
            minute_tokens=self.policy.budgets is not None,
        )


async def admit(resolved: Resolved, body: dict[str, Any]) -> Ticket:
    """The call's ticket; 429 ``budget_exceeded`` (before any provider is called) when
    the caller has spent a budget."""
    principal = current_principal()
    return await admit_for(context(), principal.key, resolved.name, body)


async def admit_owner(ctx: GatewayContext, owner: str, model: str, body: dict[str, Any]) -> Ticket:
    """A call made for ``owner`` (a principal's key) outside a request, a pipeline run's
    ``llm`` step: 403 ``model_not_allowed`` when its ``models`` list leaves ``model``
    out, 429 ``budget_exceeded`` when it spent a budget; else the call's ticket."""
    policies: dict[str, Policy] = ctx.extras.get(access.POLICIES_KEY) or {}
    if not policies.get(owner, access.UNRESTRICTED).allows(model):
        raise GatewayError(
            403,
            "model_not_allowed",
            f"{owner!r} may not use the model {model!r} (the models list of its "
            "[auth.tokens.*] or [auth.users.*] table)",
            type="invalid_request_error",
            param="model",
        )
    return await admit_for(ctx, owner, model, body)


async def metered(
    chunks: AsyncIterator[dict[str, Any]], ticket: Ticket, answered: Callable[[], str]
) -> AsyncIterator[dict[str, Any]]:
    """``chunks`` passed on; when they end (or fail, or are left), ``ticket`` counts what
    the stream used, for the model ``answered()`` names."""
    meter = Meter()
    error = True
    try:
        async for chunk in chunks:
            meter.feed(chunk)
            yield chunk
        error = False
    finally:
        ticket.finish(answered(), meter=meter, error=error)


async def admit_for(
    ctx: GatewayContext, principal: str, model: str, body: dict[str, Any]
) -> Ticket:
    """:func:`admit` for the principal whose key is ``principal`` (a pipeline run's
    owner, say), outside a request."""
    policies: dict[str, Policy] = ctx.extras.get(access.POLICIES_KEY) or {}
    policy = policies.get(principal, access.UNRESTRICTED)
    budgets: usage.Budgets = ctx.extras[BUDGETS_KEY]
    if policy.budgets is not None:
        limits = policy.budgets.minute_limits(model)
        await budgets.admit(
            principal,
            model,
            usage.Limits(
                limits.requests_per_minute,
                limits.tokens_per_minute,
                policy.budgets.tokens_per_day,
                policy.budgets.tokens_per_month,
            ),
        )
    metrics = ctx.extras[METRICS_KEY]
    return Ticket(policy, principal, model, budgets.buffer, budgets, metrics, body)


# -- routed calls -----------------------------------------------------------------------------


async def complete(resolved: Resolved, api: str, body: dict[str, Any]) -> tuple[Any, Resolved]:
    """A non-streamed call (``chat`` or ``completions``), routed: the result and the
    model that answered."""

    async def attempt(r: Resolved) -> dict[str, Any]:
        sent = {**body, "model": r.route.upstream_model}
        if api == "completions":
            return await r.provider.completion(r.route, sent)
        return await r.provider.chat(r.route, sent)

    return await catalog().route_call(resolved, attempt)


async def open_stream(
    resolved: Resolved,
    api: str,
    body: dict[str, Any],
    *,
    include_usage: bool,
    wrap: Callable[[AsyncIterator[dict[str, Any]], Resolved], AsyncIterator[dict[str, Any]]]
    | None = None,
) -> tuple[dict[str, Any] | None, AsyncIterator[dict[str, Any]], Resolved, Callable[[], None]]:
    """A routed stream: its first chunk, the rest, the model that answers, and what ends
    its time in flight (call it when the stream ends)."""
    releases: list[Callable[[], None]] = []
    first, chunks, answered = await _open_stream(
        catalog(), resolved, api, body, include_usage, releases.append, wrap
    )

    def release() -> None:
        for fn in releases:
            fn()

    return first, chunks, answered, release
