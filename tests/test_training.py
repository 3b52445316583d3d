"""The training plugin through HTTP: rollouts recorded from real pipeline runs and
Responses conversations, feedback, the stored and audited collection settings, exports
read back and checked against OpenAI's fine-tuning chat format, and trainer plugins."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from host.api import Verdict, hookimpl
from tests.conftest import ADMIN, READER, assert_error, bearer, db_rows, running_app
from tests.pipelines_fixtures import write_pipelines

pytestmark = pytest.mark.usefixtures("store_url")

SOURCE = """
from plugins.pipelines.definition import Pipeline, code

def boom(ctx):
    raise ValueError("the disk is full")

ECHO = Pipeline(id="echo", steps=[
    code("say", lambda c: {"said": c.input.get("text"), "api_key": "sk-live-123"}),
    code("count", lambda c: {"n": len(str(c.input))}),
])
FAILS = Pipeline(id="fails", steps=[code("prepare", lambda c: {"ok": True}), code("write", boom)])
"""

ALICE_TOKEN = "test-alice-token-0123456789"
BOB_TOKEN = "test-bob-token-0123456789"
ALICE = bearer(ALICE_TOKEN)
BOB = bearer(BOB_TOKEN)
USER_GATES = ["allow_pipeline_run", "allow_training_feedback"]
TOKENS = {
    "alice": {"token": ALICE_TOKEN, "gates": USER_GATES},
    "bob": {"token": BOB_TOKEN, "gates": [*USER_GATES, "allow_training_export"]},
}
NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def settings_for(make_settings: Any, tmp_path: Path, **training: Any) -> Any:
    directory = write_pipelines(tmp_path, "training", SOURCE)
    return make_settings(
        auth={"tokens": TOKENS},
        plugins={
            "pipelines": {"directory": str(directory), "poll_seconds": 0.05},
            "training": {"collect": True, **training},
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


async def start(client: Any, pipeline: str, headers: dict[str, str], text: str = "hi") -> str:
    response = await client.post(
        f"/pipelines/{pipeline}/start", json={"input": {"text": text}}, headers=headers
    )
    assert response.status_code == 202, await response.get_data(as_text=True)
    return str((await response.get_json())["runId"])


async def finished_run(client: Any, run_id: str) -> None:
    async def ended() -> bool:
        record = await (await client.get(f"/runs/{run_id}", headers=ADMIN)).get_json()
        return bool(record["status"] in ("completed", "failed", "cancelled"))

    await until(ended, f"run {run_id} to end")


async def finished(client: Any, run_id: str) -> None:
    """The run ended and the collector has taken everything queued so far."""
    await finished_run(client, run_id)

    async def drained() -> bool:
        status = await (await client.get("/gateway/training/status", headers=ADMIN)).get_json()
        return bool(status["queue"]["pending"] == 0)

    await until(drained, "the recording queue to drain")


async def rollouts(client: Any, query: str = "", headers: dict[str, str] = ADMIN) -> list[Any]:
    response = await client.get(f"/gateway/training/rollouts{query}", headers=headers)
    assert response.status_code == 200, await response.get_data(as_text=True)
    found: list[Any] = (await response.get_json())["rollouts"]
    return found


async def rollout_of_run(client: Any, run_id: str) -> dict[str, Any]:
    async def found() -> Any:
        return (await rollouts(client, f"?run_id={run_id}")) or None

    return dict((await until(found, f"the rollout of run {run_id}"))[0])


async def stream_events(store_url: str, stream: str = "training") -> list[tuple[str, Any]]:
    rows = await db_rows(
        store_url, f"SELECT type, data FROM gateway_events WHERE stream = '{stream}' ORDER BY seq"
    )
    return [(t, d if isinstance(d, dict) else json.loads(d)) for t, d in rows]


def check_fine_tuning_line(line: dict[str, Any]) -> None:
    """OpenAI's chat fine-tuning format, checked here independently of the plugin."""
    assert set(line) <= {"messages", "tools", "parallel_tool_calls"}
    messages = line["messages"]
    assert isinstance(messages, list) and messages
    assert any(m["role"] == "assistant" for m in messages)
    called: set[str] = set()
    for message in messages:
        assert message["role"] in {"system", "developer", "user", "assistant", "tool"}
        if message["role"] == "assistant" and message.get("tool_calls"):
            for call in message["tool_calls"]:
                assert call["type"] == "function" and isinstance(call["id"], str)
                assert NAME.match(call["function"]["name"])
                json.loads(call["function"]["arguments"])
                called.add(call["id"])
        elif message["role"] == "tool":
            assert message["tool_call_id"] in called
            assert isinstance(message["content"], str)
        else:
            assert isinstance(message["content"], str)
    for tool in line.get("tools", []):
        assert tool["type"] == "function" and NAME.match(tool["function"]["name"])
        assert tool["function"]["parameters"]["type"] == "object"


# -- rollouts from runs ---------------------------------------------------------------


async def test_finished_runs_are_recorded_with_trajectory_outcome_and_redacted_keys(
    make_settings, tmp_path, store_url
):
    async with running_app(settings_for(make_settings, tmp_path)) as (_, client):
        ok = await start(client, "echo", ALICE, "hello")
        failed = await start(client, "fails", ALICE)
        done = await rollout_of_run(client, ok)
        broken = await rollout_of_run(client, failed)
    assert done["source"] == "runs" and done["pipeline_id"] == "echo"
    assert done["outcome"] == "completed" and done["owner"] == "token:alice"
    assert done["model"] == "pipeline:echo"
    roles = [m["role"] for m in done["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert json.loads(done["messages"][1]["content"]) == {"text": "hello"}
    assert [t["function"]["name"] for t in done["tools"]] == ["say", "count"]
    # The step output's api_key never reaches the store.
    said = json.loads(done["messages"][3]["content"])
    assert said == {"said": "hello", "api_key": "[REDACTED]"}
    assert done["redactions"] >= 1
    assert "sk-live-123" not in json.dumps(done)
    rows = await db_rows(store_url, "SELECT messages FROM training_rollouts")
    assert rows and all("sk-live-123" not in str(r[0]) for r in rows)
    assert broken["outcome"] == "failed"
    assert "the disk is full" in broken["messages"][-1]["content"]
    assert [s["status"] for s in broken["details"]["steps"]] == ["completed", "failed"]
    check_fine_tuning_line({"messages": done["messages"], "tools": done["tools"]})


async def test_nothing_is_recorded_while_collection_is_off_or_sampled_out(
    make_settings, tmp_path, store_url
):
    settings = settings_for(make_settings, tmp_path, collect=False)
    async with running_app(settings) as (_, client):
        off = await start(client, "echo", ALICE)
        await finished(client, off)
        patched = await client.patch(
            "/gateway/training/config", json={"enabled": True, "sample_rate": 0}, headers=ADMIN
        )
        assert patched.status_code == 200
        sampled = await start(client, "echo", ALICE)
        await finished(client, sampled)
        patched = await client.patch(
            "/gateway/training/config", json={"sample_rate": 1}, headers=ADMIN
        )
        assert patched.status_code == 200
        on = await start(client, "echo", ALICE)
        await rollout_of_run(client, on)
        status = await (await client.get("/gateway/training/status", headers=ADMIN)).get_json()
    assert status["queue"]["sampled_out"] == 1
    recorded = await db_rows(store_url, "SELECT run_id FROM training_rollouts")
    assert [r[0] for r in recorded] == [on]
    assert off != sampled


# -- rollouts from Responses conversations ----------------------------------------------


async def test_a_responses_conversation_is_one_rollout_that_grows_turn_by_turn(
    make_settings, tmp_path, store_url
):
    async with running_app(settings_for(make_settings, tmp_path)) as (_, client):
        first = await client.post(
            "/v1/responses",
            json={"model": "echo", "input": "first question", "instructions": "be brief"},
            headers=ALICE,
        )
        assert first.status_code == 200
        first_id = (await first.get_json())["id"]
        second = await client.post(
            "/v1/responses",
            json={"model": "echo", "input": "second question", "previous_response_id": first_id},
            headers=ALICE,
        )
        assert second.status_code == 200
        second_id = (await second.get_json())["id"]

        async def grown() -> Any:
            found = await rollouts(client, "?source=responses", ALICE)
            return found if found and found[0]["turns"] == 2 else None

        (rollout,) = await until(grown, "the second turn")
        assert await rollouts(client, "?source=responses", BOB) == []
    assert rollout["response_id"] == second_id and rollout["session_key"] == first_id
    assert rollout["owner"] == "token:alice" and rollout["model"] == "echo"
    contents = [(m["role"], m["content"]) for m in rollout["messages"]]
    assert contents[0] == ("system", "be brief")
    assert contents[1] == ("user", "first question")
    assert contents[2][0] == "assistant" and "first question" in contents[2][1]
    assert contents[3] == ("user", "second question")
    assert contents[4][0] == "assistant" and len(contents) == 5
    assert [t["response_id"] for t in rollout["details"]["turns"]] == [first_id, second_id]
    check_fine_tuning_line({"messages": rollout["messages"]})
    rows = await db_rows(store_url, "SELECT source, turns FROM training_rollouts")
    assert rows == [("responses", 2)]


class TrainingRedactor:
    """Redacts a phrase only where the training plugin scans (stage training)."""

    @hookimpl
    def gateway_register_safety_scanners(self, register: Any) -> None:
        register("training-words", self)

    async def scan(self, text: str, *, direction: str, context: dict[str, Any]) -> Any:
        if context.get("stage") == "training" and "4111-1111" in text:
            return Verdict("redact", text.replace("4111-1111", "[CARD]"), "card number")
        return None


async def test_texts_pass_the_safety_scanners_and_the_redacted_text_is_stored(
    make_settings, tmp_path, store_url
):
    settings = settings_for(make_settings, tmp_path)
    plugins = [("redactor", TrainingRedactor())]
    async with running_app(settings, extra_plugins=plugins) as (_, client):
        answer = await client.post(
            "/v1/responses", json={"model": "echo", "input": "card 4111-1111 ok"}, headers=ALICE
        )
        assert answer.status_code == 200
        assert "4111-1111" in json.dumps(await answer.get_json())  # the client's answer

        async def found() -> Any:
            return await rollouts(client, "?source=responses")

        (rollout,) = await until(found, "the conversation's rollout")
    assert rollout["messages"][0]["content"] == "card [CARD] ok"
    assert rollout["redactions"] == 2  # the question and the echoed answer
    assert "4111-1111" not in json.dumps(rollout)
    rows = await db_rows(store_url, "SELECT messages FROM training_rollouts")
    assert "4111-1111" not in str(rows)
    safety = await stream_events(store_url, "safety")
    assert any(data.get("stage") == "training" for _, data in safety)


# -- feedback -------------------------------------------------------------------------


async def test_feedback_is_added_later_by_the_owner_and_refused_to_others(
    make_settings, tmp_path, store_url
):
    async with running_app(settings_for(make_settings, tmp_path)) as (_, client):
        run_id = await start(client, "echo", ALICE)
        rollout = await rollout_of_run(client, run_id)
        url = f"/gateway/training/rollouts/{rollout['id']}/feedback"
        rated = await client.post(
            url, json={"reward": 0.75, "label": "good", "comment": "clean"}, headers=ALICE
        )
        assert rated.status_code == 200, await rated.get_data(as_text=True)
        body = await rated.get_json()
        assert body["reward"] == 0.75
        assert body["feedback"]["label"] == "good" and body["feedback"]["by"] == "alice"
        # Bob cannot see Alice's rollout: 404 on the rollout and on its feedback.
        assert_error(
            await (await client.post(url, json={"reward": 1}, headers=BOB)).get_json(),
            "rollout_not_found",
        )
        seen = await client.get(f"/gateway/training/rollouts/{rollout['id']}", headers=BOB)
        assert seen.status_code == 404
        # The reader token lacks the feedback gate; bad bodies are 400 and change nothing.
        assert (await client.post(url, json={"reward": 1}, headers=READER)).status_code == 403
        for bad, param in (({}, None), ({"reward": "high"}, "reward"), ({"label": "meh"}, "label")):
            refused = await client.post(url, json=bad, headers=ALICE)
            assert refused.status_code == 400
            error = assert_error(await refused.get_json(), "invalid_request_body")
            assert param is None or param in error["message"]
        missing = await client.post(
            "/gateway/training/rollouts/ro_nope/feedback", json={"reward": 1}, headers=ADMIN
        )
        assert missing.status_code == 404
        rated_list = await rollouts(client, "?has_feedback=true&label=good", ALICE)
        assert [r["id"] for r in rated_list] == [rollout["id"]]
        assert await rollouts(client, "?label=bad", ALICE) == []
    rows = await db_rows(store_url, "SELECT reward FROM training_rollouts")
    assert rows == [(0.75,)]


# -- the collection settings ------------------------------------------------------------


async def test_config_patch_is_stored_audited_and_validated(make_settings, tmp_path, store_url):
    async with running_app(settings_for(make_settings, tmp_path)) as (_, client):
        patched = await client.patch(
            "/gateway/training/config",
            json={"sample_rate": 0.5, "redact_keys": ["SSN"], "export_batch_size": 2},
            headers=ADMIN,
        )
        assert patched.status_code == 200, await patched.get_data(as_text=True)
        body = await patched.get_json()
        assert body["config"]["sample_rate"] == 0.5 and body["config"]["redact_keys"] == ["ssn"]
        assert body["changed"] == ["export_batch_size", "redact_keys", "sample_rate"]
        assert body["updated_by"] == "admin"
        for bad in (
            {"sample_rate": 2},
            {"enabled": "yes"},
            {"sources": ["email"]},
            {"export_batch_size": 0},
            {"export_dir": "/tmp"},  # only the file may say where datasets go
            {},
        ):
            refused = await client.patch("/gateway/training/config", json=bad, headers=ADMIN)
            assert refused.status_code == 400, bad
            assert_error(await refused.get_json(), "invalid_request_body")
        denied = await client.patch(
            "/gateway/training/config", json={"enabled": False}, headers=ALICE
        )
        assert denied.status_code == 403
        assert_error(await denied.get_json(), "policy_gate_denied")
        status = await (await client.get("/gateway/training/status", headers=READER)).get_json()
        assert status["config"]["sample_rate"] == 0.5 and status["collecting"] is True
    stored = await db_rows(store_url, "SELECT value, updated_by FROM training_settings")
    assert len(stored) == 1 and stored[0][1] == "admin"
    value = stored[0][0] if isinstance(stored[0][0], dict) else json.loads(stored[0][0])
    assert value == {"sample_rate": 0.5, "redact_keys": ["ssn"], "export_batch_size": 2}
    (event,) = [d for t, d in await stream_events(store_url) if t == "training.config.updated"]
    assert event["audit"] == {
        "action": "training.config.update",
        "target": "training.config",
        "outcome": "succeeded",
        "reason_code": None,
    }


async def test_stored_settings_outlive_a_restart_and_win_over_the_file(
    make_settings, tmp_path, store_url
):
    settings = settings_for(make_settings, tmp_path)
    async with running_app(settings) as (_, client):
        patched = await client.patch(
            "/gateway/training/config", json={"enabled": False}, headers=ADMIN
        )
        assert patched.status_code == 200
    async with running_app(settings) as (_, client):
        status = await (await client.get("/gateway/training/status", headers=ADMIN)).get_json()
    assert status["collecting"] is False


# -- exports ----------------------------------------------------------------------------


class Trainer:
    def __init__(self, fail_at: int | None = None) -> None:
        self.batches: list[tuple[int, bool, list[dict[str, Any]]]] = []
        self.fail_at = fail_at

    @hookimpl
    async def gateway_training_batch(
        self, app: Any, export: dict[str, Any], batch: list[dict[str, Any]], index: int, last: bool
    ) -> None:
        if index == self.fail_at:
            raise RuntimeError("the trainer's queue is gone")
        self.batches.append((index, last, batch))


async def recorded_runs(client: Any, count: int, headers: dict[str, str] = BOB) -> list[str]:
    ids = [await start(client, "echo", headers, f"text {i}") for i in range(count)]
    for run_id in ids:
        await rollout_of_run(client, run_id)
    return ids


async def test_gateway_training_batch_gets_every_batch_and_the_export_reads_back_valid(
    make_settings, tmp_path, store_url
):
    trainer = Trainer()
    settings = settings_for(make_settings, tmp_path, export_batch_size=2)
    async with running_app(settings, extra_plugins=[("trainer", trainer)]) as (_, client):
        await recorded_runs(client, 5)
        await start(client, "echo", ALICE)  # not Bob's: not in his export
        answered = await client.post(
            "/gateway/training/exports", json={"source": "runs"}, headers=BOB
        )
        assert answered.status_code == 201, await answered.get_data(as_text=True)
        export = await answered.get_json()
        listed = await (await client.get("/gateway/training/exports", headers=BOB)).get_json()
        theirs = await (await client.get("/gateway/training/exports", headers=ALICE)).get_json()
        status = await (await client.get("/gateway/training/status", headers=BOB)).get_json()
    assert export["status"] == "completed" and export["rollouts"] == 5
    assert export["batches"] == 3 and export["skipped"] == 0
    path = Path(export["file"])
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 5 and path.stat().st_size == export["bytes"]
    for line in lines:
        check_fine_tuning_line(line)
        assert line["messages"][-1]["role"] == "assistant"
    assert [(i, last, len(b)) for i, last, b in trainer.batches] == [
        (0, False, 2),
        (1, False, 2),
        (2, True, 1),
    ]
    assert [item["line"] for _, _, b in trainer.batches for item in b] == lines
    assert [e["id"] for e in listed["exports"]] == [export["id"]] and theirs["exports"] == []
    assert status["last_export"]["id"] == export["id"] and status["trainers"] == ["trainer"]
    assert status["counts"]["total"] == 5  # Bob's own
    (done,) = [d for t, d in await stream_events(store_url) if t == "training.export.completed"]
    assert done["audit"]["action"] == "training.export"
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    rows = await db_rows(store_url, "SELECT status, rollouts FROM training_exports")
    assert rows == [("completed", 5)]


async def test_an_export_failing_half_way_leaves_no_partial_dataset(
    make_settings, tmp_path, store_url
):
    trainer = Trainer(fail_at=1)
    settings = settings_for(make_settings, tmp_path, export_batch_size=2)
    async with running_app(settings, extra_plugins=[("trainer", trainer)]) as (app, client):
        await recorded_runs(client, 5)
        answered = await client.post("/gateway/training/exports", json={}, headers=BOB)
        assert answered.status_code == 500
        error = assert_error(await answered.get_json(), "export_failed")
        assert "the trainer's queue is gone" in error["message"]
        assert "trainer" in error["message"]
        listed = await (await client.get("/gateway/training/exports", headers=BOB)).get_json()
        export_dir = app.extensions["gateway"].settings.state_dir / "training" / "exports"
    # Batch 0 was handed over, batch 1 failed: no file, no temporary file, no last batch.
    assert [(i, last) for i, last, _ in trainer.batches] == [(0, False)]
    assert list(export_dir.iterdir()) == []
    (failed,) = listed["exports"]
    assert failed["status"] == "failed" and failed["file"] is None
    (event,) = [d for t, d in await stream_events(store_url) if t == "training.export.failed"]
    assert event["audit"]["outcome"] == "failed"
    rows = await db_rows(store_url, "SELECT status FROM training_exports")
    assert rows == [("failed",)]


async def test_export_refusals_write_nothing(make_settings, tmp_path, store_url):
    async with running_app(settings_for(make_settings, tmp_path)) as (app, client):
        denied = await client.post("/gateway/training/exports", json={}, headers=ALICE)
        assert denied.status_code == 403
        empty = await client.post("/gateway/training/exports", json={}, headers=BOB)
        assert empty.status_code == 422
        assert_error(await empty.get_json(), "no_rollouts")
        bad = await client.post("/gateway/training/exports", json={"limit": 0}, headers=BOB)
        assert bad.status_code == 400
        unknown = await client.post("/gateway/training/exports", json={"x": 1}, headers=BOB)
        assert unknown.status_code == 400
        export_dir = app.extensions["gateway"].settings.state_dir / "training" / "exports"
    assert not export_dir.exists() or list(export_dir.iterdir()) == []
    assert await db_rows(store_url, "SELECT id FROM training_exports") == []


async def test_rollout_listing_pages_and_filters_and_rejects_bad_queries(
    make_settings, tmp_path, store_url
):
    async with running_app(settings_for(make_settings, tmp_path)) as (_, client):
        ids = await recorded_runs(client, 3)
        failed = await start(client, "fails", BOB)
        await rollout_of_run(client, failed)
        page = await (
            await client.get("/gateway/training/rollouts?limit=2&source=runs", headers=BOB)
        ).get_json()
        rest = await rollouts(client, f"?limit=2&source=runs&before={page['next_before']}", BOB)
        only_failed = await rollouts(client, "?outcome=failed", BOB)
        bad = await client.get("/gateway/training/rollouts?limit=0", headers=BOB)
        assert bad.status_code == 400
        worse = await client.get("/gateway/training/rollouts?outcome=odd", headers=BOB)
        assert worse.status_code == 400
    seen = [r["run_id"] for r in page["rollouts"]] + [r["run_id"] for r in rest]
    assert sorted(seen) == sorted([failed, *ids]) and len(page["rollouts"]) == 2
    assert [r["run_id"] for r in only_failed] == [failed]


async def test_a_bad_training_or_cortex_section_is_refused_naming_the_key(make_settings, tmp_path):
    async with running_app(settings_for(make_settings, tmp_path)) as (app, client):
        for patch, key in (
            ({"training": {"sample_rate": 3}}, "plugins.training.sample_rate"),
            ({"training": {"collect": "often"}}, "plugins.training.collect"),
            ({"training": {"exports": 1}}, "plugins.training.exports"),
            ({"cortex": {"max_tool_rounds": 0}}, "plugins.cortex.max_tool_rounds"),
        ):
            refused = await client.patch("/gateway/config", json={"plugins": patch}, headers=ADMIN)
            assert refused.status_code == 400, patch
            assert key in assert_error(await refused.get_json(), "config_invalid")["message"]
        overrides = app.extensions["gateway"].settings.overrides_path
    assert not overrides.exists()


async def test_rollouts_older_than_max_age_days_are_pruned_and_newer_ones_kept(
    make_settings, tmp_path, store_url
):
    settings = settings_for(make_settings, tmp_path, max_age_days=30)
    async with running_app(settings) as (app, client):
        run_id = await start(client, "echo", ALICE)
        await rollout_of_run(client, run_id)
        retention = app.extensions["gateway"].retention
        assert retention is not None
        soon = await retention.prune(now=int(time.time() * 1000) + 29 * 86_400_000)
        dry = await retention.prune(now=int(time.time() * 1000) + 31 * 86_400_000, dry_run=True)
        assert await db_rows(store_url, "SELECT count(*) FROM training_rollouts") == [(1,)]
        later = await retention.prune(now=int(time.time() * 1000) + 31 * 86_400_000)
    assert soon.removed["training"] == {"rollouts": 0}
    assert dry.removed["training"] == {"rollouts": 1}
    assert later.removed["training"] == {"rollouts": 1}
    assert await db_rows(store_url, "SELECT count(*) FROM training_rollouts") == [(0,)]


async def test_a_config_change_on_one_replica_applies_on_another_sharing_the_store(
    make_settings, tmp_path, store_url
):
    settings = settings_for(make_settings, tmp_path)
    async with running_app(settings) as (_, first), running_app(settings) as (_, second):
        patched = await first.patch(
            "/gateway/training/config", json={"sample_rate": 0.1}, headers=ADMIN
        )
        assert patched.status_code == 200

        async def applied() -> bool:
            status = await (await second.get("/gateway/training/status", headers=ADMIN)).get_json()
            return bool(status["config"]["sample_rate"] == 0.1)

        await until(applied, "the other replica to apply the change", timeout=10)


async def test_an_export_selects_by_label_and_limit(make_settings, tmp_path, store_url):
    async with running_app(settings_for(make_settings, tmp_path)) as (_, client):
        ids = await recorded_runs(client, 3)
        good = [(await rollout_of_run(client, run_id))["id"] for run_id in ids[:2]]
        for rollout_id in good:
            rated = await client.post(
                f"/gateway/training/rollouts/{rollout_id}/feedback",
                json={"label": "good", "reward": 1},
                headers=BOB,
            )
            assert rated.status_code == 200
        labelled = await client.post(
            "/gateway/training/exports", json={"label": "good"}, headers=BOB
        )
        limited = await client.post("/gateway/training/exports", json={"limit": 1}, headers=BOB)
        rewarded = await client.post(
            "/gateway/training/exports", json={"min_reward": 2}, headers=BOB
        )
    assert labelled.status_code == 201 and (await labelled.get_json())["rollouts"] == 2
    assert limited.status_code == 201 and (await limited.get_json())["rollouts"] == 1
    assert rewarded.status_code == 422  # nothing rated that high
    lines = Path((await labelled.get_json())["file"]).read_text().splitlines()
    assert len(lines) == 2


async def test_runs_finished_while_nobody_recorded_them_are_caught_up_at_start(
    make_settings, tmp_path, store_url
):
    directory = write_pipelines(tmp_path, "training", SOURCE)
    pipelines = {"directory": str(directory), "poll_seconds": 0.05}

    def settings(training: dict[str, Any]) -> Any:
        return make_settings(
            auth={"tokens": TOKENS}, plugins={"pipelines": pipelines, "training": training}
        )

    # A gateway without the training plugin finishes two runs: nothing records them.
    async with running_app(settings({"enabled": False})) as (_, client):
        missed = [await start(client, "echo", ALICE) for _ in range(2)]
        for run_id in missed:
            await finished_run(client, run_id)
    # The next start with collection on finds them in the store.
    async with running_app(settings({"collect": True})) as (_, client):
        for run_id in missed:
            assert (await rollout_of_run(client, run_id))["outcome"] == "completed"


async def test_the_catch_up_never_reaches_back_past_collection_being_turned_on(
    make_settings, tmp_path, store_url
):
    settings = settings_for(make_settings, tmp_path, collect=False)
    async with running_app(settings) as (_, client):
        before = await start(client, "echo", ALICE)
        await finished(client, before)
        patched = await client.patch(
            "/gateway/training/config", json={"enabled": True}, headers=ADMIN
        )
        assert patched.status_code == 200
    async with running_app(settings) as (_, client):
        after = await start(client, "echo", ALICE)
        await rollout_of_run(client, after)
        await finished(client, after)
    recorded = await db_rows(store_url, "SELECT run_id FROM training_rollouts")
    assert [r[0] for r in recorded] == [after]


async def test_rating_another_principals_rollout_needs_the_act_all_gate(
    make_settings, tmp_path, store_url
):
    reader_all = "test-trainer-reader-0123456789"
    rater_all = "test-trainer-rater-0123456789"
    tokens = {
        **TOKENS,
        "auditor": {
            "token": reader_all,
            "gates": ["allow_training_read_all", "allow_training_feedback"],
        },
        "curator": {
            "token": rater_all,
            "gates": [
                "allow_training_read_all",
                "allow_training_feedback",
                "allow_training_act_all",
            ],
        },
    }
    directory = write_pipelines(tmp_path, "training", SOURCE)
    settings = make_settings(
        auth={"tokens": tokens},
        plugins={
            "pipelines": {"directory": str(directory), "poll_seconds": 0.05},
            "training": {"collect": True},
        },
    )
    async with running_app(settings) as (_, client):
        rollout = await rollout_of_run(client, await start(client, "echo", ALICE))
        url = f"/gateway/training/rollouts/{rollout['id']}/feedback"
        seen = await client.get(
            f"/gateway/training/rollouts/{rollout['id']}", headers=bearer(reader_all)
        )
        assert seen.status_code == 200  # read-all reads it...
        refused = await client.post(url, json={"reward": -1}, headers=bearer(reader_all))
        assert refused.status_code == 403  # ...but may not rate it
        assert_error(await refused.get_json(), "policy_gate_denied")
        rated = await client.post(url, json={"label": "bad"}, headers=bearer(rater_all))
        assert rated.status_code == 200
        assert (await rated.get_json())["feedback"]["by"] == "curator"
    rows = await db_rows(store_url, "SELECT reward FROM training_rollouts")
    assert rows == [(None,)]
