"""``POST /v1/responses`` (OpenResponses / OpenAI Responses), served over chat-completion
providers, and stored responses: ``GET`` and ``DELETE /v1/responses/<id>``. A stored
response is its caller's: another principal's id answers 404 (store.Owner)
unless the caller holds ``allow_responses_read_all`` (read) or also
``allow_responses_act_all`` (delete)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from quart import Blueprint
from quart_schema import document_request, document_response

from host.api import (
    GatewayError,
    Store,
    context,
    current_principal,
    document_stream,
    require_owner,
    stream_slot,
)
from plugins.openai_compat import keepalive
from plugins.openai_compat.bodies import read_body
from plugins.openai_compat.conversations import Recorder, session_id_of
from plugins.openai_compat.keepalive import KEEPALIVE, with_keepalive
from plugins.openai_compat.model_calls import (
    Meter,
    admit,
    answered_by,
    complete,
    json_answer,
    measure,
    open_stream,
    provider_failure,
    resolve_model,
)
from plugins.openai_compat.model_catalog import Resolved
from plugins.openai_compat.providers.base import ProviderError
from plugins.openai_compat.responses import store as responses_store
from plugins.openai_compat.responses.bodies import (
    DeletedResponse,
    ResponseObject,
    ResponsesRequest,
)
from plugins.openai_compat.responses.errors import (
    error_event_payload,
    response_error,
    with_spec_error_type,
)
from plugins.openai_compat.responses.store import CHAIN_BYTES_SETTING, CHAIN_TURNS_SETTING
from plugins.openai_compat.responses.stream import ResponsesStream
from plugins.openai_compat.responses.translate import (
    chat_body,
    new_id,
    output_from_chat,
    output_to_messages,
    response_resource,
    usage_from_chat,
)
from plugins.openai_compat.retry_hint import with_retry_hint
from plugins.openai_compat.safety import OutputScanner, scan_messages
from plugins.openai_compat.streaming import close_stream, event_stream

bp = Blueprint("openai_responses", __name__)
# Errors on these routes use the OpenResponses error types (errors.py).
bp.after_request(with_spec_error_type)
bp.after_request(with_retry_hint)  # x-should-retry (retry_hint.py)


def _owner() -> responses_store.Owner:
    return responses_store.Owner.of(current_principal())


def _not_found(response_id: str) -> GatewayError:
    return GatewayError(404, "response_not_found", f"response {response_id!r} was not found")


async def _history(
    req: ResponsesRequest, owner: responses_store.Owner
) -> responses_store.Chain | None:
    if req.previous_response_id is None:
        return None
    found = await responses_store.load_chain(context().store, owner, req.previous_response_id)
    if found is None:
        raise GatewayError(
            404,
            "previous_response_not_found",
            f"previous response {req.previous_response_id!r} was not found (was it stored?)",
            param="previous_response_id",
        )
    return found


def _check_chain(previous: responses_store.Chain | None, new_input: list[Any]) -> None:
    """400 naming the limit when this turn would make its chain too long or too large."""
    if previous is None:
        return
    turns = CHAIN_TURNS_SETTING.current()
    if previous.length + 1 > turns:
        raise GatewayError(
            400,
            "response_chain_too_long",
            f"this response would be turn {previous.length + 1} of its chain; the limit is "
            f"{turns} (plugins.openai_compat.{CHAIN_TURNS_SETTING.key}): start a new "
            "conversation",
            param="previous_response_id",
        )
    limit = CHAIN_BYTES_SETTING.current()
    size = previous.bytes + responses_store.turn_bytes(new_input)
    if size > limit:
        raise GatewayError(
            400,
            "response_chain_too_large",
            f"this response would make its chain {size} bytes; the limit is {limit} "
            f"(plugins.openai_compat.{CHAIN_BYTES_SETTING.key}): start a new conversation",
            param="previous_response_id",
        )


@bp.post("/v1/responses")
@document_request(ResponsesRequest)
@document_response(ResponseObject)
@document_stream
async def create_response() -> Any:
    """Create a model response (OpenResponses). ``stream: true`` answers with the typed
    events (``response.created`` ... ``response.completed``), each with a
    ``sequence_number``, then ``data: [DONE]``."""
    req = await read_body(ResponsesRequest)
    resolved = resolve_model(req.model)
    owner = _owner()
    previous = await _history(req, owner)
    history = previous.conversation if previous is not None else []
    body = chat_body(req, history)
    await scan_messages(body["messages"], "responses", resolved.name)
    # What a continuation replays: everything but this request's own instructions.
    conversation = body["messages"][1:] if req.instructions else body["messages"]
    new_input = conversation[len(history) :]  # what this turn stores with its output
    _check_chain(previous, new_input)
    upstream = {**body, "model": resolved.route.upstream_model}
    turn = await _turn(req, resolved, owner, new_input, previous)
    if req.stream:
        return await _stream(req, resolved, upstream, turn)
    return await _complete(req, resolved, upstream, turn)


@dataclass(frozen=True)
class _Turn:
    """The new response's id, its owner, the session key of its chain, its recorder, the
    response it continues and its new input items (what it stores with its output)."""

    response_id: str
    owner: responses_store.Owner
    session_key: str
    recorder: Recorder | None
    previous: responses_store.Chain | None
    new_input: list[Any]


async def _turn(
    req: ResponsesRequest,
    resolved: Resolved,
    owner: responses_store.Owner,
    new_input: list[Any],
    previous: responses_store.Chain | None,
) -> _Turn:
    response_id = new_id("resp")
    # metadata.session_id names the session; otherwise a continuation keeps the key of
    # the response it continues, and a new chain is keyed by its first response's id.
    key = session_id_of(req.metadata)
    if key is None and req.previous_response_id is not None:
        before = req.previous_response_id
        key = await responses_store.session_key(context().store, owner, before) or before
    key = key or response_id
    recorder = Recorder.start(
        "responses",
        key,
        model=resolved.name,
        input=new_input,
        metadata=req.metadata,
        user=req.user,
        previous_response_id=req.previous_response_id,
        instructions=req.instructions,
    )
    return _Turn(response_id, owner, key, recorder, previous, new_input)


async def _complete(
    req: ResponsesRequest,
    resolved: Resolved,
    body: dict[str, Any],
    turn: _Turn,
) -> Any:
    ticket = await admit(resolved, body)  # 429 budget_exceeded before any upstream call
    call = measure(resolved, "responses")
    try:
        result, answered = await complete(resolved, "chat", body)
        result = await OutputScanner("responses", resolved.name).completion(result)
    except ProviderError as exc:
        call.finished("error")
        ticket.finish(resolved.name, error=True)
        return provider_failure(exc)
    call.finished("ok")
    call.usage(result.get("usage"))
    ticket.finish(answered.name, result)
    choice = (result.get("choices") or [{}])[0]
    truncated = choice.get("finish_reason") == "length"
    output = output_from_chat(choice.get("message") or {}, cut_off=truncated)
    resource = response_resource(
        req,
        turn.response_id,
        answered.name,
        status="incomplete" if truncated else "completed",
        output=output,
        usage=usage_from_chat(result.get("usage")),
        incomplete_reason="max_output_tokens" if truncated else None,
    )
    await _keep_turn(context().store, req, turn, resource, output, result.get("usage"))
    return answered_by(json_answer(resource), answered)


async def _keep_turn(
    store: Store,
    req: ResponsesRequest,
    turn: _Turn,
    resource: dict[str, Any],
    output: list[Any],
    usage: dict[str, Any] | None,
) -> None:
    """After an answered turn: store the response (``req.store``) with its turn (new
    input and output, linked to the response it continued) and record the
    conversation. ``store`` is passed in: a stream's body runs outside the request."""
    messages = output_to_messages(output)
    if req.store:
        await responses_store.save(
            store, turn.owner, resource, turn.new_input + messages, turn.session_key, turn.previous
        )
    if turn.recorder is not None:
        await turn.recorder.send(
            response_id=turn.response_id, output=messages, usage=usage, status=resource["status"]
        )


def _sse(event: dict[str, Any]) -> bytes:
    data = json.dumps(event, separators=(",", ":"))
    return f"event: {event['type']}\ndata: {data}\n\n".encode()


async def _stream(
    req: ResponsesRequest,
    resolved: Resolved,
    body: dict[str, Any],
    turn: _Turn,
) -> Any:
    ticket = await admit(resolved, body)  # 429 budget_exceeded before any upstream call
    call = measure(resolved, "responses")
    slot = stream_slot()  # 429 past the caller's stream cap, before the upstream is asked
    scanner = OutputScanner("responses", resolved.name)  # a rolling scan of the output
    try:
        first, chunks, answered, release = await open_stream(
            resolved, "chat", body, include_usage=True, wrap=lambda c, r: scanner.stream(c)
        )
    except ProviderError as exc:
        slot.release()
        call.finished("error")
        ticket.finish(resolved.name, error=True)
        return provider_failure(exc)
    meter = Meter()
    response_id = turn.response_id
    created_at = int(time.time())
    store = context().store

    def resource(status: str, **kw: Any) -> dict[str, Any]:
        return response_resource(
            req, response_id, answered.name, status=status, created_at=created_at, **kw
        )

    every = keepalive.SETTING.current()

    async def events() -> AsyncIterator[bytes]:
        state = ResponsesStream()
        outcome = "cancelled"
        first_token_seen = False
        try:
            yield _sse(state.event("response.created", response=resource("in_progress")))
            yield _sse(state.event("response.in_progress", response=resource("in_progress")))
            pending = [first] if first is not None else []
            arriving = with_keepalive(_chain(pending, chunks), every)
            try:
                async with contextlib.aclosing(arriving):
                    async for chunk in arriving:
                        if chunk is None:
                            yield KEEPALIVE
                            continue
                        meter.feed(chunk)
                        for event in state.feed(chunk):
                            if not first_token_seen and event["type"].endswith(".delta"):
                                first_token_seen = True
                                call.first_token()
                            yield _sse(event)
            except ProviderError as exc:
                # OpenResponses: the error event, the items it cut off, response.failed.
                outcome = "error"
                yield _sse(state.event("error", error=error_event_payload(exc)))
                for event in state.close(cut_off="open"):
                    yield _sse(event)
                failed = resource("failed", output=state.output, error=response_error(exc))
                yield _sse(state.event("response.failed", response=failed))
                yield b"data: [DONE]\n\n"
                return
            truncated = state.finish_reason == "length"
            for event in state.close(cut_off="last" if truncated else None):
                yield _sse(event)
            call.usage(state.usage)
            ticket.finish(answered.name, meter=meter)
            final = resource(
                "incomplete" if truncated else "completed",
                output=state.output,
                usage=usage_from_chat(state.usage),
                incomplete_reason="max_output_tokens" if truncated else None,
            )
            await _keep_turn(store, req, turn, final, state.output, state.usage)
            kind = "response.incomplete" if truncated else "response.completed"
            yield _sse(state.event(kind, response=final))
            yield b"data: [DONE]\n\n"
            outcome = "ok"
        finally:
            await close_stream(chunks)
            release()
            call.finished(outcome)
            ticket.finish(answered.name, meter=meter, error=outcome != "ok")

    return answered_by(event_stream(events(), slot), answered)


async def _chain(
    first: list[dict[str, Any]], rest: AsyncIterator[dict[str, Any]]
) -> AsyncIterator[dict[str, Any]]:
    for chunk in first:
        yield chunk
    async for chunk in rest:
        yield chunk


@bp.get("/v1/responses/<response_id>")
@document_response(ResponseObject)
async def get_response(response_id: str) -> Any:
    """A stored response of the caller's (another principal's is 404, as if absent, unless
    the caller holds ``allow_responses_read_all``)."""
    found = await responses_store.load(context().store, _owner(), response_id)
    if found is None:
        raise _not_found(response_id)
    return found


@bp.delete("/v1/responses/<response_id>")
@document_response(DeletedResponse)
async def delete_response(response_id: str) -> Any:
    """Delete a stored response of the caller's (it can no longer be continued); another
    principal's is 404, or 403 to a holder of ``allow_responses_read_all`` without
    ``allow_responses_act_all``."""
    store = context().store
    stored, owner = await responses_store.owner_of(store, response_id)
    if not stored:
        raise _not_found(response_id)
    require_owner(
        current_principal(),
        owner,
        read_all=responses_store.GATE_READ_ALL,
        act_all=responses_store.GATE_ACT_ALL,
        not_found=_not_found(response_id),
        action="deleting another principal's stored response",
    )
    if not await responses_store.delete(store, response_id):
        raise _not_found(response_id)
    return {"id": response_id, "object": "response.deleted", "deleted": True}
