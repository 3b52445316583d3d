"""The third-party example ``examples/wordplay_plugin``: it adds a model provider, a
pipeline step kind (with a pipeline) and a route, importing nothing but ``host.api`` and
the two plugins' contract modules (``tests/test_plugin_api.py`` walks its imports), and
each works through HTTP."""

from __future__ import annotations

import asyncio
import importlib
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import ADMIN, READER, running_app

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "wordplay_plugin"


@pytest.fixture(scope="module")
def wordplay() -> ModuleType:
    """The example's package, imported as an installed plugin would be."""
    if str(EXAMPLE) not in sys.path:
        sys.path.insert(0, str(EXAMPLE))
    return importlib.import_module("gateway_wordplay")


@pytest.fixture
def settings(make_settings: Any) -> Any:
    return make_settings(
        models={"backwards": {"provider": "reverse"}},
        plugins={"pipelines": {"poll_seconds": 0.05}},
    )


async def wait_finished(client: Any, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while True:
        record: dict[str, Any] = await (
            await client.get(f"/runs/{run_id}", headers=ADMIN)
        ).get_json()
        if record["status"] in ("completed", "failed", "cancelled") or time.monotonic() > deadline:
            return record
        await asyncio.sleep(0.02)


async def test_the_example_provider_answers_chat_completions(settings, wordplay):
    async with running_app(settings, extra_plugins=[("wordplay", wordplay)]) as (_, client):
        models = await (await client.get("/v1/models", headers=READER)).get_json()
        listed = {m["id"]: m["owned_by"] for m in models["data"]}
        assert listed["backwards"] == "agent-gateway:reverse"

        body = {"model": "backwards", "messages": [{"role": "user", "content": "one two three"}]}
        answer = await client.post("/v1/chat/completions", json=body, headers=READER)
        assert answer.status_code == 200
        assert (await answer.get_json())["choices"][0]["message"]["content"] == "three two one"

        empty = {"model": "backwards", "messages": [{"role": "user", "content": "  "}]}
        refused = await client.post("/v1/chat/completions", json=empty, headers=READER)
        assert refused.status_code == 400
        assert "needs a user message" in (await refused.get_json())["error"]["message"]


async def test_the_example_step_kind_runs_in_its_pipeline(settings, wordplay):
    async with running_app(settings, extra_plugins=[("wordplay", wordplay)]) as (_, client):
        described = await client.get("/pipelines/count-words", headers=READER)
        assert (await described.get_json())["steps"][0]["kind"] == "word_count"
        started = await client.post(
            "/pipelines/count-words/start",
            json={"input": {"text": "a rose is a rose"}},
            headers=ADMIN,
        )
        assert started.status_code == 202
        record = await wait_finished(client, (await started.get_json())["runId"])
        assert record["status"] == "completed", record
        assert record["output"] == {"words": 5}

        plugins = await (await client.get("/gateway/plugins", headers=ADMIN)).get_json()
        assert plugins["registrations"]["wordplay"] == {
            "providers": ["reverse"],
            "step_kinds": ["word_count"],
            "pipelines": ["count-words"],
            "routes": ["POST /wordplay/reverse-count"],
        }


async def test_the_example_route_uses_both_plugins_services(settings, wordplay):
    async with running_app(settings, extra_plugins=[("wordplay", wordplay)]) as (_, client):
        answer = await client.post(
            "/wordplay/reverse-count", json={"text": "to be or not"}, headers=ADMIN
        )
        assert answer.status_code == 200
        body = await answer.get_json()
        assert body["reversed"] == "not or be to"
        assert body["words"] == 4
        run = await (await client.get(f"/runs/{body['run_id']}", headers=ADMIN)).get_json()
        assert run["pipeline_id"] == "count-words"
        assert run["status"] == "completed"

        # The run is started as the caller: without the run gate, no run.
        denied = await client.post("/wordplay/reverse-count", json={"text": "hi"}, headers=READER)
        assert denied.status_code == 403
        assert (await denied.get_json())["error"]["code"] == "policy_gate_denied"
        bad = await client.post("/wordplay/reverse-count", json={"text": ""}, headers=ADMIN)
        assert bad.status_code == 400
        assert "text" in (await bad.get_json())["error"]["message"]
        anonymous = await client.post("/wordplay/reverse-count", json={"text": "hi"})
        assert anonymous.status_code == 401


async def test_the_example_starts_without_the_pipelines_plugin(make_settings, wordplay):
    # Its step kind and pipeline hooks are left uncalled; its route says what is missing.
    settings = make_settings(
        models={"backwards": {"provider": "reverse"}},
        plugins={"pipelines": {"enabled": False}},
    )
    async with running_app(settings, extra_plugins=[("wordplay", wordplay)]) as (_, client):
        body = {"model": "backwards", "messages": [{"role": "user", "content": "still here"}]}
        answer = await client.post("/v1/chat/completions", json=body, headers=READER)
        assert (await answer.get_json())["choices"][0]["message"]["content"] == "here still"
        missing = await client.post("/wordplay/reverse-count", json={"text": "hi"}, headers=ADMIN)
        assert missing.status_code == 503
        error = (await missing.get_json())["error"]
        assert error["code"] == "service_unavailable"
        assert "plugin 'pipelines', which is not loaded" in error["message"]
