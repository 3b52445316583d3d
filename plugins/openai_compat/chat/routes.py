"""``/v1/models``, ``/v1/chat/completions`` and ``/v1/completions``."""

from __future__ import annotations

from typing import Any

from quart import Blueprint
from quart_schema import document_request, document_response

from host.api import document_stream, stream_slot
from plugins.openai_compat.bodies import read_body
from plugins.openai_compat.chat.bodies import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ModelList,
    ModelObject,
)
from plugins.openai_compat.conversations import Recorder, chat_session_key
from plugins.openai_compat.model_calls import (
    Meter,
    admit,
    answered_by,
    complete,
    json_answer,
    measure,
    model_listing,
    open_stream,
    provider_failure,
    resolve_model,
)
from plugins.openai_compat.model_catalog import Resolved
from plugins.openai_compat.providers.base import ProviderError
from plugins.openai_compat.retry_hint import with_retry_hint
from plugins.openai_compat.safety import OutputScanner, scan_messages, scan_prompt
from plugins.openai_compat.streaming import sse_response

bp = Blueprint("openai_compat", __name__)
bp.after_request(with_retry_hint)  # x-should-retry on errors (retry_hint.py)


@bp.get("/v1/models")
@document_response(ModelList)
async def list_models() -> Any:
    """The gateway's model names (``[models.<name>]``, and ``pipeline:<id>`` for the
    pipelines exposed as models), as OpenAI lists models."""
    return {"object": "list", "data": model_listing()}


@bp.get("/v1/models/<path:model_id>")
@document_response(ModelObject)
async def get_model(model_id: str) -> Any:
    """One model of the catalog."""
    resolved = resolve_model(model_id)
    return next(m for m in model_listing() if m["id"] == resolved.name)


def _upstream_body(parsed: Any, resolved: Resolved) -> dict[str, Any]:
    # metadata is the gateway's own (session keys); upstreams that see it without
    # ``store`` refuse it.
    body: dict[str, Any] = parsed.model_dump(
        exclude_none=True, by_alias=True, exclude={"n", "metadata"}
    )
    body["model"] = resolved.route.upstream_model
    return body


@bp.post("/v1/chat/completions")
@document_request(ChatCompletionRequest)
@document_response(ChatCompletionResponse)
@document_stream
async def chat_completions() -> Any:
    """OpenAI-compatible chat completions; ``stream: true`` forwards upstream chunks as
    they arrive and ends with ``data: [DONE]``."""
    parsed = await read_body(ChatCompletionRequest)
    resolved = resolve_model(parsed.model)
    body = _upstream_body(parsed, resolved)
    await scan_messages(body["messages"], "chat", resolved.name)
    recorder = Recorder.start(
        "chat",
        chat_session_key(parsed.metadata, parsed.user, body["messages"]),
        model=resolved.name,
        input=body["messages"],
        metadata=parsed.metadata,
        user=parsed.user,
    )
    return await _call(resolved, body, parsed.stream, "chat", recorder)


@bp.post("/v1/completions")
@document_request(CompletionRequest)
@document_response(CompletionResponse)
@document_stream
async def completions() -> Any:
    """OpenAI-compatible (legacy) text completions, streaming or not."""
    parsed = await read_body(CompletionRequest)
    resolved = resolve_model(parsed.model)
    body = _upstream_body(parsed, resolved)
    body["prompt"] = await scan_prompt(body["prompt"], "completions", resolved.name)
    return await _call(resolved, body, parsed.stream, "completions")


async def _call(
    resolved: Resolved,
    body: dict[str, Any],
    stream: bool,
    api: str,
    recorder: Recorder | None = None,
) -> Any:
    ticket = await admit(resolved, body)  # 429 budget_exceeded before any upstream call
    call = measure(resolved, api)
    scanner = OutputScanner(api, resolved.name)
    # stream_options means nothing to a non-streamed call (upstreams refuse it there),
    # and a streamed call asks for usage below only if the model allows it.
    client_wants_usage = bool((body.pop("stream_options", None) or {}).get("include_usage"))
    if not stream:
        try:
            result, answered = await complete(resolved, api, body)
            result = await scanner.completion(result)
        except ProviderError as exc:
            call.finished("error")
            ticket.finish(resolved.name, error=True)
            return provider_failure(exc)
        call.finished("ok")
        call.usage(result.get("usage"))
        ticket.finish(answered.name, result)
        result["model"] = answered.name
        if recorder is not None:
            await recorder.chat_completed(result)
        return answered_by(json_answer(result), answered)

    # Token metrics and budgets need the upstream's usage, so it is asked for unless the
    # model says its upstream refuses stream_options (stream_usage = false); the client
    # gets the usage chunk only when it asked for it too.
    slot = stream_slot()  # 429 past the caller's stream cap, before the upstream is asked
    try:
        first, chunks, answered, release = await open_stream(
            resolved, api, body, include_usage=True, wrap=lambda c, r: scanner.stream(c)
        )
    except ProviderError as exc:
        slot.release()
        call.finished("error")
        ticket.finish(resolved.name, error=True)
        return provider_failure(exc)
    seen_first_token = False
    last: dict[str, Any] = {}
    usage_sent = False
    meter = Meter()

    async def transform(chunk: dict[str, Any]) -> dict[str, Any] | None:
        nonlocal seen_first_token, last, usage_sent
        last = chunk
        meter.feed(chunk)
        if not seen_first_token and _has_content(chunk):
            seen_first_token = True
            call.first_token()
        call.usage(chunk.get("usage"))
        if recorder is not None:
            recorder.feed(chunk)
        usage_sent = usage_sent or chunk.get("usage") is not None
        if not client_wants_usage and chunk.get("usage") is not None:
            if not chunk.get("choices"):
                return None
            del chunk["usage"]
        chunk["model"] = answered.name
        return chunk

    async def before_done() -> list[dict[str, Any]]:
        # Counted before [DONE]: a client's next request sees this one's tokens.
        ticket.finish(answered.name, meter=meter)
        if recorder is not None:
            await recorder.chat_stream_completed()
        if not client_wants_usage or usage_sent:
            return []
        # Asked for, but the upstream gave none: the usage chunk still comes, with
        # ``usage: null`` (unknown), as OpenAI's stream_options promise one.
        keep = ("id", "object", "created", "system_fingerprint")
        return [
            {
                **{k: last[k] for k in keep if k in last},
                "model": answered.name,
                "choices": [],
                "usage": None,
            }
        ]

    def on_end(outcome: str) -> None:
        release()
        call.finished(outcome)
        ticket.finish(answered.name, meter=meter, error=outcome != "ok")

    return answered_by(sse_response(first, chunks, transform, on_end, before_done, slot), answered)


def _has_content(chunk: dict[str, Any]) -> bool:
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("tool_calls") or choice.get("text"):
            return True
    return False
