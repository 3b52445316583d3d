"""Pipelines exposed as models (``model: "pipeline:<id>"``) through the official ``openai``
SDK against a real ``gateway serve``: real runs, streamed step deltas, the run gate,
pause, breakpoints, waiting runs, schemas, opt-in by configuration."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import (
    ADMIN,
    ADMIN_TOKEN,
    READER,
    READER_TOKEN,
    LiveServer,
    running_app,
    start_server,
)
from tests.openai_helpers import SAFETY_OFF

PIPELINES = """
from __future__ import annotations

import asyncio
import pathlib
from typing import Any

from pydantic import BaseModel, Field

from plugins.pipelines.definition import Pipeline, approval, code, llm


class Message(BaseModel):
    role: str
    content: str = Field(..., max_length=20)


class Short(BaseModel):
    messages: list[Message]


def last(ctx) -> str:
    return ctx.input["messages"][-1]["content"]


async def live(ctx):
    # The last message names a file: the step streams "first", waits for the file, then
    # streams " last", so a test can tell deltas that arrive live from a buffered answer.
    await ctx.delta("first")
    gate = pathlib.Path(last(ctx))
    while not gate.exists():
        await asyncio.sleep(0.02)
    await ctx.delta(" last")
    return {"text": "first last"}


CHAT = Pipeline(
    id="chat",
    description="echo through an llm step",
    steps=[llm("answer", "echo", prompt=lambda ctx: ctx.input["messages"])],
)
LIVE = Pipeline(id="live", steps=[code("stream", live)])
PLAIN = Pipeline(id="plain", steps=[code("say", lambda c: "plain: " + last(c))])
STRUCTURED = Pipeline(id="structured", steps=[code("data", lambda c: {"n": 1, "ok": True})])
PREFERRED = Pipeline(
    id="preferred", steps=[code("data", lambda c: {"content": "from content", "text": "no"})]
)
TYPED = Pipeline(id="typed", input_model=Short, steps=[code("ok", lambda c: "fits")])
GATED = Pipeline(
    id="gated", steps=[approval("review", "ok?"), code("after", lambda c: "approved")]
)
FAILING = Pipeline(id="failing", steps=[code("boom", lambda c: 1 / 0)])
UNLISTED = Pipeline(id="unlisted", steps=[code("x", lambda c: "x")])
"""

EXPOSED = ["chat", "live", "plain", "structured", "preferred", "typed", "gated", "failing"]


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, module_store: dict[str, Any]
) -> Iterator[LiveServer]:
    """One server for the module per store (each call is a stored run)."""
    root = tmp_path_factory.mktemp("pipeline-models")
    (root / "pipelines").mkdir()
    (root / "pipelines" / "models.py").write_text(PIPELINES)
    server = start_server(
        root,
        config={
            **module_store,
            "plugins": {
                "pipelines": {"directory": str(root / "pipelines"), "poll_seconds": 0.05},
                "openai_compat": {"pipeline_models": [*EXPOSED, "missing"]},
                **SAFETY_OFF,  # these tests pin how llm step deltas become chunks
            },
        },
    )
    yield server
    server.stop()


def sdk(server: LiveServer, token: str = ADMIN_TOKEN) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=token, max_retries=0)


def http(server: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=ADMIN, timeout=30)


def run_ids(server: LiveServer) -> list[str]:
    with http(server) as client:
        return [r["id"] for r in client.get("/runs?limit=500").json()["runs"]]


def run(server: LiveServer, run_id: str) -> dict[str, Any]:
    with http(server) as client:
        record: dict[str, Any] = client.get(f"/runs/{run_id}").json()
    return record


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


# -- listing ----------------------------------------------------------------------------------


def test_only_opted_in_pipelines_that_exist_are_listed_as_models(gateway):
    client = sdk(gateway)
    ids = {m.id for m in client.models.list()}
    assert {f"pipeline:{p}" for p in EXPOSED} <= ids
    assert "echo" in ids
    assert "pipeline:unlisted" not in ids  # exists, not opted in
    assert "pipeline:missing" not in ids  # opted in, does not exist
    one = client.models.retrieve("pipeline:chat")
    assert one.owned_by == "agent-gateway:pipelines"
    assert one.model_extra and one.model_extra["description"] == "echo through an llm step"


def test_unknown_or_unlisted_pipeline_model_is_404_and_starts_nothing(gateway):
    before = run_ids(gateway)
    for name in ("pipeline:nope", "pipeline:unlisted", "pipeline:missing"):
        with pytest.raises(openai.NotFoundError) as caught:
            sdk(gateway).chat.completions.create(model=name, messages=user("hi"))
        assert caught.value.code == "model_not_found"
        assert caught.value.param == "model"
        with pytest.raises(openai.NotFoundError):
            sdk(gateway).models.retrieve(name)
    assert run_ids(gateway) == before


# -- calling ----------------------------------------------------------------------------------


def test_chat_completion_is_a_real_run_whose_output_is_the_answer(gateway):
    result = sdk(gateway).chat.completions.create(
        model="pipeline:chat", messages=user("hello there")
    )
    assert result.choices[0].message.content == "echo: hello there"
    assert result.choices[0].finish_reason == "stop"
    assert result.model == "pipeline:chat"
    run_id = result.id.removeprefix("chatcmpl-")
    assert run_id in run_ids(gateway)
    record = run(gateway, run_id)
    assert record["status"] == "completed"
    assert record["pipeline_id"] == "chat"
    assert record["trigger"] == {"type": "openai", "model": "pipeline:chat"}
    assert record["created_by"] == "admin"
    assert record["input"] == {"messages": [{"role": "user", "content": "hello there"}]}
    usage = {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}  # echo's words
    assert record["output"] == {"text": "echo: hello there", "usage": usage}
    assert result.usage is not None and result.usage.model_dump(exclude_none=True) == usage


def test_outputs_become_content_string_field_or_json(gateway):
    def answer(model: str) -> str | None:
        result = sdk(gateway).chat.completions.create(model=model, messages=user("x"))
        return result.choices[0].message.content

    assert answer("pipeline:plain") == "plain: x"
    assert answer("pipeline:preferred") == "from content"
    assert answer("pipeline:structured") == '{"n": 1, "ok": true}'


def test_stream_sends_llm_step_deltas_as_content_chunks(gateway):
    stream = sdk(gateway).chat.completions.create(
        model="pipeline:chat", messages=user("one two three four"), stream=True
    )
    chunks = list(stream)
    deltas = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert "".join(deltas) == "echo: one two three four"
    assert len(deltas) == 5  # word by word, as the echo model streamed them
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert {c.model for c in chunks} == {"pipeline:chat"}
    run_id = chunks[0].id.removeprefix("chatcmpl-")
    assert run(gateway, run_id)["status"] == "completed"


def test_stream_deltas_arrive_while_the_run_is_still_running(gateway, tmp_path: Path):
    gate = tmp_path / "go"
    stream = sdk(gateway).chat.completions.create(
        model="pipeline:live", messages=user(str(gate)), stream=True
    )
    texts: list[str] = []
    with stream:
        for chunk in stream:
            delta = chunk.choices[0].delta.content
            if not delta:
                continue
            if not texts:
                run_id = chunk.id.removeprefix("chatcmpl-")
                assert run(gateway, run_id)["status"] == "running", "the delta was buffered"
                gate.write_text("go")
            texts.append(delta)
    assert texts == ["first", " last"]


def test_stream_of_a_pipeline_without_deltas_sends_its_output(gateway):
    chunks = list(
        sdk(gateway).chat.completions.create(
            model="pipeline:plain", messages=user("y"), stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "plain: y"


def test_responses_and_completions_run_pipeline_models_too(gateway):
    client = sdk(gateway)
    response = client.responses.create(model="pipeline:chat", input="via responses")
    assert response.output_text == "echo: via responses"
    events = list(client.responses.create(model="pipeline:chat", input="a b", stream=True))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == "echo: a b" and len(deltas) == 3
    completion = client.completions.create(model="pipeline:plain", prompt="legacy")
    assert completion.choices[0].text == "plain: legacy"


# -- refusals ---------------------------------------------------------------------------------


def test_calling_a_pipeline_model_needs_the_pipeline_run_gate(gateway):
    before = run_ids(gateway)
    reader = sdk(gateway, READER_TOKEN)
    assert "pipeline:chat" in {m.id for m in reader.models.list()}
    for stream in (False, True):
        with pytest.raises(openai.PermissionDeniedError) as caught:
            reader.chat.completions.create(
                model="pipeline:chat", messages=user("hi"), stream=stream
            )
        assert caught.value.code == "policy_gate_denied"
        assert "allow_pipeline_run" in caught.value.message
    # Ordinary models need no gate.
    assert reader.chat.completions.create(model="echo", messages=user("hi")).choices
    assert run_ids(gateway) == before


def test_paused_gateway_refuses_pipeline_models_with_503(gateway):
    before = run_ids(gateway)
    with http(gateway) as client:
        assert client.post("/gateway/pause").status_code == 200
        try:
            for stream in (False, True):
                with pytest.raises(openai.InternalServerError) as caught:
                    sdk(gateway).chat.completions.create(
                        model="pipeline:chat", messages=user("hi"), stream=stream
                    )
                assert caught.value.status_code == 503
                assert caught.value.code == "gateway_paused"
            # Plain models are not runs: they still answer.
            assert sdk(gateway).chat.completions.create(model="echo", messages=user("x")).choices
        finally:
            assert client.post("/gateway/resume").status_code == 200
    assert run_ids(gateway) == before


def test_input_that_fails_the_pipeline_schema_is_422_naming_the_field(gateway):
    before = run_ids(gateway)
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        sdk(gateway).chat.completions.create(
            model="pipeline:typed", messages=user("far more than twenty characters")
        )
    assert caught.value.code == "validation_failed"
    assert caught.value.param == "input.messages.0.content"
    assert "input.messages.0.content" in caught.value.message
    assert run_ids(gateway) == before
    ok = sdk(gateway).chat.completions.create(model="pipeline:typed", messages=user("short"))
    assert ok.choices[0].message.content == "fits"


def test_tools_are_refused_for_pipeline_models(gateway):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(gateway).chat.completions.create(
            model="pipeline:chat",
            messages=user("hi"),
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
        )
    assert caught.value.code == "unsupported_parameter" and caught.value.param == "tools"


def test_a_run_that_waits_for_approval_is_a_409_naming_the_run(gateway):
    with pytest.raises(openai.ConflictError) as caught:
        sdk(gateway).chat.completions.create(model="pipeline:gated", messages=user("hi"))
    assert caught.value.code == "pipeline_run_waiting"
    [run_id] = [r for r in run_ids(gateway) if r in caught.value.message]
    assert f"/runs/{run_id}/approve" in caught.value.message
    record = run(gateway, run_id)
    assert record["status"] == "waiting" and record["waiting_for"]["type"] == "approval"
    with http(gateway) as client:
        assert client.post(f"/runs/{run_id}/approve", json={}).status_code == 200
    deadline = time.monotonic() + 15
    while run(gateway, run_id)["status"] != "completed" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run(gateway, run_id)["output"] == "approved"


def test_a_breakpoint_pauses_the_run_and_the_call_says_so(gateway):
    with http(gateway) as client:
        added = client.post("/debug/breakpoints", json={"step_id": "answer", "pipeline_id": "chat"})
        assert added.status_code == 201
        try:
            with pytest.raises(openai.ConflictError) as caught:
                sdk(gateway).chat.completions.create(model="pipeline:chat", messages=user("bp"))
            assert caught.value.code == "pipeline_run_paused"
            paused = client.get("/debug/runs").json()["runs"]
            [record] = [r for r in paused if r["id"] in caught.value.message]
            assert record["paused_at"] == "answer"
        finally:
            client.delete("/debug/breakpoints/answer")
        client.post(f"/debug/runs/{record['id']}/release")


def test_a_failed_run_is_a_502_naming_the_run(gateway):
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(gateway).chat.completions.create(model="pipeline:failing", messages=user("hi"))
    assert caught.value.status_code == 502
    assert caught.value.code == "pipeline_run_failed"
    assert "ZeroDivisionError" in caught.value.message
    [run_id] = [r for r in run_ids(gateway) if r in caught.value.message]
    assert run(gateway, run_id)["status"] == "failed"


# -- configuration ----------------------------------------------------------------------------


async def test_without_the_pipelines_plugin_no_pipeline_model_exists(make_settings):
    settings = make_settings(
        plugins={"pipelines": {"enabled": False}, "openai_compat": {"pipeline_models": ["chat"]}}
    )
    async with running_app(settings) as (_app, client):
        listing = await (await client.get("/v1/models", headers=ADMIN)).get_json()
        assert [m["id"] for m in listing["data"]] == ["echo"]
        answer = await client.post(
            "/v1/chat/completions",
            json={"model": "pipeline:chat", "messages": user("hi")},
            headers=ADMIN,
        )
        assert answer.status_code == 404
        assert (await answer.get_json())["error"]["code"] == "model_not_found"


async def test_shipped_echo_chat_example_is_a_model_once_listed(make_settings):
    settings = make_settings(plugins={"openai_compat": {"pipeline_models": ["echo-chat"]}})
    async with running_app(settings) as (_app, client):
        answer = await client.post(
            "/v1/chat/completions",
            json={"model": "pipeline:echo-chat", "messages": user("ping")},
            headers=READER,
        )
        assert answer.status_code == 403  # the reader lacks allow_pipeline_run
        answer = await client.post(
            "/v1/chat/completions",
            json={"model": "pipeline:echo-chat", "messages": user("ping")},
            headers=ADMIN,
        )
        assert answer.status_code == 200, await answer.get_data()
        body = await answer.get_json()
        assert body["choices"][0]["message"]["content"] == "echo: ping"
        assert body["gateway_run_id"] == body["id"].removeprefix("chatcmpl-")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"plugins": {"openai_compat": {"pipeline_models": "chat"}}}, "must be a list"),
        (
            {"plugins": {"openai_compat": {"pipeline_models": ["pipeline:chat"]}}},
            "without the 'pipeline:' prefix",
        ),
        ({"models": {"pipeline:x": {"provider": "echo"}}}, "reserved for pipelines"),
    ],
)
async def test_bad_pipeline_models_config_is_refused_naming_the_key(make_settings, config, message):
    async with running_app(make_settings()) as (_app, client):
        answer = await client.patch("/gateway/config", json=config, headers=ADMIN)
        assert answer.status_code == 400, await answer.get_data()
        error = (await answer.get_json())["error"]
        assert error["code"] == "config_invalid" and message in error["message"]
        shown = await (await client.get("/gateway/config", headers=ADMIN)).get_json()
        assert shown["config"]["plugins"] == {} and "models" not in shown["config"]
        assert shown["sources"]["overrides_present"] is False  # nothing was written
