"""What every ``/v1`` route does around a model call: find the model a request names (a
catalog model, or a pipeline exposed as one), measure the call, and answer a provider's
failure."""

from __future__ import annotations

from typing import Any

from quart import Response, jsonify

from host.api import GatewayError, context
from plugins.openai_compat import pipeline_models
from plugins.openai_compat.metrics import LLMMetrics, ModelCall
from plugins.openai_compat.model_catalog import ModelCatalog, Resolved
from plugins.openai_compat.providers.base import ProviderError
from plugins.openai_compat.streaming import provider_error_body

METRICS_KEY = "openai_compat.metrics"


def catalog() -> ModelCatalog:
    """The catalog this plugin provides as the ``ModelCatalog`` service (one copy, for its
    own routes and for other plugins alike)."""
    services = context().services
    if not services.has(ModelCatalog):
        raise GatewayError(503, "models_unavailable", "the model catalog is not loaded")
    return services.get(ModelCatalog)


def resolve_model(name: str) -> Resolved:
    """A configured model, or a pipeline exposed as one (``pipeline:<id>``)."""
    if name.startswith(pipeline_models.PREFIX):
        return pipeline_models.resolve(name)
    return catalog().resolve(name)


def model_listing() -> list[dict[str, Any]]:
    created = context().lifecycle.started_ms // 1000
    return catalog().listing(created) + pipeline_models.listing(created)


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
