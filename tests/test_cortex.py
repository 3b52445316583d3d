"""The cortex operator copilot through HTTP: typed SSE events ending with ``done`` or
``error``, tool calls scripted by a loopback OpenAI-compatible upstream and run as the
caller (its gates and ownership), a disconnect that cancels the model call, readiness."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ADMIN, READER, assert_error, bearer, running_app
from tests.pipelines_fixtures import write_pipelines
from tests.scripted_server import ScriptedServer

pytestmark = pytest.mark.usefixtures("store_url")

SOURCE = """
from plugins.pipelines.definition import Pipeline, code, tool

def boom(ctx):
    raise ValueError("the disk is full on /var/spool")

FAILS = Pipeline(id="fails", steps=[code("prepare", lambda c: {"ok": True}), code("write", boom)])
PEEKS = Pipeline(id="peeks", steps=[tool("look", "get_run", lambda c: c.input, retries=0)])
"""
SECRET = "alice-private-7c1d"
ALICE_TOKEN = "test-alice-token-0123456789"
BOB_TOKEN = "test-bob-token-0123456789"
ALICE = bearer(ALICE_TOKEN)
BOB = bearer(BOB_TOKEN)
GATES = ["allow_pipeline_run", "allow_cortex_chat"]
TOKENS = {
    "alice": {"token": ALICE_TOKEN, "gates": GATES},
    "bob": {"token": BOB_TOKEN, "gates": GATES},
}
RUN_ID = re.compile(r"run ([0-9a-f]{32})")


def sse_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in raw.decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            events.append((lines["event"], json.loads(lines["data"])))
    return events


def chunked_sse(chunks: list[dict[str, Any]]) -> bytes:
    """An upstream's streamed chat completion, chunked, ending with ``[DONE]``."""
    data = [f"data: {json.dumps(c)}\n\n".encode() for c in chunks] + [b"data: [DONE]\n\n"]
    body = b"".join(b"%x\r\n%s\r\n" % (len(d), d) for d in data) + b"0\r\n\r\n"
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    return head + body


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def body_of(request: bytes) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(request.split(b"\r\n\r\n", 1)[1])
    return parsed


class Copilot:
    """A scripted model: asked about run X it calls ``get_run``; given the tool's answer
    it quotes the run's error from it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    async def __call__(self, request: bytes, writer: asyncio.StreamWriter) -> bool:
        body = body_of(request)
        self.bodies.append(body)
        last = body["messages"][-1]
        if last["role"] == "user":
            run_id = RUN_ID.search(last["content"]).group(1)  # type: ignore[union-attr]
            call = {
                "index": 0,
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_run", "arguments": json.dumps({"run_id": run_id})},
            }
            chunks = [chunk({"role": "assistant", "tool_calls": [call]}), chunk({}, "tool_calls")]
        else:
            result = json.loads(last["content"])
            if result["status"] == 200:
                error = result["body"]["error"]["message"]
                text = f"It failed: {error}"
            else:
                text = f"I cannot see that run ({result['status']})."
            chunks = [
                chunk({"role": "assistant", "content": text[:10]}),
                chunk({"content": text[10:]}),
                chunk({}, "stop"),
            ]
        writer.write(chunked_sse(chunks))
        await writer.drain()
        return True


def settings_for(make_settings: Any, tmp_path: Path, port: int, **cortex: Any) -> Any:
    directory = write_pipelines(tmp_path, "cortex", SOURCE)
    return make_settings(
        auth={"tokens": TOKENS},
        models={
            "copilot": {
                "provider": "openai",
                "base_url": f"http://127.0.0.1:{port}/v1",
                "upstream_model": "m",
                "max_retries": 0,
            },
            "echo": {"provider": "echo"},
        },
        plugins={
            "pipelines": {"directory": str(directory), "poll_seconds": 0.05},
            "cortex": {"model": "copilot", **cortex},
        },
    )


async def until(check: Any, what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def failed_run(client: Any, headers: dict[str, str]) -> str:
    started = await client.post(
        "/pipelines/fails/start", json={"input": {"note": SECRET}}, headers=headers
    )
    assert started.status_code == 202
    run_id = str((await started.get_json())["runId"])

    async def failed() -> bool:
        record = await (await client.get(f"/runs/{run_id}", headers=ADMIN)).get_json()
        return bool(record["status"] == "failed")

    await until(failed, "the run to fail")
    return run_id


async def ask(client: Any, message: str, headers: dict[str, str]) -> list[tuple[str, Any]]:
    response = await client.post("/cortex/chat", json={"message": message}, headers=headers)
    assert response.status_code == 200, await response.get_data(as_text=True)
    assert response.headers["Content-Type"].startswith("text/event-stream")
    return sse_events(await response.get_data())


async def test_why_did_run_fail_is_answered_from_the_run_through_a_tool_call(
    make_settings, tmp_path
):
    model = Copilot()
    async with ScriptedServer(model) as upstream:
        settings = settings_for(make_settings, tmp_path, upstream.port)
        async with running_app(settings) as (_, client):
            run_id = await failed_run(client, ALICE)
            events = await ask(client, f"why did run {run_id} fail?", ALICE)

            async def used() -> Any:
                status = await (await client.get("/cortex/status", headers=ALICE)).get_json()
                return status if status["last_use"] else None

            status = await until(used, "the chat to be recorded")
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "cortex.started" and kinds[-1] == "done"
    assert kinds.count("tool.call") == 1 and kinds.count("tool.result") == 1
    call = next(data for kind, data in events if kind == "tool.call")
    assert call["name"] == "get_run" and json.loads(call["arguments"]) == {"run_id": run_id}
    result = next(data for kind, data in events if kind == "tool.result")
    assert result["status"] == 200 and result["ok"] is True
    (answer,) = [data["text"] for kind, data in events if kind == "message.completed"]
    deltas = "".join(data["text"] for kind, data in events if kind == "message.delta")
    assert answer == deltas and "the disk is full on /var/spool" in answer
    # The model was offered the tools and got the real record back.
    first, second = model.bodies
    assert {t["function"]["name"] for t in first["tools"]} >= {"get_run", "run_events"}
    tool_message = second["messages"][-1]
    assert tool_message["role"] == "tool" and tool_message["tool_call_id"] == "call_1"
    assert json.loads(tool_message["content"])["body"]["id"] == run_id
    assert status["last_use"]["outcome"] == "done" and status["last_use"]["tool_calls"] == 1
    assert status["model"]["reachable"] is True


async def test_tools_run_as_the_caller_and_never_show_another_principals_run(
    make_settings, tmp_path
):
    model = Copilot()
    async with ScriptedServer(model) as upstream:
        settings = settings_for(make_settings, tmp_path, upstream.port)
        async with running_app(settings) as (_, client):
            run_id = await failed_run(client, ALICE)
            events = await ask(client, f"why did run {run_id} fail?", BOB)
    result = next(data for kind, data in events if kind == "tool.result")
    assert result["status"] == 404 and result["ok"] is False
    assert events[-1][0] == "done"
    # Nothing of Alice's run reached the model or Bob.
    assert SECRET not in json.dumps(model.bodies) and "disk is full" not in json.dumps(model.bodies)
    assert "disk is full" not in json.dumps(events)


async def test_the_tools_offered_are_filtered_by_the_callers_gates(make_settings, tmp_path):
    async with ScriptedServer(Copilot()) as upstream:
        settings = settings_for(make_settings, tmp_path, upstream.port)
        # The built-in audit plugin serves /gateway/audit/log behind allow_audit_read.
        async with running_app(settings) as (_, client):
            admin = await (await client.get("/cortex/status", headers=ADMIN)).get_json()
            bob = await (await client.get("/cortex/status", headers=BOB)).get_json()
    assert "audit_log" in {t["name"] for t in admin["tools"]}
    assert "audit_log" not in {t["name"] for t in bob["tools"]}
    assert {"gateway_status", "get_run", "list_runs", "list_approvals"} <= {
        t["name"] for t in bob["tools"]
    }


async def test_a_client_that_disconnects_cancels_the_model_call(make_settings, tmp_path):
    asked = asyncio.Event()

    async def holds(request: bytes, writer: asyncio.StreamWriter) -> bool:
        head = chunked_sse([]).split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
        data = (
            f"data: {json.dumps(chunk({'role': 'assistant', 'content': 'Thinking'}))}\n\n".encode()
        )
        writer.write(head + b"%x\r\n%s\r\n" % (len(data), data))
        await writer.drain()
        asked.set()
        return True  # then the answer never ends: only the client can end it

    async with ScriptedServer(holds) as upstream:
        settings = settings_for(make_settings, tmp_path, upstream.port)
        async with running_app(settings) as (_, client):
            received = b""
            async with client.request(
                "/cortex/chat", method="POST", headers={**ADMIN, "Content-Type": "application/json"}
            ) as conn:
                await conn.send(json.dumps({"message": "status?"}).encode())
                await conn.send_complete()
                while b"event: message.delta" not in received:
                    received += await conn.receive()
                await asyncio.wait_for(asked.wait(), 10)
                await conn.disconnect()

            async def closed() -> bool:
                return upstream.closed_by_client >= 1

            await until(closed, "the upstream connection to be closed")

            async def recorded() -> Any:
                status = await (await client.get("/cortex/status", headers=ADMIN)).get_json()
                return status["last_use"]

            last = await until(recorded, "the cancelled chat to be recorded")
    assert last["outcome"] == "cancelled"
    assert b"Thinking" in received


async def test_an_upstream_failure_ends_the_stream_with_a_typed_error_event(
    make_settings, tmp_path
):
    async def fails(request: bytes, writer: asyncio.StreamWriter) -> bool:
        body = b'{"error": {"message": "overloaded", "type": "server_error"}}'
        writer.write(
            b"HTTP/1.1 503 X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        await writer.drain()
        return True

    async with ScriptedServer(fails) as upstream:
        settings = settings_for(make_settings, tmp_path, upstream.port)
        async with running_app(settings) as (_, client):
            events = await ask(client, "status?", ADMIN)
            status = await (await client.get("/cortex/status", headers=ADMIN)).get_json()
    assert [kind for kind, _ in events] == ["cortex.started", "error"]
    assert events[-1][1]["code"] and events[-1][1]["message"]
    assert status["model"]["reachable"] is False and status["ready"] is False


async def test_cortex_chat_refusals(make_settings, tmp_path):
    async with ScriptedServer(Copilot()) as upstream:
        settings = settings_for(make_settings, tmp_path, upstream.port)
        async with running_app(settings) as (_, client):
            denied = await client.post("/cortex/chat", json={"message": "hi"}, headers=READER)
            assert denied.status_code == 403
            assert_error(await denied.get_json(), "policy_gate_denied")
            for bad in ({}, {"message": ""}, {"message": 1}, {"message": "hi", "extra": 1}):
                refused = await client.post("/cortex/chat", json=bad, headers=ALICE)
                assert refused.status_code == 400, bad
                assert_error(await refused.get_json(), "invalid_request_body")
            missing = await client.post(
                "/cortex/chat", json={"message": "hi", "model": "nope"}, headers=ALICE
            )
            assert missing.status_code == 404
            assert_error(await missing.get_json(), "model_not_found")
            anonymous = await client.get("/cortex/status")
            assert anonymous.status_code == 401
    assert upstream.requests == []


async def test_the_echo_model_works_offline_and_status_probes_it(make_settings, tmp_path):
    settings = settings_for(make_settings, tmp_path, 9, **{"model": "echo"})
    async with running_app(settings) as (_, client):
        events = await ask(client, "how is the gateway?", ALICE)
        probed = await (await client.get("/cortex/status?probe=true", headers=READER)).get_json()
    kinds = [kind for kind, _ in events]
    # The echo model calls the first tool (gateway_status) and reports what it returned.
    assert kinds[:3] == ["cortex.started", "tool.call", "tool.result"]
    assert kinds[-2:] == ["message.completed", "done"]
    assert events[1][1]["name"] == "gateway_status" and events[2][1]["status"] == 200
    assert probed["model"] == {
        "name": "echo",
        "configured": True,
        "provider": "echo",
        "reachable": True,
        "checked_ms": probed["model"]["checked_ms"],
        "error": None,
    }
    assert probed["ready"] is True and probed["last_use"] is None  # the reader never asked


async def test_history_reaches_the_model_before_the_question(make_settings, tmp_path):
    model = Copilot()
    history = [
        {"role": "user", "content": "which runs failed today?"},
        {"role": "assistant", "content": "One did."},
    ]
    async with ScriptedServer(model) as upstream:
        settings = settings_for(make_settings, tmp_path, upstream.port)
        async with running_app(settings) as (_, client):
            run_id = await failed_run(client, ALICE)
            response = await client.post(
                "/cortex/chat",
                json={"message": f"why did run {run_id} fail?", "history": history},
                headers=ALICE,
            )
            events = sse_events(await response.get_data())
    assert events[-1][0] == "done"
    messages = model.bodies[0]["messages"]
    assert messages[0]["role"] == "system" and messages[1:3] == history
    assert messages[3] == {"role": "user", "content": f"why did run {run_id} fail?"}


async def test_a_slow_model_gets_keep_alive_comments_and_the_stream_still_ends_with_done(
    make_settings, tmp_path
):
    async def slow(request: bytes, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(1.0)  # the model thinks; the heartbeat below is 0.2 s
        answer = [chunk({"role": "assistant", "content": "All quiet."}), chunk({}, "stop")]
        writer.write(chunked_sse(answer))
        await writer.drain()
        return True

    async with ScriptedServer(slow) as upstream:
        settings = settings_for(make_settings, tmp_path, upstream.port)
        settings.events.heartbeat_seconds = 0.2
        async with running_app(settings) as (_, client):
            response = await client.post(
                "/cortex/chat", json={"message": "anything new?"}, headers=ADMIN
            )
            raw = await response.get_data()
    assert b": keep-alive\n\n" in raw
    events = sse_events(raw)
    assert [kind for kind, _ in events][-2:] == ["message.completed", "done"]
    assert events[-2][1]["text"] == "All quiet."


async def test_cortex_tools_are_registered_tools_counted_and_refused_outside_a_chat(
    make_settings, tmp_path
):
    model = Copilot()
    async with ScriptedServer(model) as upstream:
        settings = settings_for(make_settings, tmp_path, upstream.port)
        async with running_app(settings) as (_, client):
            listed = await (await client.get("/gateway/tools", headers=ADMIN)).get_json()
            tools = {t["name"]: t for t in listed["tools"]}
            assert {"gateway_status", "get_run", "run_events", "list_runs", "list_jobs"} <= set(
                tools
            )
            assert tools["get_run"]["plugin"] == "cortex"
            assert tools["get_run"]["parameters"]["required"] == ["run_id"]

            run_id = await failed_run(client, ALICE)
            events = await ask(client, f"why did run {run_id} fail?", BOB)
            result = next(data for kind, data in events if kind == "tool.result")
            assert result["status"] == 404  # through the registry, still as Bob

            stats = await (await client.get("/gateway/tools/stats", headers=ADMIN)).get_json()
            by_name = {s["name"]: s for s in stats["tools"]}
            assert by_name["get_run"]["calls"] == 1 and by_name["get_run"]["errors"] == 0

            # A pipeline step cannot call a cortex tool as someone else: no chat, no caller.
            started = await client.post(
                "/pipelines/peeks/start", json={"input": {"run_id": run_id}}, headers=BOB
            )
            assert started.status_code == 202
            peek = (await started.get_json())["runId"]

            async def ended() -> Any:
                record = await (await client.get(f"/runs/{peek}", headers=ADMIN)).get_json()
                return record if record["status"] in ("completed", "failed") else None

            record = await until(ended, "the peeking run to end")
    assert record["status"] == "failed" and "tool_unavailable" in str(record["error"])
    assert SECRET not in json.dumps(record)
