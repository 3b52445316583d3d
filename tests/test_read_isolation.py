"""Read isolation: what a principal creates is its own. The contract test walks every GET
route of the URL map (and every WebSocket kind) as a token with no gates that owns
nothing, against a store seeded with another principal's runs (with input and output),
approvals, waits, a breakpoint-paused run, a webhook run, a pipeline-model run, a
schedule, a stored response and gateway events: each answer is 403, 404 or an empty list,
and never holds the other principal's data. A GET route added later is walked too; one
with a path parameter the seeding does not know fails until it is seeded here.

Then: read-all holders see everything, act-all holders act, ``*`` does both, owners see
and act on their own, and ownerless rows (from before owners) are left to read-all."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from host.api import context
from host.settings import build_settings, deep_merge, load_settings
from tests.agent_helpers import agent_config
from tests.conftest import (
    ADMIN,
    READER,
    base_config,
    bearer,
    db_execute,
    db_rows,
    running_app,
    store_section,
)
from tests.pipelines_fixtures import signed, write_pipelines

SECRET = "alice-secret-7f3a9c"  # in every input Alice sends
ALICE_NAME = "alice-7f3a9c"  # her token's name: in created_by, owner, config, events
ALICE_TOKEN = "test-alice-token-0123456789"
AUDITOR_TOKEN = "test-auditor-token-0123456789"
OPERATOR_TOKEN = "test-operator-token-0123456789"
PEEKER_TOKEN = "test-peeker-token-0123456789"
BLIND_TOKEN = "test-blind-token-0123456789"
STRANGER_TOKEN = "test-stranger-token-0123456789"


ALICE = bearer(ALICE_TOKEN)
AUDITOR = bearer(AUDITOR_TOKEN)  # every read-all gate, no act gate
OPERATOR = bearer(OPERATOR_TOKEN)  # reads and acts on every pipeline object
PEEKER = bearer(PEEKER_TOKEN)  # reads every run, may act only on its own
BLIND = bearer(BLIND_TOKEN)  # may act on every run, but reads only its own
STRANGER = bearer(STRANGER_TOKEN)  # opens agent and bridge sessions of its own

RUN_GATES = ["allow_pipeline_run", "allow_pipeline_approve"]
SESSION_GATES = ["allow_session_write", "allow_memory_write"]
AGENT_GATES = ["allow_agent_sessions", "allow_bridge_write"]
TOKENS = {
    ALICE_NAME: {
        "token": ALICE_TOKEN,
        "gates": [
            *RUN_GATES,
            *AGENT_GATES,
            "allow_gateway_control",
            *SESSION_GATES,
            "allow_training_export",
        ],
    },
    "auditor": {
        "token": AUDITOR_TOKEN,
        "gates": [
            "allow_pipeline_read_all",
            "allow_responses_read_all",
            "allow_session_read_all",
            "allow_usage_read_all",
            "allow_training_read_all",
            "allow_gateway_read",
            "allow_metrics_read",
            "allow_audit_read",
        ],
    },
    "operator": {
        "token": OPERATOR_TOKEN,
        "gates": [*RUN_GATES, "allow_pipeline_read_all", "allow_pipeline_act_all"],
    },
    "peeker": {"token": PEEKER_TOKEN, "gates": [*RUN_GATES, "allow_pipeline_read_all"]},
    "blind": {"token": BLIND_TOKEN, "gates": [*RUN_GATES, "allow_pipeline_act_all"]},
    "stranger": {"token": STRANGER_TOKEN, "gates": AGENT_GATES},
}

SOURCE = """
from plugins.pipelines.definition import Pipeline, approval, code, wait

ECHO = Pipeline(id="echo", steps=[code("say", lambda c: {"said": c.input})])
GATED = Pipeline(id="gated", steps=[approval("review", "ok?"), code("done", lambda c: 1)])
ASKS = Pipeline(id="asks", steps=[wait("reply"), code("done", lambda c: c.results)])
HELD = Pipeline(id="held", steps=[code("hold", lambda c: {"held": c.input})])
"""

# GET routes whose answer is not per owner (catalogs, liveness, public documents): they
# may list things, but never another principal's data.
SHARED = {
    "/health",
    "/openapi.json",
    "/gateway/auth/bootstrap",
    "/gateway/status",
    "/pipelines",
    "/pipelines/<pipeline_id>",
    "/v1/models",
    "/v1/models/<model_id>",
    "/triggers",  # manual and webhook triggers are configuration; schedules are filtered
    # The plugin names and per-bucket counts (counted over the caller's runs only:
    # tests/test_dashboard_api.py); the stream's JSON snapshot holds the health too.
    "/dashboard/health",
    "/dashboard/queue-timeline",
    "/dashboard/stream",
    "/ops/static/<name>",  # the pages' scripts and styles
    "/gateway/training/status",  # the collection settings; its counts are the caller's
    "/cortex/status",  # the model and the caller's tools; its last use is the caller's
}
# The dashboard's pages: signed in by their cookie, not a bearer token; without it they
# redirect to /ops/login and show nothing.
PAGES = {
    "/dashboard",
    "/webchat",
    "/ops",
    "/ops/login",
    "/ops/diagnostics",
    "/ops/agents",
    "/ops/agents/<agent_id>",
    "/ops/chat",
    "/ops/sessions",
    "/ops/sessions/<session_key>",
    "/ops/memory",
    "/ops/memory-graph",
    "/ops/usage",
    "/ops/cortex",
    "/ops/tools-jobs",
    "/ops/channels",
    "/ops/config",
    "/ops/training",
    "/ops/safety",
    "/ops/deploy",
}
# Routes the walk must meet: the owned objects' lists and single objects.
OWNED = {
    "/runs",
    "/runs/<run_id>",
    "/runs/<run_id>/events",
    "/approvals",
    "/schedules",
    "/debug/breakpoints",
    "/debug/runs",
    "/v1/responses/<response_id>",
    "/gateway/usage",
    "/gateway/events",
    "/gateway/config",
    "/gateway/sessions",
    "/gateway/sessions/<session_key>",
    "/gateway/memory/<session_key>",
    "/gateway/memory/<session_key>/<entry_id>",
    "/gateway/memory-graph/<session_key>",
    "/api/memories/graph",
    # The audit log names every principal: only allow_audit_read reads it (403).
    "/gateway/audit/log",
    "/gateway/audit/summary",
    "/gateway/audit/export",
    "/gateway/audit/verify",
    "/dashboard/alerts",
    "/dashboard/widgets",
    "/gateway/training/rollouts",
    "/gateway/training/rollouts/<rollout_id>",
    "/gateway/training/exports",
    "/gateway/jobs",
    "/sessions",
    "/sessions/<session_id>",
    "/sessions/<session_id>/events",
    "/gateway/external-coding-agent/sessions",
    "/gateway/external-coding-agent/sessions/<session_id>",
    "/gateway/external-coding-agent/sessions/<session_id>/stream",
}
SESSION_KEY = "alice-notes"
ENTRY_ID = "fact-1"


@dataclass
class Seeded:
    runs: dict[str, str] = field(default_factory=dict)  # what -> run id
    response_id: str = ""
    schedule_id: str = f"nightly-{SECRET}"
    agent_session_id: str = ""
    bridge_session_id: str = ""
    rollout_id: str = ""
    export_id: str = ""

    def ids(self) -> list[str]:
        sessions = [self.agent_session_id, self.bridge_session_id]
        return [*self.runs.values(), self.response_id, *sessions, self.rollout_id, self.export_id]


@pytest.fixture
def settings(make_settings: Any, tmp_path: Path, store_url: str) -> Any:
    """On SQLite and on PostgreSQL (``store_url``): every object here is a stored row."""
    directory = write_pipelines(tmp_path, "owned", SOURCE)
    return make_settings(
        auth={"tokens": TOKENS},
        plugins={
            "pipelines": {
                "directory": str(directory),
                "poll_seconds": 0.05,
                "webhooks": {"gh": {"pipeline": "echo", "secret": "s3cret"}},
            },
            "openai_compat": {"pipeline_models": ["echo"]},
            "training": {"collect": True},
        },
        agents={"echo": agent_config(tmp_path)},
    )


async def until(check: Any, what: str, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def run_of(client: Any, run_id: str) -> dict[str, Any]:
    response = await client.get(f"/runs/{run_id}", headers=ADMIN)
    assert response.status_code == 200
    record: dict[str, Any] = await response.get_json()
    return record


async def wait_status(client: Any, run_id: str, status: str) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        record = await run_of(client, run_id)
        return record if record["status"] == status else None

    found: dict[str, Any] = await until(reached, f"run {run_id} {status}")
    return found


async def start(client: Any, pipeline: str, headers: dict[str, str] = ALICE) -> str:
    response = await client.post(
        f"/pipelines/{pipeline}/start", json={"input": {"text": SECRET}}, headers=headers
    )
    assert response.status_code == 202, await response.get_data(as_text=True)
    return str((await response.get_json())["runId"])


async def seed(client: Any) -> Seeded:
    """Alice's objects, and the admin's breakpoint that pauses her ``held`` run."""
    seeded = Seeded()
    bp = {"step_id": "hold", "pipeline_id": "held"}
    assert (await client.post("/debug/breakpoints", json=bp, headers=ADMIN)).status_code == 201
    for name in ("echo", "gated", "asks", "held"):
        seeded.runs[name] = await start(client, name)
    body = json.dumps({"text": SECRET}).encode()
    hook = await client.post("/triggers/webhook:gh/webhook", data=body, headers=signed(body, "d-1"))
    assert hook.status_code == 202
    seeded.runs["webhook"] = (await hook.get_json())["runId"]
    chat = await client.post(
        "/v1/chat/completions",
        json={"model": "pipeline:echo", "messages": [{"role": "user", "content": SECRET}]},
        headers=ALICE,
    )
    assert chat.status_code == 200, await chat.get_data(as_text=True)
    model_runs = await (await client.get("/runs?pipeline=echo", headers=ALICE)).get_json()
    seeded.runs["model"] = next(
        r["id"] for r in model_runs["runs"] if r["trigger"]["type"] == "openai"
    )
    schedule = {
        "id": seeded.schedule_id,
        "pipeline_id": "echo",
        "interval_seconds": 3600,
        "input": {"text": SECRET},
    }
    assert (await client.post("/schedules", json=schedule, headers=ALICE)).status_code == 201
    stored = await client.post(
        "/v1/responses", json={"model": "echo", "input": SECRET}, headers=ALICE
    )
    assert stored.status_code == 200
    seeded.response_id = (await stored.get_json())["id"]
    await seed_sessions(client)
    # An agent (ACP) session that echoed her secret, and a bridge session with her
    # progress and a queued follow-up.
    opened = await client.post(
        "/sessions", json={"agent": "echo", "workspace": f"ws-{SECRET}"}, headers=ALICE
    )
    assert opened.status_code == 201, await opened.get_data(as_text=True)
    seeded.agent_session_id = (await opened.get_json())["id"]
    said = await client.post(
        f"/sessions/{seeded.agent_session_id}/prompt",
        json={"text": SECRET, "wait": True},
        headers=ALICE,
    )
    assert said.status_code == 200
    bridge = "/gateway/external-coding-agent/sessions"
    bridged = await client.post(bridge, json={"workspace": f"/src/{SECRET}"}, headers=ALICE)
    seeded.bridge_session_id = (await bridged.get_json())["session_id"]
    for path, sent in (("progress", {"message": SECRET}), ("followups", {"text": SECRET})):
        done = await client.post(
            f"{bridge}/{seeded.bridge_session_id}/{path}", json=sent, headers=ALICE
        )
        assert done.status_code == 201
    for action in ("pause", "resume"):  # gateway events naming Alice
        assert (await client.post(f"/gateway/{action}", headers=ALICE)).status_code == 200
    await wait_status(client, seeded.runs["echo"], "completed")
    await wait_status(client, seeded.runs["webhook"], "completed")
    await wait_status(client, seeded.runs["gated"], "waiting")
    await wait_status(client, seeded.runs["asks"], "waiting")
    await wait_status(client, seeded.runs["held"], "paused")

    async def rollout() -> Any:
        path = f"/gateway/training/rollouts?run_id={seeded.runs['echo']}"
        return (await (await client.get(path, headers=ADMIN)).get_json())["rollouts"]

    seeded.rollout_id = (await until(rollout, "the rollout of Alice's run"))[0]["id"]
    export = await client.post("/gateway/training/exports", json={}, headers=ALICE)
    assert export.status_code == 201, await export.get_data(as_text=True)
    seeded.export_id = (await export.get_json())["id"]
    return seeded


async def seed_sessions(client: Any) -> None:
    """Alice's session, memory document and memory entries (with a relation)."""
    path = f"/gateway/sessions/{SESSION_KEY}/append"
    sent = await client.post(path, json={"role": "user", "content": SECRET}, headers=ALICE)
    assert sent.status_code == 201
    memory = f"/gateway/memory/{SESSION_KEY}"
    assert (await client.put(memory, json={"document": SECRET}, headers=ALICE)).status_code == 200
    for entry_id, target in ((ENTRY_ID, "fact-2"), ("fact-2", ENTRY_ID)):
        entry = {"summary": SECRET, "relations": [{"target_id": target}]}
        written = await client.put(f"{memory}/{entry_id}", json=entry, headers=ALICE)
        assert written.status_code == 201


def plain(rule: str) -> str:
    """The rule without converters: ``/v1/models/<model_id>``."""
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"<\1>", rule)


def concrete(rule: str, values: dict[str, str]) -> str:
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: values[m.group(1)], rule)


def lists_in(value: Any) -> list[list[Any]]:
    if isinstance(value, list):
        return [value, *(inner for item in value for inner in lists_in(item))]
    if isinstance(value, dict):
        return [inner for item in value.values() for inner in lists_in(item)]
    return []


def assert_nothing_of_alice(text: str, seeded: Seeded, where: str, asked: str = "") -> None:
    # An id the caller put in the path may come back in a 404's message: that is its own.
    for marker in (SECRET, ALICE_NAME, *(i for i in seeded.ids() if i not in asked)):
        assert marker not in text, f"{where} leaks {marker!r}: {text[:500]}"


async def test_every_get_route_hides_another_principals_objects_from_a_no_gate_token(
    settings,
):
    async with running_app(settings) as (app, client):
        seeded = await seed(client)
        fill = {
            "run_id": list(seeded.runs.values()),
            "response_id": [seeded.response_id],
            "pipeline_id": ["echo"],
            "model_id": ["echo"],
            "session_key": [SESSION_KEY],
            "entry_id": [ENTRY_ID],
            "agent_id": ["agent-1"],
            "name": ["ops.css"],
            "session_id": [seeded.agent_session_id, seeded.bridge_session_id],
            "rollout_id": [seeded.rollout_id],
        }
        walked: set[str] = set()
        for rule in app.url_map.iter_rules():
            if getattr(rule, "websocket", False) or "GET" not in (rule.methods or set()):
                continue
            unseeded = set(rule.arguments) - set(fill)
            assert not unseeded, (
                f"GET {rule.rule}: seed another principal's object for {unseeded} in this test"
            )
            names = sorted(rule.arguments)
            for combo in itertools.product(*(fill[n] for n in names)):
                path = concrete(rule.rule, dict(zip(names, combo, strict=True)))
                where = f"GET {path}"
                # A JSON page, not a live stream, from the event routes.
                headers = {**READER, "Accept": "application/json"}
                response = await client.get(path, headers=headers)
                text = await response.get_data(as_text=True)
                if plain(rule.rule) in PAGES and rule.rule != "/ops/login":
                    assert response.status_code == 303, where
                    assert response.headers["Location"].startswith("/ops/login?next="), where
                    walked.add(plain(rule.rule))
                    continue
                assert response.status_code in (200, 403, 404), f"{where}: {text[:300]}"
                assert_nothing_of_alice(text, seeded, where, asked=path)
                if response.status_code == 403:
                    assert json.loads(text)["error"]["code"] == "policy_gate_denied", where
                elif response.status_code == 200 and plain(rule.rule) not in SHARED | PAGES:
                    body = json.loads(text)
                    assert all(not found for found in lists_in(body)), f"{where}: {body}"
            walked.add(plain(rule.rule))
        assert walked >= OWNED | SHARED | PAGES
        # The WebSocket kinds answer the same caller without Alice's data too.
        kinds = sorted(context(app).ws_kinds)
        async with client.websocket("/gateway/ws", headers=READER) as ws:
            for n, kind in enumerate(kinds):
                frame = {"schema_version": 1, "request_id": f"k{n}", "kind": kind, "payload": {}}
                await ws.send(json.dumps(frame))
                answer = await asyncio.wait_for(ws.receive(), 10)
                assert_nothing_of_alice(str(answer), seeded, f"WS {kind}")


async def test_no_gate_token_gets_404_for_anothers_run_and_empty_lists(settings):
    async with running_app(settings) as (_app, client):
        seeded = await seed(client)
        for run_id in seeded.runs.values():
            for path in (f"/runs/{run_id}", f"/runs/{run_id}/events?format=json"):
                hidden = await client.get(path, headers=READER)
                assert hidden.status_code == 404
                error = (await hidden.get_json())["error"]
                # The very answer of a run that does not exist.
                unknown = await client.get("/runs/0123456789abcdef", headers=READER)
                assert error["code"] == (await unknown.get_json())["error"]["code"]
                assert error["code"] == "run_not_found"
        for path, key in (
            ("/runs", "runs"),
            ("/approvals?status=all", "approvals"),
            ("/schedules", "schedules"),
            ("/debug/runs", "runs"),
            ("/debug/breakpoints", "breakpoints"),
        ):
            assert (await (await client.get(path, headers=READER)).get_json())[key] == [], path
        triggers = await (await client.get("/triggers", headers=READER)).get_json()
        assert not [t for t in triggers["triggers"] if t["type"] == "schedule"]
        for path in (
            "/gateway/events",
            "/gateway/config",
            "/gateway/plugins",
            "/metrics",
            "/gateway/audit/log",
            "/gateway/audit/summary",
            "/gateway/audit/export",
            "/gateway/audit/verify",
        ):
            denied = await client.get(path, headers=READER)
            assert denied.status_code == 403, path
        hidden = await client.get(f"/gateway/training/rollouts/{seeded.rollout_id}", headers=READER)
        assert hidden.status_code == 404
        assert (await hidden.get_json())["error"]["code"] == "rollout_not_found"
        training = await (await client.get("/gateway/training/status", headers=READER)).get_json()
        assert training["counts"]["total"] == 0 and training["last_export"] is None
        exports = await (await client.get("/gateway/training/exports", headers=READER)).get_json()
        assert exports["exports"] == []
        status = await (await client.get("/gateway/status", headers=READER)).get_json()
        assert set(status) == {"service", "version", "state", "auth"}
        assert status["auth"] == {
            "mode": "token",
            "principal": {"name": "reader", "kind": "token", "gates": []},
        }


async def test_sessions_and_memory_are_their_owners_and_read_all_sees_them(settings):
    async with running_app(settings) as (_app, client):
        await seed_sessions(client)
        paths = (
            f"/gateway/sessions/{SESSION_KEY}",
            f"/gateway/memory/{SESSION_KEY}",
            f"/gateway/memory/{SESSION_KEY}/{ENTRY_ID}",
            f"/gateway/memory-graph/{SESSION_KEY}",
        )
        for path in paths:
            hidden = await client.get(path, headers=READER)
            assert hidden.status_code == 404, path
            assert SECRET not in await hidden.get_data(as_text=True)
            # As if it did not exist: the very answer for a key nobody has.
            unknown = await client.get(path.replace(SESSION_KEY, "nobody-has-this"), headers=READER)
            code = (await hidden.get_json())["error"]["code"]
            assert code == (await unknown.get_json())["error"]["code"] == "session_not_found"
            for headers in (ALICE, AUDITOR, ADMIN):
                seen = await client.get(path, headers=headers)
                assert seen.status_code == 200, path
                assert SECRET in await seen.get_data(as_text=True), path
        for headers, count in ((READER, 0), (ALICE, 1), (AUDITOR, 1)):
            listed = await (await client.get("/gateway/sessions", headers=headers)).get_json()
            assert listed["total"] == count
            graph = await (await client.get("/api/memories/graph", headers=headers)).get_json()
            assert len(graph["nodes"]) == 2 * count and len(graph["edges"]) == 2 * count
        # Reading is not acting: the auditor may not write into Alice's session.
        refused = await client.post(
            f"/gateway/sessions/{SESSION_KEY}/reset?owner=token:{ALICE_NAME}", headers=AUDITOR
        )
        assert refused.status_code == 403


async def test_owner_sees_and_acts_on_its_own_objects(settings):
    async with running_app(settings) as (_app, client):
        seeded = await seed(client)
        mine = await (await client.get("/runs", headers=ALICE)).get_json()
        # Not the webhook's run: that one is owned by webhook:gh.
        expected = {seeded.runs[k] for k in ("echo", "gated", "asks", "held", "model")}
        assert {r["id"] for r in mine["runs"]} == expected
        assert {r["owner"] for r in mine["runs"]} == {f"token:{ALICE_NAME}"}
        webhook_run = await run_of(client, seeded.runs["webhook"])
        assert webhook_run["owner"] == "webhook:gh"
        echo = await (await client.get(f"/runs/{seeded.runs['echo']}", headers=ALICE)).get_json()
        assert echo["output"] == {"said": {"text": SECRET}}
        page = await client.get(f"/runs/{seeded.runs['echo']}/events?format=json", headers=ALICE)
        assert page.status_code == 200
        approvals = await (await client.get("/approvals", headers=ALICE)).get_json()
        assert [a["run_id"] for a in approvals["approvals"]] == [seeded.runs["gated"]]
        paused = await (await client.get("/debug/runs", headers=ALICE)).get_json()
        assert [r["id"] for r in paused["runs"]] == [seeded.runs["held"]]
        # The breakpoint is the admin's: Alice's list of her own is empty.
        own_bps = await (await client.get("/debug/breakpoints", headers=ALICE)).get_json()
        assert own_bps["breakpoints"] == []
        schedules = (await (await client.get("/schedules", headers=ALICE)).get_json())["schedules"]
        assert [(s["id"], s["owner"], s["suspended"]) for s in schedules] == [
            (seeded.schedule_id, f"token:{ALICE_NAME}", None)
        ]
        triggers = await (await client.get("/triggers", headers=ALICE)).get_json()
        assert f"schedule:{seeded.schedule_id}" in {t["id"] for t in triggers["triggers"]}
        # She acts on her own runs and schedule with her ordinary gates.
        approve = await client.post(f"/runs/{seeded.runs['gated']}/approve", json={}, headers=ALICE)
        assert approve.status_code == 200
        release = await client.post(f"/debug/runs/{seeded.runs['held']}/release", headers=ALICE)
        assert release.status_code == 200
        resume = await client.post(
            f"/runs/{seeded.runs['asks']}/resume", json={"input": {"ok": 1}}, headers=ALICE
        )
        assert resume.status_code == 200
        fired = await client.post(f"/triggers/schedule:{seeded.schedule_id}/fire", headers=ALICE)
        assert (await fired.get_json())["outcome"] == "fired"
        fired_run = await run_of(client, (await fired.get_json())["runId"])
        assert fired_run["owner"] == f"token:{ALICE_NAME}"  # the schedule's owner
        deleted = await client.delete(f"/schedules/{seeded.schedule_id}", headers=ALICE)
        assert deleted.status_code == 200
        got = await client.get(f"/v1/responses/{seeded.response_id}", headers=ALICE)
        assert got.status_code == 200


async def test_read_all_gates_see_every_principals_objects_and_operator_views(settings):
    async with running_app(settings) as (_app, client):
        seeded = await seed(client)
        for headers in (AUDITOR, ADMIN):
            listed = await (await client.get("/runs", headers=headers)).get_json()
            assert set(seeded.runs.values()) <= {r["id"] for r in listed["runs"]}
            for run_id in seeded.runs.values():
                record = await client.get(f"/runs/{run_id}", headers=headers)
                assert SECRET in await record.get_data(as_text=True)
                events = await client.get(f"/runs/{run_id}/events?format=json", headers=headers)
                assert events.status_code == 200
            approvals = await (await client.get("/approvals", headers=headers)).get_json()
            assert [a["run_id"] for a in approvals["approvals"]] == [seeded.runs["gated"]]
            paused = await (await client.get("/debug/runs", headers=headers)).get_json()
            assert [r["id"] for r in paused["runs"]] == [seeded.runs["held"]]
            bps = await (await client.get("/debug/breakpoints", headers=headers)).get_json()
            assert [(b["step_id"], b["owner"]) for b in bps["breakpoints"]] == [
                ("hold", "token:admin")
            ]
            schedules = await (await client.get("/schedules", headers=headers)).get_json()
            assert [s["id"] for s in schedules["schedules"]] == [seeded.schedule_id]
            response = await client.get(f"/v1/responses/{seeded.response_id}", headers=headers)
            assert SECRET in await response.get_data(as_text=True)
            events = await client.get("/gateway/events?format=json", headers=headers)
            assert ALICE_NAME in await events.get_data(as_text=True)
            usage = await client.get("/gateway/usage?all=true", headers=headers)
            assert f"token:{ALICE_NAME}" in await usage.get_data(as_text=True)
            config = await client.get("/gateway/config", headers=headers)
            assert ALICE_NAME in await config.get_data(as_text=True)
            rollout = await client.get(
                f"/gateway/training/rollouts/{seeded.rollout_id}", headers=headers
            )
            assert SECRET in await rollout.get_data(as_text=True)
            exports = await (
                await client.get("/gateway/training/exports", headers=headers)
            ).get_json()
            assert [e["id"] for e in exports["exports"]] == [seeded.export_id]
            assert (await client.get("/gateway/plugins", headers=headers)).status_code == 200
            assert (await client.get("/metrics", headers=headers)).status_code == 200
            audit = await client.get(
                f"/gateway/audit/log?actor=token:{ALICE_NAME}", headers=headers
            )
            assert ALICE_NAME in await audit.get_data(as_text=True)
            exported = await client.get("/gateway/audit/export", headers=headers)
            assert ALICE_NAME in await exported.get_data(as_text=True)
            status = await (await client.get("/gateway/status", headers=headers)).get_json()
            assert "store" in status and "plugin_status" in status
            assert "auth_failures" in status["auth"]
        # Reading is not acting: the auditor holds no act gate.
        cancel = await client.post(f"/runs/{seeded.runs['gated']}/cancel", json={}, headers=AUDITOR)
        assert cancel.status_code == 403


async def test_act_all_acts_read_all_alone_is_403_and_act_all_alone_is_404(settings):
    async with running_app(settings) as (_app, client):
        seeded = await seed(client)
        gated, asks, held = seeded.runs["gated"], seeded.runs["asks"], seeded.runs["held"]
        actions = [
            (f"/runs/{asks}/resume", {"input": {"ok": 1}}),
            (f"/debug/runs/{held}/release", {}),
            (f"/runs/{asks}/cancel", {}),
            (f"/triggers/schedule:{seeded.schedule_id}/fire", {}),
        ]
        for path, body in actions:
            # May read but not act: 403, and nothing changes.
            peeked = await client.post(path, json=body, headers=PEEKER)
            assert peeked.status_code == 403, path
            assert (await peeked.get_json())["error"]["code"] == "policy_gate_denied"
            # May act but not read: as if the run did not exist.
            blind = await client.post(path, json=body, headers=BLIND)
            assert blind.status_code == 404, path
        for path in (f"/schedules/{seeded.schedule_id}",):
            assert (await client.delete(path, headers=PEEKER)).status_code == 403
            assert (await client.delete(path, headers=BLIND)).status_code == 404
        assert (await run_of(client, asks))["status"] == "waiting"
        assert (await run_of(client, held))["status"] == "paused"
        # Breakpoints pause everyone's runs: only act-all sets or removes them.
        bp = {"step_id": "say", "pipeline_id": "echo"}
        refused = await client.post("/debug/breakpoints", json=bp, headers=ALICE)
        assert refused.status_code == 403
        assert (await client.delete("/debug/breakpoints/hold", headers=PEEKER)).status_code == 403
        assert (await client.post("/debug/breakpoints", json=bp, headers=BLIND)).status_code == 201
        # The operator acts on Alice's runs and schedule.
        approve = await client.post(f"/runs/{gated}/approve", json={}, headers=OPERATOR)
        assert approve.status_code == 200
        assert (await approve.get_json())["status"] in ("pending", "running", "completed")
        resume = await client.post(
            f"/runs/{asks}/resume", json={"input": {"ok": 1}}, headers=OPERATOR
        )
        assert resume.status_code == 200
        release = await client.post(f"/debug/runs/{held}/release", headers=OPERATOR)
        assert release.status_code == 200
        fired = await client.post(f"/triggers/schedule:{seeded.schedule_id}/fire", headers=OPERATOR)
        fired_run = await run_of(client, (await fired.get_json())["runId"])
        assert fired_run["owner"] == f"token:{ALICE_NAME}"  # still the schedule's owner's
        cancel = await client.post(f"/runs/{fired_run['id']}/cancel", json={}, headers=OPERATOR)
        assert cancel.status_code in (200, 409)  # 409 if it already finished
        deleted = await client.delete(f"/schedules/{seeded.schedule_id}", headers=OPERATOR)
        assert deleted.status_code == 200
        assert (await client.delete("/debug/breakpoints/hold", headers=OPERATOR)).status_code == 200


async def test_star_reads_and_acts_on_everything(settings):
    async with running_app(settings) as (_app, client):
        seeded = await seed(client)
        cancel = await client.post(f"/runs/{seeded.runs['gated']}/cancel", json={}, headers=ADMIN)
        assert (await cancel.get_json())["status"] == "cancelled"
        # An empty body is an empty decision (no reason).
        cancelled = await client.post(f"/runs/{seeded.runs['asks']}/cancel", headers=ADMIN)
        assert cancelled.status_code == 200
        deleted = await client.delete(f"/v1/responses/{seeded.response_id}", headers=ADMIN)
        assert deleted.status_code == 200
        gone = await client.delete(f"/schedules/{seeded.schedule_id}", headers=ADMIN)
        assert gone.status_code == 200


async def test_rows_from_before_owners_are_left_to_read_all_holders(settings, store_url):
    async with running_app(settings) as (_app, client):
        seeded = await seed(client)
    # What a store from before migration 5 holds: no owners.
    await db_execute(
        store_url,
        *(
            f"UPDATE {table} SET owner = NULL"
            for table in ("pipelines_runs", "pipelines_schedules", "pipelines_breakpoints")
        ),
    )
    async with running_app(settings) as (_app, client):
        for headers in (ALICE, READER):
            assert (await (await client.get("/runs", headers=headers)).get_json())["runs"] == []
            hidden = await client.get(f"/runs/{seeded.runs['echo']}", headers=headers)
            assert hidden.status_code == 404
            schedules = await (await client.get("/schedules", headers=headers)).get_json()
            assert schedules["schedules"] == []
        cancel = await client.post(f"/runs/{seeded.runs['gated']}/cancel", json={}, headers=ALICE)
        assert cancel.status_code == 404
        listed = await (await client.get("/runs", headers=AUDITOR)).get_json()
        assert set(seeded.runs.values()) <= {r["id"] for r in listed["runs"]}
        assert {r["owner"] for r in listed["runs"]} == {None}
        schedules = await (await client.get("/schedules", headers=AUDITOR)).get_json()
        # An ownerless schedule is not suspended: it keeps firing, as before.
        assert [(s["id"], s["suspended"]) for s in schedules["schedules"]] == [
            (seeded.schedule_id, None)
        ]
        cancel = await client.post(
            f"/runs/{seeded.runs['gated']}/cancel", json={}, headers=OPERATOR
        )
        assert cancel.status_code == 200


async def test_migration_adds_owner_columns_to_an_older_store(settings, store_url):
    async with running_app(settings) as (_app, client):
        await start(client, "echo")
    await db_execute(
        store_url,
        "DROP INDEX ix_pipelines_runs_owner",
        *(
            f"ALTER TABLE {table} DROP COLUMN owner"
            for table in ("pipelines_runs", "pipelines_schedules", "pipelines_breakpoints")
        ),
        "DELETE FROM schema_migrations WHERE namespace = 'pipelines' AND version = 5",
    )
    async with running_app(settings) as (_app, client):
        old = await (await client.get("/runs", headers=AUDITOR)).get_json()
        assert [r["owner"] for r in old["runs"]] == [None]
        fresh = await start(client, "echo")
        assert (await run_of(client, fresh))["owner"] == f"token:{ALICE_NAME}"
    indexes = {
        name
        for (name,) in await db_rows(
            store_url,
            "SELECT name FROM pragma_index_list('pipelines_runs')"
            if store_url.startswith("sqlite")
            else "SELECT indexname FROM pg_indexes WHERE tablename = 'pipelines_runs'",
        )
    }
    assert "ix_pipelines_runs_owner" in indexes


# -- schedules of principals that are gone -------------------------------------------------


async def schedule_of(
    client: Any, schedule_id: str, headers: dict[str, str] = ADMIN
) -> dict[str, Any]:
    listed = await (await client.get("/schedules", headers=headers)).get_json()
    found: dict[str, Any] = next(s for s in listed["schedules"] if s["id"] == schedule_id)
    return found


async def runs_of_schedule(client: Any, schedule_id: str) -> int:
    page = await (await client.get("/runs?limit=500", headers=ADMIN)).get_json()
    return sum(1 for r in page["runs"] if r["trigger"].get("schedule_id") == schedule_id)


async def test_schedules_of_a_token_removed_from_the_config_stop_firing_and_are_reported(
    state_dir, tmp_path, store_url
):
    directory = write_pipelines(tmp_path, "owned", SOURCE)
    config_file = tmp_path / "gateway.toml"
    data = deep_merge(
        deep_merge(base_config(state_dir), store_section(store_url)),
        {
            "auth": {"tokens": {ALICE_NAME: TOKENS[ALICE_NAME]}},
            "plugins": {"pipelines": {"directory": str(directory), "poll_seconds": 0.05}},
        },
    )
    config_file.write_text(tomli_w.dumps(data))
    async with running_app(load_settings(config_file)) as (_app, client):
        every = {"id": "every-second", "pipeline_id": "echo", "interval_seconds": 1}
        assert (await client.post("/schedules", json=every, headers=ALICE)).status_code == 201

        async def outcome_is(outcome: str) -> dict[str, Any] | None:
            schedule = await schedule_of(client, "every-second")
            return schedule if schedule["last_outcome"] == outcome else None

        await until(lambda: outcome_is("fired"), "a fire while Alice's token exists")
        del data["auth"]["tokens"][ALICE_NAME]
        config_file.write_text(tomli_w.dumps(data))
        assert (await client.post("/gateway/reload", headers=ADMIN)).status_code == 200

        schedule = await schedule_of(client, "every-second")
        assert schedule["suspended"] == "owner_removed"
        status = await (await client.get("/gateway/status", headers=ADMIN)).get_json()
        assert status["plugin_status"]["pipelines"]["suspended_schedules"] == ["every-second"]
        skipped = await until(lambda: outcome_is("skipped_owner_removed"), "a skipped tick")
        runs = await runs_of_schedule(client, "every-second")

        async def skipped_again() -> bool:
            later = await schedule_of(client, "every-second")
            return bool(later["last_fire_ms"] > skipped["last_fire_ms"])

        await until(skipped_again, "another skipped tick")
        assert (await schedule_of(client, "every-second"))["last_outcome"] == (
            "skipped_owner_removed"
        )
        assert await runs_of_schedule(client, "every-second") == runs
        # Fired by hand, even by the admin, it starts nothing either.
        fired = await client.post("/triggers/schedule:every-second/fire", headers=ADMIN)
        assert await fired.get_json() == {
            "trigger_id": "schedule:every-second",
            "outcome": "skipped_owner_removed",
            "runId": None,
        }
        assert await runs_of_schedule(client, "every-second") == runs


async def test_schedules_of_the_admin_token_and_localhost_dev_are_suspended_with_their_mode(
    state_dir, tmp_path, store_url
):
    directory = write_pipelines(tmp_path, "owned", SOURCE)
    section = {"pipelines": {"directory": str(directory), "poll_seconds": 0.05}}

    def mode(name: str) -> Any:  # no tokens configured
        auth = {"mode": name}
        data = {"state_dir": str(state_dir), "auth": auth, "plugins": section}
        return build_settings({**data, **store_section(store_url)})

    async def suspensions(client: Any, headers: dict[str, str]) -> dict[str, Any]:
        listed = await (await client.get("/schedules", headers=headers)).get_json()
        return {s["id"]: s["suspended"] for s in listed["schedules"]}

    hourly = {"pipeline_id": "echo", "interval_seconds": 3600}
    async with running_app(mode("token")) as (app, client):
        generated = bearer(str(context(app).admin_token))  # the admin token it generated
        made = await client.post("/schedules", json={"id": "by-admin", **hourly}, headers=generated)
        assert (await made.get_json())["owner"] == "admin:admin"
    async with running_app(mode("localhost-dev")) as (app, client):
        made = await client.post("/schedules", json={"id": "by-dev", **hourly})  # no token
        assert (await made.get_json())["owner"] == "localhost-dev:localhost-dev"
        # localhost-dev has no generated admin token.
        assert await suspensions(client, {}) == {"by-admin": "owner_removed", "by-dev": None}
    tokens = build_settings(
        deep_merge(base_config(state_dir), {"plugins": section, **store_section(store_url)})
    )
    async with running_app(tokens) as (_app, client):
        assert await suspensions(client, ADMIN) == {
            "by-admin": "owner_removed",
            "by-dev": "owner_removed",
        }
        for schedule_id in ("by-dev", "by-admin"):
            fired = await client.post(f"/triggers/schedule:{schedule_id}/fire", headers=ADMIN)
            assert (await fired.get_json())["outcome"] == "skipped_owner_removed"
        status = await (await client.get("/gateway/status", headers=ADMIN)).get_json()
        suspended = status["plugin_status"]["pipelines"]["suspended_schedules"]
        assert suspended == ["by-admin", "by-dev"]
    # Back without tokens: the generated admin token signs in again, and its schedule fires.
    async with running_app(mode("token")) as (app, client):
        generated = bearer(str(context(app).admin_token))
        assert await suspensions(client, generated) == {
            "by-admin": None,
            "by-dev": "owner_removed",
        }


async def test_an_approver_sees_every_pending_approval_and_decides_on_another_principals_run(
    settings,
):
    # Approving is the approver's own job (four eyes): allow_pipeline_approve is the
    # permission to decide on anyone's approval, without reading every run.
    approver: dict[str, dict[str, Any]] = {"approver": {"token": "test-approver-token-0123456789"}}
    approver["approver"]["gates"] = ["allow_pipeline_approve"]
    settings = build_settings(
        deep_merge(settings.base_data, {"auth": {"tokens": {**TOKENS, **approver}}})
    )
    headers = bearer("test-approver-token-0123456789")
    async with running_app(settings) as (_app, client):
        seeded = await seed(client)
        gated = seeded.runs["gated"]
        listed = await (await client.get("/approvals", headers=headers)).get_json()
        assert [a["run_id"] for a in listed["approvals"]] == [gated]
        # Reading the run itself still needs read-all.
        assert (await client.get(f"/runs/{gated}", headers=headers)).status_code == 404
        decided = await client.post(
            f"/runs/{gated}/approve", json={"reason": "ok"}, headers=headers
        )
        assert decided.status_code == 200, await decided.get_data(as_text=True)
        assert (await decided.get_json())["id"] == gated
        approvals = await (await client.get("/approvals?status=all", headers=ALICE)).get_json()
        assert [(a["status"], a["approver"]) for a in approvals["approvals"]] == [
            ("approved", "approver")
        ]
        # Without the gate, nobody else's approval shows and none can be decided.
        assert (
            await client.post(f"/runs/{gated}/deny", json={}, headers=AUDITOR)
        ).status_code == 403


async def test_schedules_of_an_account_removed_from_the_config_are_suspended(
    state_dir, tmp_path, store_url
):
    directory = write_pipelines(tmp_path, "owned", SOURCE)
    config_file = tmp_path / "gateway.toml"
    users = {
        "alice": {"password": "alice-password-0123", "gates": ["allow_pipeline_run"]},
        "root": {"password": "root-password-0123", "gates": ["*"]},
    }
    data = deep_merge(
        deep_merge(base_config(state_dir), store_section(store_url)),
        {
            "auth": {"mode": "password-session", "users": users},
            "plugins": {"pipelines": {"directory": str(directory)}},
        },
    )
    config_file.write_text(tomli_w.dumps(data))

    async def login(client: Any, user: str) -> dict[str, str]:
        body = {"user": user, "password": users[user]["password"]}
        issued = await client.post("/gateway/auth/session", json=body)
        assert issued.status_code == 200, await issued.get_data(as_text=True)
        return bearer((await issued.get_json())["access_token"])

    async with running_app(load_settings(config_file)) as (_app, client):
        alice, root = await login(client, "alice"), await login(client, "root")
        hourly = {"id": "alices", "pipeline_id": "echo", "interval_seconds": 3600}
        made = await client.post("/schedules", json=hourly, headers=alice)
        assert (await made.get_json())["owner"] == "session:alice"
        assert (await schedule_of(client, "alices", root))["suspended"] is None
        del data["auth"]["users"]["alice"]
        config_file.write_text(tomli_w.dumps(data))
        assert (await client.post("/gateway/reload", headers=root)).status_code == 200
        assert (await schedule_of(client, "alices", root))["suspended"] == "owner_removed"
        fired = await client.post("/triggers/schedule:alices/fire", headers=root)
        assert (await fired.get_json())["outcome"] == "skipped_owner_removed"


async def test_jobs_show_the_owners_runs_and_everyones_only_with_the_jobs_read_all_gate(
    settings,
):
    async with running_app(settings) as (_app, client):
        seeded = await seed(client)
        alices = {f"pipelines:{seeded.runs[k]}" for k in ("echo", "gated", "asks", "held", "model")}
        # Her agent and bridge sessions are her jobs too (sources agents and bridge).
        alices |= {f"agents:{seeded.agent_session_id}", f"bridge:{seeded.bridge_session_id}"}
        mine = await (await client.get("/gateway/jobs?limit=200", headers=ALICE)).get_json()
        assert {j["id"] for j in mine["jobs"]} == alices
        # The pipelines read-all gate is not the jobs one: the auditor sees no one's jobs.
        for headers in (READER, AUDITOR):
            listed = await (await client.get("/gateway/jobs", headers=headers)).get_json()
            assert listed["jobs"] == []
        everyone = await (await client.get("/gateway/jobs?limit=200", headers=ADMIN)).get_json()
        assert set(seeded.runs.values()) <= {j["id"].partition(":")[2] for j in everyone["jobs"]}
        gated = f"/gateway/jobs/pipelines:{seeded.runs['gated']}/cancel"
        assert (await client.post(gated, headers=OPERATOR)).status_code == 403  # no jobs gate
        assert (await client.post(gated, headers=ALICE)).status_code == 403  # no cancel gate
        assert (await client.post(gated, headers=ADMIN)).status_code == 200


async def test_agent_and_bridge_sessions_are_their_owners_and_read_all_holders(settings):
    async with running_app(settings) as (_app, client):
        seeded = await seed(client)
        agent_id, bridge_id = seeded.agent_session_id, seeded.bridge_session_id
        bridge = "/gateway/external-coding-agent/sessions"
        for headers in (ALICE, ADMIN):
            mine = await (await client.get("/sessions", headers=headers)).get_json()
            assert [s["id"] for s in mine["sessions"]] == [agent_id]
            events = await client.get(f"/sessions/{agent_id}/events?format=json", headers=headers)
            assert SECRET in await events.get_data(as_text=True)
            listed = await (await client.get(bridge, headers=headers)).get_json()
            assert [s["session_id"] for s in listed["sessions"]] == [bridge_id]
            stream = await client.get(f"{bridge}/{bridge_id}/stream?format=json", headers=headers)
            assert SECRET in await stream.get_data(as_text=True)
        # A principal with the write gates but neither read-all nor act-all: as if absent.
        for path, body in (
            (f"/sessions/{agent_id}/prompt", {"text": "hi"}),
            (f"/sessions/{agent_id}/resume", {}),
            (f"{bridge}/{bridge_id}/followups", {"text": "hi"}),
            (f"{bridge}/{bridge_id}/close", {}),
        ):
            assert (await client.post(path, json=body, headers=STRANGER)).status_code == 404, path
        assert (await client.delete(f"/sessions/{agent_id}", headers=STRANGER)).status_code == 404
        for path in ("/sessions", bridge):
            listed = await (await client.get(path, headers=STRANGER)).get_json()
            assert listed["sessions"] == []
        # Alice's ACP connection over HTTP: another principal cannot read, use or end it.
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
        opened = await client.post("/acp?agent=echo", json=init, headers=ALICE)
        assert opened.status_code == 200
        theirs = {**STRANGER, "Acp-Connection-Id": opened.headers["Acp-Connection-Id"]}
        for method in ("GET", "POST", "DELETE"):
            new = {"jsonrpc": "2.0", "id": 2, "method": "session/new", "params": {"cwd": "/"}}
            response = await client.open("/acp", method=method, json=new, headers=theirs)
            assert response.status_code == 404, method
            assert (await response.get_json())["error"]["code"] == "connection_not_found"
        mine = {**ALICE, "Acp-Connection-Id": opened.headers["Acp-Connection-Id"]}
        assert (await client.delete("/acp", headers=mine)).status_code == 202
        assert (await client.delete(f"/sessions/{agent_id}", headers=ADMIN)).status_code == 200
