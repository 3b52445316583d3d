"""Pipeline ``llm`` steps are the run owner's model calls: its ``models`` list and
budgets apply before the provider is called, and their tokens count in its usage
(``GET /gateway/usage``, metrics), on both stores, against the fake upstream."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ADMIN, bearer, db_rows, metric, running_app
from tests.fake_openai_upstream import KEY_ENV, FakeUpstream, models_config
from tests.pipelines_fixtures import write_pipelines

pytestmark = pytest.mark.usefixtures("store_url")

LIMITED_TOKEN = "test-limited-token-0123456789"
SPENDER_TOKEN = "test-spender-token-0123456789"
LIMITED = bearer(LIMITED_TOKEN)
SPENDER = bearer(SPENDER_TOKEN)
RUNNER_GATES = ["allow_pipeline_run"]

PIPELINES = """
from plugins.pipelines.definition import Pipeline, llm

ASK_TEST = Pipeline(id="ask-test", steps=[llm("ask", "gpt-test", prompt="hello")])
ASK_SLOW = Pipeline(id="ask-slow", steps=[llm("ask", "gpt-slow", prompt="hello")])
"""


@pytest.fixture(autouse=True)
def _upstream_key(monkeypatch: pytest.MonkeyPatch, upstream: FakeUpstream) -> None:
    monkeypatch.setenv(KEY_ENV, upstream.api_key)


def settings_for(make_settings: Any, tmp_path: Path, upstream: FakeUpstream) -> Any:
    directory = write_pipelines(tmp_path, "asks", PIPELINES)
    return make_settings(
        models=models_config(upstream),
        auth={
            "tokens": {
                "limited": {"token": LIMITED_TOKEN, "models": ["gpt-test"], "gates": RUNNER_GATES},
                # One call of gpt-test spends 11 tokens: the second is over the budget.
                "spender": {
                    "token": SPENDER_TOKEN,
                    "budgets": {"tokens_per_day": 5},
                    "gates": RUNNER_GATES,
                },
            }
        },
        plugins={
            "pipelines": {"directory": str(directory), "poll_seconds": 0.05},
            "openai_compat": {"usage_flush_seconds": 0.05},
        },
    )


async def run(client: Any, pipeline: str, headers: dict[str, str]) -> dict[str, Any]:
    """The finished run of ``pipeline`` started by the caller of ``headers``."""
    answer = await client.post(f"/pipelines/{pipeline}/run", json={"input": {}}, headers=headers)
    body = await answer.get_json()
    assert answer.status_code == 200, body
    return dict(body)


async def test_an_llm_step_of_a_model_the_owner_may_not_use_fails_before_the_upstream(
    make_settings, tmp_path, upstream, store_url
):
    async with running_app(settings_for(make_settings, tmp_path, upstream)) as (_, client):
        refused = await run(client, "ask-slow", LIMITED)
        assert refused["status"] == "failed"
        message = refused["error"]["message"]
        assert "model_not_allowed" in message and "token:limited" in message, message
        assert upstream.bodies() == []  # the provider was never called
        # Not retried, and nothing counted for the owner.
        assert [s["attempts"] for s in refused["steps"]] == [1]

        allowed = await run(client, "ask-test", LIMITED)
        assert allowed["status"] == "completed", allowed
        # The admin (no models list) may run the other one; the slow model answers at
        # once when released (unreleased, it held its last delta for 15 s).
        upstream.release.set()
        assert (await run(client, "ask-slow", ADMIN))["status"] == "completed"


async def test_llm_step_tokens_count_in_the_owners_usage_and_its_budget(
    make_settings, tmp_path, upstream, store_url
):
    async with running_app(settings_for(make_settings, tmp_path, upstream)) as (_, client):
        first = await run(client, "ask-test", SPENDER)
        assert first["status"] == "completed", first
        assert first["steps"][0]["output"]["usage"]["total_tokens"] == 11

        # Written within usage_flush_seconds of the stream's end.
        deadline = time.monotonic() + 10
        while True:
            own = await (await client.get("/gateway/usage", headers=SPENDER)).get_json()
            if own["data"] or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        found = [
            (r["principal"], r["model"], r["requests"], r["total_tokens"]) for r in own["data"]
        ]
        assert found == [("token:spender", "gpt-test", 1, 11)]
        today = time.strftime("%Y-%m-%d", time.gmtime())
        assert await db_rows(
            store_url,
            "SELECT principal, model, day, requests, input_tokens, output_tokens FROM openai_usage",
        ) == [("token:spender", "gpt-test", today, 1, 7, 4)]
        assert (
            await metric(client, "gateway_llm_principal_requests_total", principal="token:spender")
            == 1
        )

        # The day's budget (5 tokens) is spent: the next step is refused before the
        # provider is called, and the run fails naming the budget.
        calls = len(upstream.bodies())
        refused = await run(client, "ask-test", SPENDER)
        assert refused["status"] == "failed"
        message = refused["error"]["message"]
        assert "budget_exceeded" in message and "tokens_per_day" in message, message
        assert len(upstream.bodies()) == calls
        assert [s["attempts"] for s in refused["steps"]] == [1]
