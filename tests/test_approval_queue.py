"""The approvals queue of the pipelines plugin (``ApprovalQueue``): another plugin's
approval waits beside the runs' approval gates, is listed by ``GET /approvals`` and
decided by ``POST /approvals/{id}/approve|deny`` (a run's gate by its run id too), once;
its asker awaits the decision. On both stores."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from host.api import service
from plugins.pipelines.contract import ApprovalQueue
from tests.conftest import ADMIN, READER, assert_error, bearer, db_rows, running_app
from tests.pipelines_fixtures import write_pipelines

OWNER_TOKEN = "test-queue-owner-token-0123456789"
SOURCE = """
from plugins.pipelines.definition import Pipeline, approval, code

GATED = Pipeline(id="gated", steps=[approval("review", "ok?"), code("done", lambda c: 1)])
"""


def settings_for(make_settings: Any, tmp_path: Any) -> Any:
    directory = write_pipelines(tmp_path, "queue", SOURCE)
    return make_settings(
        plugins={"pipelines": {"directory": str(directory), "poll_seconds": 0.05}},
        auth={"tokens": {"owner": {"token": OWNER_TOKEN, "gates": []}}},
    )


async def until(check: Any, what: str, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def gated_run(client: Any) -> str:
    started = await client.post("/pipelines/gated/start", json={"input": {}}, headers=ADMIN)
    run_id = str((await started.get_json())["runId"])

    async def waiting() -> bool:
        record = await (await client.get(f"/runs/{run_id}", headers=ADMIN)).get_json()
        return bool(record["status"] == "waiting")

    await until(waiting, "the run to wait at its gate")
    return run_id


async def test_queued_approval_is_listed_beside_run_gates_and_decided_once(
    make_settings, tmp_path, store_url
):
    settings = settings_for(make_settings, tmp_path)
    async with running_app(settings) as (app, client):
        run_id = await gated_run(client)
        queue = service(ApprovalQueue, app=app)
        approval_id = await queue.create(
            source="agent_session",
            subject="ses_1",
            message="run `ls`?",
            owner="token:owner",
            details={"tool": "ls"},
        )
        waiter = asyncio.create_task(queue.wait(approval_id))
        listed = await (await client.get("/approvals", headers=ADMIN)).get_json()
        by_id = {a["id"]: a for a in listed["approvals"]}
        assert by_id[run_id]["source"] == "pipeline_run"
        assert by_id[run_id]["run_id"] == run_id
        mine = by_id[approval_id]
        assert (mine["source"], mine["subject"], mine["status"]) == (
            "agent_session",
            "ses_1",
            "pending",
        )
        assert mine["details"] == {"tool": "ls"}
        # Its owner lists it (not the run gate, which is the admin's); a stranger sees none.
        own = await (await client.get("/approvals", headers=bearer(OWNER_TOKEN))).get_json()
        assert [a["id"] for a in own["approvals"]] == [approval_id]
        stranger = await (await client.get("/approvals", headers=READER)).get_json()
        assert stranger["approvals"] == []
        # Deciding needs the approve gate; the owner alone may not approve (four eyes).
        refused = await client.post(
            f"/approvals/{approval_id}/approve", json={}, headers=bearer(OWNER_TOKEN)
        )
        assert refused.status_code == 403
        approved = await client.post(
            f"/approvals/{approval_id}/approve", json={"reason": "fine"}, headers=ADMIN
        )
        assert approved.status_code == 200, await approved.get_data(as_text=True)
        body = await approved.get_json()
        assert (body["status"], body["approver"], body["reason"]) == ("approved", "admin", "fine")
        decision = await asyncio.wait_for(waiter, 10)
        assert decision.approved and decision.approver == "admin"
        again = await client.post(f"/approvals/{approval_id}/deny", json={}, headers=ADMIN)
        assert again.status_code == 409
        assert_error(await again.get_json(), "approval_not_pending")
        # A run's gate is decided through the same route, by its run id.
        run_gate = await client.post(f"/approvals/{run_id}/approve", json={}, headers=ADMIN)
        assert run_gate.status_code == 200
        assert (await run_gate.get_json())["status"] == "approved"
        unknown = await client.post("/approvals/apr_nope/approve", json={}, headers=ADMIN)
        assert unknown.status_code == 404
        assert_error(await unknown.get_json(), "approval_not_found")
        no_run = await client.post("/approvals/nope/deny", json={}, headers=ADMIN)
        assert_error(await no_run.get_json(), "approval_not_found")
    rows = await db_rows(
        store_url,
        f"SELECT status, approver FROM pipelines_queue_approvals WHERE id = '{approval_id}'",
    )
    assert rows == [("approved", "admin")]


async def test_denied_timed_out_and_cancelled_approvals_reach_their_waiter(
    make_settings, tmp_path, store_url
):
    settings = settings_for(make_settings, tmp_path)
    async with running_app(settings) as (app, client):
        queue = service(ApprovalQueue, app=app)
        ask: dict[str, Any] = {
            "source": "agent_session",
            "subject": "ses_2",
            "message": "m",
            "owner": None,
        }
        denied_id = await queue.create(**ask)
        waiter = asyncio.create_task(queue.wait(denied_id))
        deny = await client.post(f"/approvals/{denied_id}/deny", json={}, headers=ADMIN)
        assert deny.status_code == 200
        assert (await asyncio.wait_for(waiter, 10)).status == "denied"

        late_id = await queue.create(**ask)
        late = await queue.wait(late_id, timeout=0.05)
        assert (late.status, late.approver) == ("timed_out", "timeout")
        after = await client.post(f"/approvals/{late_id}/approve", json={}, headers=ADMIN)
        assert after.status_code == 409

        gone_id = await queue.create(**ask)
        assert await queue.cancel_subject("agent_session", "ses_2", "session closed") == 1
        assert (await queue.wait(gone_id)).status == "cancelled"
        all_of_them = await (await client.get("/approvals?status=all", headers=ADMIN)).get_json()
        statuses = {a["id"]: a["status"] for a in all_of_them["approvals"]}
        assert statuses == {denied_id: "denied", late_id: "timed_out", gone_id: "cancelled"}
        pending = await (await client.get("/approvals", headers=ADMIN)).get_json()
        assert pending["approvals"] == []
