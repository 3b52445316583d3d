"""Agent (ACP) sessions and bridge sessions as jobs (``/gateway/jobs``, issue 16): listed
with kind, status, owner, start time and progress, the caller's own only (everyone's
with ``allow_jobs_read_all``), paged by cursor; cancel stops the agent process and closes
the session (another's needs ``allow_jobs_act_all``); an ended session is 409
``job_finished``. On both stores."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.agent_helpers import agent_config, until
from tests.conftest import assert_error, bearer, running_app

pytestmark = pytest.mark.usefixtures("store_url")

BASE = "/gateway/external-coding-agent"
WORK = ["allow_agent_sessions", "allow_bridge_write", "allow_jobs_cancel"]
TOKENS = {
    "alice": {"token": "test-alice-token-0123456789", "gates": WORK},
    "bob": {"token": "test-bob-token-0123456789", "gates": WORK},
    "nosy": {"token": "test-nosy-token-0123456789", "gates": [*WORK, "allow_jobs_read_all"]},
    "ops": {
        "token": "test-ops-token-0123456789",
        "gates": [*WORK, "allow_jobs_read_all", "allow_jobs_act_all"],
    },
}
ALICE, BOB, NOSY, OPS = (bearer(TOKENS[n]["token"]) for n in ("alice", "bob", "nosy", "ops"))  # type: ignore[arg-type]


@pytest.fixture
def settings(make_settings: Any, tmp_path: Path) -> Any:
    return make_settings(
        auth={"tokens": TOKENS},
        agents={"echo": agent_config(tmp_path)},
        plugins={"agents": {"sweep_seconds": 0.05}},
        events={"poll_seconds": 0.05},
    )


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def jobs(client: Any, headers: Any, query: str) -> dict[str, Any]:
    response = await client.get(f"/gateway/jobs{query}", headers=headers)
    assert response.status_code == 200, await response.get_data(as_text=True)
    body: dict[str, Any] = await response.get_json()
    return body


async def ids(client: Any, headers: Any, query: str) -> list[str]:
    return [j["id"] for j in (await jobs(client, headers, query))["jobs"]]


async def open_agent_session(client: Any, headers: Any) -> str:
    response = await client.post("/sessions", json={"agent": "echo"}, headers=headers)
    assert response.status_code == 201, await response.get_data(as_text=True)
    return str((await response.get_json())["id"])


async def agent_pid(client: Any, session_id: str, headers: Any) -> int:
    async def started() -> int | None:
        page = await client.get(f"/sessions/{session_id}/events?format=json", headers=headers)
        for event in (await page.get_json())["events"]:
            if event["data"].get("pid"):
                return int(event["data"]["pid"])
        return None

    found: int = await until(started, "the agent's pid")
    return found


async def cancel(client: Any, job_id: str, headers: Any) -> Any:
    return await client.post(
        f"/gateway/jobs/{job_id}/cancel", json={"reason": "enough"}, headers=headers
    )


async def test_agent_sessions_are_jobs_of_their_owner_and_cancel_stops_the_agent(settings):
    async with running_app(settings) as (_app, client):
        mine = await open_agent_session(client, ALICE)
        theirs = await open_agent_session(client, BOB)
        pid = await agent_pid(client, mine, ALICE)
        assert running(pid)

        listed = (await jobs(client, ALICE, "?source=agents"))["jobs"]
        assert [j["id"] for j in listed] == [f"agents:{mine}"]
        job = listed[0]
        assert job["kind"] == "agent_session" and job["status"] == "waiting"
        assert job["owner"] and job["created_by"] == "alice"
        assert job["started_ms"] == job["created_ms"] and job["finished_ms"] is None
        assert job["progress"]["state"] == "idle" and job["progress"]["attached"] is True
        assert job["detail"]["agent_id"] == "echo"
        assert set(await ids(client, NOSY, "?source=agents")) == {
            f"agents:{mine}",
            f"agents:{theirs}",
        }

        # Another's job: unreadable is 404; readable without act-all is 403.
        assert_error(
            await (await cancel(client, f"agents:{mine}", BOB)).get_json(), "job_not_found"
        )
        refused = await cancel(client, f"agents:{mine}", NOSY)
        assert refused.status_code == 403
        assert running(pid)

        done = await cancel(client, f"agents:{mine}", ALICE)
        assert done.status_code == 200, await done.get_data(as_text=True)
        assert (await done.get_json())["status"] == "cancelled"
        assert not running(pid)
        session = await (await client.get(f"/sessions/{mine}", headers=ALICE)).get_json()
        assert session["state"] == "closed" and session["attached"] is False
        assert await ids(client, ALICE, "?status=cancelled&source=agents") == [f"agents:{mine}"]
        assert await ids(client, ALICE, "?status=active&source=agents") == []

        again = await cancel(client, f"agents:{mine}", ALICE)
        assert again.status_code == 409
        assert_error(await again.get_json(), "job_finished")

        # Closed by its owner: completed, and cancelling it is 409 too.
        closed = await client.delete(f"/sessions/{theirs}", headers=BOB)
        assert closed.status_code == 200
        assert await ids(client, BOB, "?status=completed&source=agents") == [f"agents:{theirs}"]
        assert (await cancel(client, f"agents:{theirs}", OPS)).status_code == 409


async def test_another_principals_agent_session_is_cancelled_with_act_all(settings):
    async with running_app(settings) as (_app, client):
        theirs = await open_agent_session(client, BOB)
        pid = await agent_pid(client, theirs, BOB)
        done = await cancel(client, f"agents:{theirs}", OPS)
        assert done.status_code == 200, await done.get_data(as_text=True)
        assert (await done.get_json())["status"] == "cancelled"
        assert not running(pid)


async def test_bridge_sessions_are_jobs_and_cancel_closes_them(settings):
    async with running_app(settings) as (_app, client):
        opened = await client.post(f"{BASE}/sessions", json={"workspace": "/src/a"}, headers=ALICE)
        assert opened.status_code in (200, 201), await opened.get_data(as_text=True)
        mine = (await opened.get_json())["session_id"]
        other = await client.post(f"{BASE}/sessions", json={"workspace": "/src/b"}, headers=BOB)
        theirs = (await other.get_json())["session_id"]
        queued = await client.post(
            f"{BASE}/sessions/{mine}/followups", json={"text": "next"}, headers=ALICE
        )
        assert queued.status_code in (200, 201), await queued.get_data(as_text=True)

        listed = (await jobs(client, ALICE, "?source=bridge"))["jobs"]
        assert [j["id"] for j in listed] == [f"bridge:{mine}"]
        assert listed[0]["kind"] == "bridge_session" and listed[0]["status"] == "running"
        assert listed[0]["progress"]["followups_queued"] == 1
        assert listed[0]["detail"]["workspace"] == "/src/a"
        assert set(await ids(client, NOSY, "?source=bridge")) == {
            f"bridge:{mine}",
            f"bridge:{theirs}",
        }
        assert (await cancel(client, f"bridge:{theirs}", ALICE)).status_code == 404
        assert (await cancel(client, f"bridge:{theirs}", NOSY)).status_code == 403

        done = await cancel(client, f"bridge:{mine}", ALICE)
        assert done.status_code == 200, await done.get_data(as_text=True)
        assert (await done.get_json())["status"] == "cancelled"
        session = await (await client.get(f"{BASE}/sessions/{mine}", headers=ALICE)).get_json()
        assert session["state"] == "closed"
        refused = await client.post(
            f"{BASE}/sessions/{mine}/followups", json={"text": "more"}, headers=ALICE
        )
        assert refused.status_code == 409
        again = await cancel(client, f"bridge:{mine}", ALICE)
        assert again.status_code == 409
        assert_error(await again.get_json(), "job_finished")

        done = await cancel(client, f"bridge:{theirs}", OPS)
        assert (await done.get_json())["status"] == "cancelled"


async def test_session_jobs_page_by_cursor_without_repeats_or_gaps(settings):
    async with running_app(settings) as (_app, client):
        made = []
        for n in range(5):
            response = await client.post(
                f"{BASE}/sessions", json={"workspace": f"/src/{n}"}, headers=ALICE
            )
            made.append(f"bridge:{(await response.get_json())['session_id']}")
        seen: list[str] = []
        cursor = ""
        while True:
            page = await jobs(client, ALICE, f"?source=bridge&limit=2{cursor}")
            assert len(page["jobs"]) <= 2
            seen += [j["id"] for j in page["jobs"]]
            if page["next_cursor"] is None:
                break
            cursor = f"&cursor={page['next_cursor']}"
        assert sorted(seen) == sorted(made) and len(seen) == len(set(seen))
        created = [j["created_ms"] for j in (await jobs(client, ALICE, "?source=bridge"))["jobs"]]
        assert created == sorted(created, reverse=True)
