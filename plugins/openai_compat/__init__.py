"""Built-in OpenAI-compatible plugin: /v1/models, chat completions, completions and the
Responses API over registered model providers (``openai`` upstreams by base_url, and the
offline ``echo``). This module holds the hook implementations; beside it:

- ``chat/``: ``/v1/models``, ``/v1/chat/completions`` and ``/v1/completions``, their
  routes and bodies.
- ``responses/``: ``/v1/responses``, its routes and bodies, the translation to and from
  chat completions, the typed stream events, stored responses, the error types.
- ``bodies.py``: what the request bodies of both surfaces share (strict parsing, the 400
  it answers, the tool checks).
- ``model_catalog.py``: the models clients name (``[models.<name>]``), each a provider
  and a route; ``pipeline_models.py`` and ``pipeline_events.py``: pipelines exposed as
  the models ``pipeline:<id>``.
- ``model_calls.py``: around every model call: the model a request names, the call's
  metrics (``metrics.py``), the answer to a provider's failure.
- ``providers/``: the provider interface (``base.py``), ``openai`` upstreams and ``echo``.
- ``streaming.py`` and ``keepalive.py``: server-sent events; ``safety.py`` and
  ``safety_stream.py``: scanning input and output; ``conversations.py``: records for
  ``gateway_record_conversation``; ``retry_hint.py``: ``x-should-retry`` on errors;
  ``plugin_settings.py``: the keys of ``[plugins.openai_compat]``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from quart import Quart

from host.api import GatewayError, Register, Settings, Store, context, hookimpl, provide
from plugins.openai_compat import (
    access,
    hookspecs,
    keepalive,
    pipeline_models,
    safety_stream,
    usage,
    usage_routes,
)
from plugins.openai_compat.chat import routes as chat_routes
from plugins.openai_compat.metrics import LLMMetrics
from plugins.openai_compat.model_calls import BUDGETS_KEY, METRICS_KEY, USAGE_KEY
from plugins.openai_compat.model_catalog import (
    SSE_LINE_SETTING,
    ModelCatalog,
    parse_models,
)
from plugins.openai_compat.providers.echo import EchoProvider
from plugins.openai_compat.providers.upstream import OpenAIUpstream
from plugins.openai_compat.responses import routes as responses_routes
from plugins.openai_compat.responses import store as responses_store
from plugins.openai_compat.usage_api import UsageAPI

# The section's scalar keys (plugin_settings.py).
SETTINGS = (
    keepalive.SETTING,
    safety_stream.SETTING,
    SSE_LINE_SETTING,
    responses_store.CHAIN_TURNS_SETTING,
    responses_store.CHAIN_BYTES_SETTING,
    usage.FLUSH_SETTING,
)
_FLUSHER = "openai_compat.usage_flusher"


@hookimpl
def gateway_register_hookspecs(register: Register) -> None:
    # Providers, and the conversation recorder: plugins/openai_compat/hookspecs.py
    register(hookspecs)


@hookimpl
def gateway_register_blueprints(register: Register, settings: Settings) -> None:
    register(chat_routes.bp)
    register(responses_routes.bp)
    register(usage_routes.bp)


@hookimpl
def gateway_register_policy_gates(register: Register) -> None:
    register(responses_store.GATE_READ_ALL, "read every principal's stored responses")
    register(responses_store.GATE_ACT_ALL, "delete other principals' stored responses")
    register(usage_routes.GATE_READ_ALL, "read every principal's model usage")


@hookimpl
def gateway_register_migrations(register: Register) -> None:
    for migration in responses_store.MIGRATIONS + usage.MIGRATIONS:
        register(migration)


@hookimpl
def gateway_register_providers(register: Register) -> None:
    register("echo", EchoProvider())
    register("openai", OpenAIUpstream())


@hookimpl
def gateway_register_secret_keys(register: Register) -> None:
    register("models.*.api_key", "the upstream's API key of a model")


def _build_catalog(app: Quart, settings: Settings) -> ModelCatalog:
    ctx = context(app)
    metrics: LLMMetrics = ctx.extras[METRICS_KEY]
    with settings.resolving_paths():
        catalog = ModelCatalog.from_config(
            ctx.registry("providers"),
            settings.extra_section("models"),
            max_sse_line_bytes=SSE_LINE_SETTING.configured(settings),
            observe=metrics.deployment,
        )
    for name, plan in catalog.router.plans.items():
        for deployment in plan.deployments:
            metrics.deployment(name, deployment, "ok")
    return catalog


def _policies(settings: Settings) -> dict[str, access.Policy]:
    found = access.problems(settings)
    if found:
        raise GatewayError(400, "config_invalid", "; ".join(found))
    return access.policies(settings)


@hookimpl
def gateway_startup(app: Quart) -> None:
    ctx = context(app)
    ctx.extras[METRICS_KEY] = LLMMetrics(ctx.metrics.registry)
    buffer = ctx.extras[USAGE_KEY] = usage.UsageBuffer()
    every = usage.FLUSH_SETTING.configured(ctx.settings)
    ctx.extras[BUDGETS_KEY] = usage.Budgets(ctx.store, buffer, every)
    ctx.extras[_FLUSHER] = asyncio.get_running_loop().create_task(buffer.run(ctx.store, every))
    # Its routes and other plugins (the pipelines llm step) find it as this service.
    provide(ModelCatalog, _build_catalog(app, ctx.settings), app=app)
    provide(UsageAPI, usage_routes.UsageService(ctx), app=app)
    ctx.extras[access.POLICIES_KEY] = _policies(ctx.settings)
    ctx.extras[pipeline_models.EXPOSED_KEY] = pipeline_models.configured(ctx.settings)
    for setting in SETTINGS:
        ctx.extras[setting.extra_key] = setting.configured(ctx.settings)


@hookimpl
def gateway_validate_config(app: Quart, settings: Settings) -> list[str]:
    with settings.resolving_paths():
        _, problems = parse_models(
            context(app).registry("providers"), settings.extra_section("models")
        )
    problems += pipeline_models.problems(settings) + access.problems(settings)
    return problems + [p for setting in SETTINGS for p in setting.problems(settings)]


@hookimpl
async def gateway_reload(app: Quart, settings: Settings) -> dict[str, Any]:
    catalog = _build_catalog(app, settings)
    policies = _policies(settings)
    exposed = pipeline_models.configured(settings)
    values = {setting.extra_key: setting.configured(settings) for setting in SETTINGS}
    provide(ModelCatalog, catalog, app=app)
    context(app).extras[access.POLICIES_KEY] = policies
    context(app).extras[pipeline_models.EXPOSED_KEY] = exposed
    context(app).extras.update(values)
    # Connection pools to upstreams no model points at any more are closed.
    providers = context(app).registry("providers")
    for name in providers:
        await providers[name].retain(catalog.routes())
    return {"models": sorted(catalog.models), "pipeline_models": exposed}


@hookimpl
async def gateway_shutdown(app: Quart) -> None:
    ctx = context(app)
    flusher = ctx.extras.pop(_FLUSHER, None)
    if flusher is not None:
        flusher.cancel()
        await asyncio.gather(flusher, return_exceptions=True)
    if USAGE_KEY in ctx.extras:
        await ctx.extras[USAGE_KEY].flush(ctx.store)  # the last calls' usage
    providers = context(app).registry("providers")
    for name in providers:
        await providers[name].aclose()


@hookimpl
def gateway_status(app: Quart) -> dict[str, Any] | None:
    services = context(app).services
    if not services.has(ModelCatalog):
        return None
    return {"deployments": services.get(ModelCatalog).router.status()}


@hookimpl
def gateway_register_commands(cli: Any) -> None:
    cli.add_command(usage_routes.usage_command)


@hookimpl
async def gateway_prune(
    store: Store, settings: Settings, now_ms: int, dry_run: bool
) -> dict[str, int]:
    r = settings.retention
    removed = await responses_store.prune(
        store,
        r.cutoff_ms(r.responses_max_age_days, now_ms),
        r.limit(r.responses_max_count),
        r.batch_size,
        dry_run,
    )
    return {"responses": removed}
