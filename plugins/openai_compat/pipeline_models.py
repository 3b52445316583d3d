"""Pipelines exposed as models: ``model: "pipeline:<id>"`` runs the pipeline ``<id>``.

Only pipelines listed in ``[plugins.openai_compat] pipeline_models`` are exposed (none by
default). A call starts a real run through the pipelines plugin's ``PipelinesAPI``
service (with that plugin disabled no pipeline model exists): the run input is
``{"messages": [...]}``, the caller needs the ``allow_pipeline_run`` gate, the gateway
must not be paused, and the run shows in ``GET /runs`` with trigger
``{"type": "openai", "model": ...}``.

The answer is the run's output as the assistant message: a string as it is; an object's
``content`` or else ``text`` field when it is a string; anything else as JSON. Streaming,
the run's ``step.delta`` events (``llm`` steps' tokens) are the content chunks, as they
happen (a retried step's text is sent once, see ``pipeline_events.StreamedText``); a run
that streamed none sends its output as one chunk at the end. ``usage`` is the sum of the
run's ``step.usage`` events (null when it had none). A run that fails, is cancelled,
waits for a person (approval, input) or pauses at a breakpoint is an error naming the
run, which goes on (or waits) in the pipelines plugin.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from host.api import GatewayError, Settings, context, current_principal, has_service, service
from plugins.openai_compat.model_catalog import Resolved, model_not_found
from plugins.openai_compat.pipeline_events import RunUsage, StreamedText
from plugins.openai_compat.providers.base import ModelRoute, Provider, ProviderError

if TYPE_CHECKING:
    from plugins.pipelines.contract import PipelinesAPI, RunState

PREFIX = "pipeline:"
CONFIG_KEY = "pipeline_models"
EXPOSED_KEY = "openai_compat.pipeline_models"
# Chat parameters a pipeline cannot honour; refused rather than dropped. Sampling
# parameters (temperature, max_tokens, ...) do not apply to a pipeline and are ignored.
REFUSED = ("tools", "tool_choice", "parallel_tool_calls", "response_format")


def problems(settings: Settings) -> list[str]:
    """What is wrong with ``[plugins.openai_compat] pipeline_models``, each naming the key."""
    raw = settings.plugin_section("openai_compat").get(CONFIG_KEY, [])
    key = f"plugins.openai_compat.{CONFIG_KEY}"
    if not isinstance(raw, list) or not all(isinstance(i, str) and i.strip() for i in raw):
        return [f"{key}: must be a list of pipeline ids"]
    found = [
        f"{key}: list pipeline ids without the {PREFIX!r} prefix (got {item!r})"
        for item in raw
        if item.startswith(PREFIX)
    ]
    models = settings.extra_section("models")
    if isinstance(models, dict):
        found += [
            f"models.{name}: model names starting with {PREFIX!r} are reserved for pipelines"
            for name in models
            if str(name).startswith(PREFIX)
        ]
    return found


def configured(settings: Settings) -> list[str]:
    """The pipeline ids to expose; GatewayError (naming the key) when the list is invalid."""
    found = problems(settings)
    if found:
        raise GatewayError(400, "config_invalid", "; ".join(found))
    raw = settings.plugin_section("openai_compat").get(CONFIG_KEY, [])
    return list(dict.fromkeys(i.strip() for i in raw))


def _api() -> PipelinesAPI | None:
    """The pipelines plugin's service while it runs; imported on use, so with no pipeline
    exposed (the default) this plugin never imports the pipelines plugin."""
    if not _exposed():
        return None
    from plugins.pipelines.contract import PipelinesAPI

    return service(PipelinesAPI) if has_service(PipelinesAPI) else None


def _exposed() -> list[str]:
    found: list[str] = context().extras.get(EXPOSED_KEY) or []
    return found


def _not_found(name: str) -> GatewayError:
    hint = f" (pipelines are models only when listed in plugins.openai_compat.{CONFIG_KEY})"
    return model_not_found(name, hint)


def listing(created: int) -> list[dict[str, Any]]:
    """``/v1/models`` entries of the exposed pipelines that exist now."""
    api = _api()
    if api is None:
        return []
    found = []
    for pipeline_id in _exposed():
        pipeline = api.pipeline(pipeline_id)
        if pipeline is not None:
            found.append(
                {
                    "id": PREFIX + pipeline_id,
                    "object": "model",
                    "created": created,
                    "owned_by": "agent-gateway:pipelines",
                    "description": pipeline.description or f"the pipeline {pipeline_id!r}",
                }
            )
    return found


def resolve(name: str) -> Resolved:
    """``pipeline:<id>`` as a model; 404 ``model_not_found`` unless it is exposed, exists,
    and the pipelines plugin runs."""
    pipeline_id = name[len(PREFIX) :]
    api = _api()
    if api is None or pipeline_id not in _exposed():
        raise _not_found(name)
    pipeline = api.pipeline(pipeline_id)
    if pipeline is None:
        raise _not_found(name)
    route = ModelRoute(
        name=name,
        provider=PipelineProvider.name,
        upstream_model=pipeline_id,
        description=pipeline.description,
    )
    return Resolved(name, PipelineProvider(api), route)


def output_text(output: Any) -> str:
    """A run's output as assistant content."""
    if isinstance(output, str):
        return output
    if isinstance(output, dict):
        for key in ("content", "text"):
            if isinstance(output.get(key), str):
                return str(output[key])
    return json.dumps(output, ensure_ascii=False)


def _completed(state: RunState) -> RunState:
    """``state`` when the run completed; raises its refusal otherwise."""
    refusal = _refusal(state)
    if refusal is not None:
        raise refusal
    return state


def _refusal(state: RunState) -> ProviderError | None:
    """The error for a run that did not complete, naming it and what to do next."""
    run = f"pipeline run {state.run_id}"
    see = f"GET /runs/{state.run_id} shows it"
    if state.status == "completed":
        return None
    if state.status == "failed":
        reason = (state.error or {}).get("message") or "no reason given"
        return ProviderError(502, "pipeline_run_failed", f"{run} failed: {reason}; {see}")
    if state.status == "cancelled":
        return ProviderError(409, "pipeline_run_cancelled", f"{run} was cancelled; {see}")
    if state.status == "waiting":
        waiting = state.waiting_for or {}
        step = waiting.get("step")
        if waiting.get("type") == "approval":
            action = f"approve it with POST /runs/{state.run_id}/approve"
            what = f"an approval at step {step!r}"
        else:
            action = f"give it its input with POST /runs/{state.run_id}/resume"
            what = f"input at step {step!r}"
        return ProviderError(
            409,
            "pipeline_run_waiting",
            f"{run} is waiting for {what}; {action}, then read its output from "
            f"GET /runs/{state.run_id}",
        )
    if state.status == "paused":
        return ProviderError(
            409,
            "pipeline_run_paused",
            f"{run} paused at a breakpoint before step {state.paused_at!r}; release it "
            f"with POST /debug/runs/{state.run_id}/release, then read its output from "
            f"GET /runs/{state.run_id}",
        )
    return ProviderError(
        503, "draining", f"the gateway is shutting down; {run} goes on after it restarts"
    )


class PipelineProvider(Provider):
    """Not registered as a provider: built per call by :func:`resolve`."""

    name = "pipeline"
    description = "a pipeline run as a model"
    supports_tools = False

    def __init__(self, api: PipelinesAPI) -> None:
        self.api = api

    async def _start(self, route: ModelRoute, body: dict[str, Any]) -> str:
        for param in REFUSED:
            if body.get(param) not in (None, []):
                raise GatewayError(
                    400,
                    "unsupported_parameter",
                    f"{param}: not supported by pipeline models",
                    param=param,
                )
        try:
            return await self.api.start_run(
                route.upstream_model,
                {"messages": body.get("messages") or []},
                principal=current_principal(),
                trigger={"type": "openai", "model": route.name},
            )
        except GatewayError as exc:
            if exc.code != "validation_failed":
                raise
            field = (exc.details or {}).get("param")
            raise GatewayError(
                422,
                "validation_failed",
                f"the request does not fit the input of {route.name!r} "
                f"(its input is {{'messages': [...]}}): {exc.message}",
                type="invalid_request_error",
                param=field,
            ) from None

    async def _finished(self, run_id: str) -> tuple[RunState, dict[str, Any] | None]:
        """The completed run and its usage; the refusal when it did not complete."""
        usage = RunUsage()
        return _completed(await self.api.wait(run_id, usage.feed)), usage.usage

    async def chat(self, route: ModelRoute, body: dict[str, Any]) -> dict[str, Any]:
        run_id = await self._start(route, body)
        state, usage = await self._finished(run_id)
        return {
            "id": f"chatcmpl-{run_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": route.name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": output_text(state.output)},
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
            "gateway_run_id": run_id,
        }

    async def chat_stream(
        self, route: ModelRoute, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        # Everything that can refuse the call (gate, pause, input) happens before the
        # first chunk, which the routes await before the response starts.
        run_id = await self._start(route, body)
        base = {
            "id": f"chatcmpl-{run_id}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": route.name,
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        yield chunk({"role": "assistant", "content": ""})
        streamed = False
        text = StreamedText(run_id)
        usage = RunUsage()
        async with contextlib.aclosing(self.api.events(run_id)) as events:
            async for event in events:
                usage.feed(event)
                new = text.feed(event)
                if new:
                    streamed = True
                    yield chunk({"content": new})
        state = _completed(await self.api.state(run_id))
        text.finish()
        if not streamed:
            yield chunk({"content": output_text(state.output)})
        yield chunk({}, "stop")
        # As an upstream does: the usage chunk when asked for and known (the routes send
        # ``usage: null`` to a client that asked when there is none).
        if usage.usage is not None and (body.get("stream_options") or {}).get("include_usage"):
            yield {**base, "choices": [], "usage": usage.usage}

    # Legacy completions: the prompt is one user message.

    @staticmethod
    def _as_chat(body: dict[str, Any]) -> dict[str, Any]:
        prompt = body.get("prompt")
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise GatewayError(
                    400,
                    "unsupported_parameter",
                    "prompt: pipeline models take one prompt",
                    param="prompt",
                )
            prompt = prompt[0]
        chat: dict[str, Any] = {"messages": [{"role": "user", "content": str(prompt)}]}
        if body.get("stream_options"):
            chat["stream_options"] = body["stream_options"]
        return chat

    async def completion(self, route: ModelRoute, body: dict[str, Any]) -> dict[str, Any]:
        result = await self.chat(route, self._as_chat(body))
        run_id = result["gateway_run_id"]
        text = result["choices"][0]["message"]["content"]
        return {
            "id": f"cmpl-{run_id}",
            "object": "text_completion",
            "created": result["created"],
            "model": route.name,
            "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
            "usage": result["usage"],
            "gateway_run_id": run_id,
        }

    async def completion_stream(
        self, route: ModelRoute, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        async for chunk in self.chat_stream(route, self._as_chat(body)):
            out = {
                "id": "cmpl-" + chunk["id"].removeprefix("chatcmpl-"),
                "object": "text_completion",
                "created": chunk["created"],
                "model": route.name,
                "choices": [],
            }
            if "usage" in chunk:
                yield {**out, "usage": chunk["usage"]}
                continue
            choice = chunk["choices"][0]
            text = choice["delta"].get("content") or ""
            out["choices"] = [{"index": 0, "text": text, "finish_reason": choice["finish_reason"]}]
            yield out
