"""What the audit plugin records: mutating requests (success and refusal), auth failures
(401, 403, reads included), safety decisions, approval decisions, config changes and
plugin events that ask for it; each record is in the store before the response is sent.
Both stores; rows are read back with ``db_rows``."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import httpx
import pytest
from quart import Blueprint
from quart.testing.connections import WebsocketResponseError

from host.api import context, hookimpl, service
from host.storage import Store, sqlite_url
from plugins.audit.chain import verify as chain_verify
from plugins.audit.contract import AuditLog
from plugins.audit.tables import MIGRATIONS
from tests.audit_helpers import audit_rows, until, verify, wait_status
from tests.conftest import ADMIN, READER, assert_error, metric, running_app
from tests.pipelines_fixtures import pipelines_settings, write_pipelines
from tests.plugins_for_tests import audit_scanner

pytestmark = pytest.mark.usefixtures("store_url")

GATED = """
from plugins.pipelines.definition import Pipeline, approval, code

GATED = Pipeline(id="gated", steps=[approval("review", "ok?"), code("done", lambda c: 1)])
"""


async def test_a_mutating_request_is_recorded_with_its_outcome_and_a_read_is_not(
    make_settings, store_url
):
    async with running_app(make_settings()) as (_app, client):
        paused = await client.post(
            "/gateway/pause", headers={**ADMIN, "X-Request-Id": "req-pause-1"}
        )
        assert paused.status_code == 200
        assert paused.headers["X-Request-Id"] == "req-pause-1"
        again = await client.post("/gateway/pause", headers=ADMIN)
        assert again.status_code == 409
        assert (await client.get("/gateway/status", headers=ADMIN)).status_code == 200
        assert (await client.get("/gateway/config", headers=ADMIN)).status_code == 200
        rows = await audit_rows(store_url)
    assert [(r["action"], r["outcome"], r["status"]) for r in rows] == [
        ("POST /gateway/pause", "success", 200),
        ("POST /gateway/pause", "refused", 409),
    ]
    first, second = rows
    assert first["source"] == "request"
    assert first["actor"] == "token:admin"
    assert first["route"] == "/gateway/pause"
    assert first["request_id"] == "req-pause-1"
    assert second["reason_code"] == (await again.get_json())["error"]["code"]
    assert second["request_id"] == again.headers["X-Request-Id"] != "req-pause-1"


async def test_the_target_is_the_id_in_the_path_or_of_what_was_created(
    make_settings, store_url, tmp_path
):
    settings = pipelines_settings(make_settings, write_pipelines(tmp_path, "g", GATED))
    async with running_app(settings) as (_app, client):
        started = await client.post("/pipelines/gated/start", json={"input": {}}, headers=ADMIN)
        assert started.status_code == 202
        run_id = (await started.get_json())["runId"]
        await wait_status(client, run_id, "waiting")
        cancel = await client.post(f"/runs/{run_id}/cancel", json={}, headers=ADMIN)
        assert cancel.status_code == 200
        rows = await audit_rows(store_url, "source = 'request'")
    assert [(r["route"], r["target"]) for r in rows] == [
        ("/pipelines/<pipeline_id>/start", "gated"),
        ("/runs/<run_id>/cancel", run_id),
    ]


async def test_auth_failures_are_recorded_before_any_handler_runs(make_settings, store_url):
    async with running_app(make_settings()) as (_app, client):
        missing = await client.get("/gateway/config")
        assert missing.status_code == 401
        wrong = await client.post("/gateway/pause", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        gated = await client.post("/gateway/pause", headers=READER)
        assert gated.status_code == 403
        read_denied = await client.get("/gateway/config", headers=READER)
        assert read_denied.status_code == 403
        rows = await audit_rows(store_url)
        state = await (await client.get("/gateway/status", headers=ADMIN)).get_json()
        counted = await metric(client, "gateway_audit_records_total", source="auth")
    assert [(r["source"], r["action"], r["actor"], r["route"], r["reason_code"]) for r in rows] == [
        ("auth", "auth.unauthorized", None, "/gateway/config", "unauthorized"),
        ("auth", "auth.unauthorized", None, "/gateway/pause", "unauthorized"),
        ("auth", "auth.forbidden", "token:reader", "/gateway/pause", "policy_gate_denied"),
        ("auth", "auth.forbidden", "token:reader", "/gateway/config", "policy_gate_denied"),
    ]
    assert {r["outcome"] for r in rows} == {"denied"}
    assert state["state"] == "running"  # the refused pause did not happen
    assert counted == 4
    assert state["plugin_status"]["audit"] == {"written": 4, "write_failures": 0}


async def test_a_refused_websocket_upgrade_is_recorded(make_settings, store_url):
    async with running_app(make_settings()) as (_app, client):
        with pytest.raises(WebsocketResponseError) as refused:
            async with client.websocket("/gateway/ws") as ws:
                await ws.send("{}")
                await ws.receive()
        assert refused.value.response.status_code == 401
        rows = await audit_rows(store_url)
    assert [(r["action"], r["route"], r["reason_code"], r["status"]) for r in rows] == [
        ("auth.unauthorized", "/gateway/ws", "unauthorized", 401)
    ]


async def test_excluded_routes_leave_no_record_for_a_success_but_do_for_a_failure(
    make_settings, store_url
):
    settings = make_settings(plugins={"audit": {"exclude_routes": ["/gateway/pause"]}})
    async with running_app(settings) as (_app, client):
        assert (await client.post("/gateway/pause", headers=ADMIN)).status_code == 200
        assert (await client.post("/gateway/pause", headers=ADMIN)).status_code == 409
        assert (await client.post("/gateway/pause", headers=READER)).status_code == 403
        assert (await client.post("/gateway/resume", headers=ADMIN)).status_code == 200
        rows = await audit_rows(store_url)
    assert [(r["action"], r["status"]) for r in rows] == [
        ("POST /gateway/pause", 409),
        ("auth.forbidden", 403),
        ("POST /gateway/resume", 200),
    ]


@pytest.mark.parametrize(
    ("section", "statuses"),
    [({}, [404]), ({"exclude_routes": []}, [200, 404])],
    ids=["default", "everything"],
)
async def test_model_calls_are_audited_only_when_refused_unless_configured(
    make_settings, store_url, section, statuses
):
    # By default a successful model call is in the model usage, not the audit log (a
    # store write per call); a refused one is audited. exclude_routes = [] audits all.
    chat = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
    settings = make_settings(plugins={"audit": section})
    async with running_app(settings) as (_app, client):
        ok = await client.post("/v1/chat/completions", json=chat, headers=ADMIN)
        assert ok.status_code == 200
        missing = await client.post(
            "/v1/chat/completions", json={**chat, "model": "nope"}, headers=ADMIN
        )
        assert missing.status_code == 404
        rows = await audit_rows(store_url, "route = '/v1/chat/completions'")
    assert sorted(r["status"] for r in rows) == statuses


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"retention_max_count": -1}, "plugins.audit.retention_max_count: must be a number"),
        ({"retention_max_count": 2.5}, "plugins.audit.retention_max_count: must be a whole"),
        ({"retention_max_age_days": "a year"}, "plugins.audit.retention_max_age_days"),
        ({"exclude_routes": "/v1/chat/completions"}, "plugins.audit.exclude_routes"),
        ({"retention_days": 3}, "plugins.audit.retention_days: unknown key"),
    ],
)
async def test_a_bad_audit_section_is_refused_naming_the_key(make_settings, section, message):
    async with running_app(make_settings()) as (_app, client):
        patched = await client.patch(
            "/gateway/config", json={"plugins": {"audit": section}}, headers=ADMIN
        )
        assert patched.status_code == 400
        error = assert_error(await patched.get_json(), "config_invalid")
        assert message in error["message"]


async def test_a_safety_decision_on_the_safety_stream_is_recorded(make_settings, store_url):
    plugins = [("audit_scanner", audit_scanner)]
    async with running_app(make_settings(), extra_plugins=plugins) as (_app, client):

        def chat(text: str) -> dict[str, Any]:
            return {"model": "echo", "messages": [{"role": "user", "content": text}]}

        blocked = await client.post(
            "/v1/chat/completions", json=chat("a forbidden plan"), headers=ADMIN
        )
        assert blocked.status_code == 400
        warned = await client.post("/v1/chat/completions", json=chat("hmm, fine"), headers=ADMIN)
        assert warned.status_code == 200
        rows = await audit_rows(store_url, "source = 'safety'")
        page = await client.get("/gateway/audit/log?source=safety", headers=ADMIN)
    assert [(r["action"], r["outcome"], r["reason_code"], r["actor"]) for r in rows] == [
        ("safety.block", "block", "test_forbidden", "token:admin"),
        ("safety.warn", "warn", "test_hmm", "token:admin"),
    ]
    assert rows[0]["request_id"] == blocked.headers["X-Request-Id"]
    details = [r["detail"] for r in reversed((await page.get_json())["records"])]
    assert details[0]["direction"] == "input"
    assert details[0]["findings"] == [
        {"scanner": "audit_words", "action": "block", "reason": "test_forbidden"}
    ]
    assert "forbidden plan" not in str(details)  # the scanned text is not copied


async def test_approval_decisions_are_recorded_with_the_approver(
    make_settings, store_url, tmp_path
):
    settings = pipelines_settings(make_settings, write_pipelines(tmp_path, "g", GATED))
    async with running_app(settings) as (_app, client):
        runs = []
        for _ in range(2):
            started = await client.post("/pipelines/gated/start", json={}, headers=ADMIN)
            runs.append((await started.get_json())["runId"])
        for run_id in runs:
            await wait_status(client, run_id, "waiting")
        approved = await client.post(
            f"/runs/{runs[0]}/approve", json={"reason": "fine"}, headers=ADMIN
        )
        assert approved.status_code == 200
        denied = await client.post(f"/runs/{runs[1]}/deny", json={}, headers=ADMIN)
        assert denied.status_code == 200
        rows = await audit_rows(store_url, "source = 'approval'")
    assert [(r["action"], r["outcome"], r["target"], r["actor"]) for r in rows] == [
        ("approval.approved", "approved", f"{runs[0]}/review", "token:admin"),
        ("approval.denied", "denied", f"{runs[1]}/review", "token:admin"),
    ]
    assert rows[0]["request_id"] == approved.headers["X-Request-Id"]


TIMED = """
from plugins.pipelines.definition import Pipeline, approval, code

TIMED = Pipeline(
    id="timed",
    steps=[approval("review", "ok?", timeout_seconds=0.2), code("done", lambda c: 1)],
)
"""


async def test_an_approval_that_times_out_in_the_worker_is_recorded(
    make_settings, store_url, tmp_path
):
    settings = pipelines_settings(make_settings, write_pipelines(tmp_path, "t", TIMED))
    async with running_app(settings) as (_app, client):
        started = await client.post("/pipelines/timed/start", json={}, headers=ADMIN)
        run_id = (await started.get_json())["runId"]
        await wait_status(client, run_id, "failed")

        async def recorded() -> list[dict[str, Any]]:
            return await audit_rows(store_url, "source = 'approval'")

        rows = await until(recorded, "the timeout's record")
    assert [(r["action"], r["actor"], r["target"], r["reason_code"]) for r in rows] == [
        ("approval.timed_out", "timeout", f"{run_id}/review", "timed_out")
    ]
    assert rows[0]["request_id"] is None  # no request made this decision


async def test_config_changes_are_recorded_with_the_keys(make_settings, store_url):
    async with running_app(make_settings()) as (_app, client):
        patched = await client.patch(
            "/gateway/config", json={"events": {"heartbeat_seconds": 5}}, headers=ADMIN
        )
        assert patched.status_code == 200
        reloaded = await client.post("/gateway/reload", headers=ADMIN)
        assert reloaded.status_code == 200
        refused = await client.patch(
            "/gateway/config", json={"events": {"heartbeat_seconds": -1}}, headers=ADMIN
        )
        assert refused.status_code == 400
        rows = await audit_rows(store_url)
    assert [(r["source"], r["action"], r["target"], r["outcome"]) for r in rows] == [
        ("config", "config.patched", "events.heartbeat_seconds", "success"),
        ("request", "PATCH /gateway/config", None, "success"),
        ("config", "gateway.reloaded", None, "success"),
        ("request", "POST /gateway/reload", None, "success"),
        ("request", "PATCH /gateway/config", None, "refused"),
    ]
    assert rows[0]["actor"] == "token:admin"
    assert rows[4]["reason_code"] == "config_invalid"


class Vault:
    """A third-party plugin that reports to audit by event and by the AuditLog service."""

    def __init__(self) -> None:
        self.bp = Blueprint("vault", __name__)
        self.bp.post("/vault/rotate")(self.rotate)
        self.bp.post("/vault/peek")(self.peek)
        self.stored: list[Any] = []

    async def rotate(self) -> dict[str, str]:
        await context().hub.publish(
            "vault",
            "vault.rotated",
            {
                "key": "k-7",
                "audit": {
                    "action": "vault.key_rotated",
                    "target": "k-7",
                    "outcome": "success",
                    "reason_code": None,
                },
            },
        )
        await context().hub.publish("vault", "vault.noise", {"audit": {"target": 3}})
        await context().hub.publish("vault", "vault.quiet", {"key": "k-7"})
        return {"ok": "rotated"}

    async def peek(self) -> dict[str, int]:
        record = await service(AuditLog).record(
            "vault.peeked", target="k-9", outcome="denied", reason_code="sealed"
        )
        self.stored.append(record)
        return {"seq": record.seq}

    @hookimpl
    def gateway_register_blueprints(self, register: Any) -> None:
        register(self.bp)


async def test_plugin_events_with_audit_and_the_service_leave_records(make_settings, store_url):
    vault = Vault()
    async with running_app(make_settings(), extra_plugins=[("vault", vault)]) as (_app, client):
        assert (await client.post("/vault/rotate", headers=ADMIN)).status_code == 200
        peek = await client.post("/vault/peek", headers=ADMIN)
        seq = (await peek.get_json())["seq"]
        rows = await audit_rows(store_url, "source = 'plugin'")
        # The service answered with the record as stored, and it is in the store.
        stored = await audit_rows(store_url, f"seq = {seq}")
    assert [(r["action"], r["target"], r["outcome"], r["reason_code"]) for r in rows] == [
        ("vault.key_rotated", "k-7", "success", None),
        ("audit.malformed", None, "refused", "malformed_audit_object"),
        ("vault.peeked", "k-9", "denied", "sealed"),
    ]
    assert {r["actor"] for r in rows} == {"token:admin"}
    assert stored[0]["action"] == "vault.peeked"
    assert vault.stored[0].hash and vault.stored[0].seq == seq


async def test_the_audit_service_refuses_a_record_without_an_action(make_settings):
    async with running_app(make_settings()) as (app, _client):
        log = service(AuditLog, app=app)
        with pytest.raises(ValueError, match="action"):
            await log.record("  ")
        with pytest.raises(ValueError, match="JSON"):
            await log.record("x.y", detail={"bad": object()})
        with pytest.raises(ValueError, match="source"):
            await log.record("x.y", source="made-up")


def test_a_mutating_requests_record_is_in_the_store_when_its_response_arrives(
    live_server, store_url
):
    server = live_server()
    url = sqlite_url(server.state_dir) if store_url.startswith("sqlite") else store_url
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=10) as http:
        for n in range(5):
            action = "pause" if n % 2 == 0 else "resume"
            response = http.post(f"/gateway/{action}", headers={"X-Request-Id": f"r-{n}"})
            assert response.status_code == 200
            # Read right away, with no wait: the record was committed before the answer.
            rows = asyncio.run(audit_rows(url, f"request_id = 'r-{n}'"))
            assert [(r["action"], r["status"]) for r in rows] == [(f"POST /gateway/{action}", 200)]
    # A crash loses nothing that was answered: the log is in the store, and intact.
    server.stop(signal.SIGKILL)
    store = Store(url)

    async def check() -> Any:
        await store.open(MIGRATIONS)
        try:
            return await chain_verify(store)
        finally:
            await store.close()

    report = asyncio.run(check())
    assert report.ok and report.records == 5, report.as_dict()


async def test_concurrent_mutating_requests_on_two_replicas_keep_one_intact_chain(
    make_settings, store_url
):
    settings = make_settings()
    async with (
        running_app(settings) as (_a, one),
        running_app(settings) as (_b, two),
    ):

        async def hit(client: Any, n: int) -> int:
            action = "pause" if n % 2 else "resume"
            response = await client.post(f"/gateway/{action}", headers=ADMIN)
            return int(response.status_code)

        statuses = await asyncio.gather(*(hit(one if n % 2 else two, n) for n in range(60)))
        assert set(statuses) <= {200, 409}
        report = await verify(one)
        rows = await audit_rows(store_url)
    assert report["ok"], report
    assert report["records"] == 60
    assert [r["seq"] for r in rows] == list(range(1, 61))
