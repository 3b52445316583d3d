"""The external coding-agent bridge (``/gateway/external-coding-agent/...``, seed 004):
sessions per workspace (reused, capped), progress events, the follow-up queue drained
once (across a restart and between two gateway instances on one store), the live SSE
stream with ``Last-Event-ID`` resume, close and reap, bad input, ownership, and the
safety scan of follow-ups. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from host.api import Verdict, hookimpl
from tests.agent_helpers import sse
from tests.conftest import ADMIN, READER, assert_error, bearer, db_rows, running_app

BASE = "/gateway/external-coding-agent"
AGENT_TOKEN = "test-bridge-agent-token-0123456789"
OTHER_TOKEN = "test-bridge-other-token-0123456789"
AGENT = bearer(AGENT_TOKEN)
OTHER = bearer(OTHER_TOKEN)
TOKENS = {
    "coder": {"token": AGENT_TOKEN, "gates": ["allow_bridge_write"]},
    "other": {"token": OTHER_TOKEN, "gates": ["allow_bridge_write"]},
}

pytestmark = pytest.mark.usefixtures("store_url")


@pytest.fixture
def settings(make_settings: Any) -> Any:
    return make_settings(
        auth={"tokens": TOKENS},
        plugins={"coding_agent_bridge": {"max_open_sessions": 3}},
        events={"poll_seconds": 0.05},
    )


async def open_session(client: Any, workspace: str = "/src/app", headers: Any = AGENT) -> Any:
    response = await client.post(f"{BASE}/sessions", json={"workspace": workspace}, headers=headers)
    assert response.status_code in (200, 201), await response.get_data(as_text=True)
    return await response.get_json()


async def post(client: Any, path: str, body: Any = None, headers: Any = AGENT) -> Any:
    return await client.post(
        f"{BASE}{path}", json=body if body is not None else {}, headers=headers
    )


async def test_open_reuses_the_workspace_session_and_caps_open_sessions(settings, store_url):
    async with running_app(settings) as (_app, client):
        first = await client.post(
            f"{BASE}/sessions", json={"workspace": "/src/app", "metadata": {"k": 1}}, headers=AGENT
        )
        assert first.status_code == 201
        opened = await first.get_json()
        assert (opened["state"], opened["owner"], opened["reused"]) == (
            "open",
            "token:coder",
            False,
        )
        again = await client.post(f"{BASE}/sessions", json={"workspace": "/src/app"}, headers=AGENT)
        assert again.status_code == 200
        assert (await again.get_json())["session_id"] == opened["session_id"]
        assert (await again.get_json())["reused"] is True
        # Another principal's session for the same workspace is its own.
        theirs = await open_session(client, "/src/app", OTHER)
        assert theirs["session_id"] != opened["session_id"]
        await open_session(client, "/src/lib")
        full = await client.post(f"{BASE}/sessions", json={"workspace": "/src/x"}, headers=AGENT)
        assert full.status_code == 409
        assert_error(await full.get_json(), "too_many_sessions")
        got = await client.get(f"{BASE}/sessions/{opened['session_id']}", headers=AGENT)
        assert (await got.get_json())["metadata"] == {"k": 1}
    rows = await db_rows(store_url, "SELECT state FROM bridge_sessions")
    assert sorted(rows) == [("open",)] * 3


async def test_bad_requests_name_the_field_and_write_nothing(settings, store_url):
    async with running_app(settings) as (_app, client):
        for body, field in (
            ({}, "workspace"),
            ({"workspace": ""}, "workspace"),
            ({"workspace": "w", "surprise": 1}, "surprise"),
            ({"workspace": 7}, "workspace"),
        ):
            bad = await client.post(f"{BASE}/sessions", json=body, headers=AGENT)
            assert bad.status_code == 400, body
            error = assert_error(await bad.get_json(), "invalid_request_body")
            assert field in error["message"]
        unknown = await client.get(f"{BASE}/sessions/bcs_nope", headers=AGENT)
        assert unknown.status_code == 404
        assert_error(await unknown.get_json(), "session_not_found")
        for path, payload in (
            ("/progress", {}),
            ("/followups", {"text": "x"}),
            ("/followups/drain", {}),
            ("/close", {}),
        ):
            missing = await post(client, f"/sessions/bcs_nope{path}", payload)
            assert missing.status_code == 404, path
            assert_error(await missing.get_json(), "session_not_found")
        session = await open_session(client)
        sid = session["session_id"]
        for path, invalid, field in (
            ("/followups", {}, "text"),
            ("/followups", {"text": ""}, "text"),
            ("/followups/drain", {"limit": 0}, "limit"),
            ("/progress", {"kind": "bad kind!"}, "kind"),
            ("/progress", {"data": [1]}, "data"),
        ):
            bad = await post(client, f"/sessions/{sid}{path}", invalid)
            assert bad.status_code == 400, (path, invalid)
            assert field in assert_error(await bad.get_json(), "invalid_request_body")["message"]
        denied = await post(client, f"/sessions/{sid}/progress", {}, READER)
        assert denied.status_code == 403
    assert await db_rows(store_url, "SELECT COUNT(*) FROM bridge_followups") == [(0,)]


async def test_followups_drain_oldest_first_once_and_closed_sessions_refuse(settings, store_url):
    async with running_app(settings) as (_app, client):
        sid = (await open_session(client))["session_id"]
        for n in range(5):
            queued = await post(client, f"/sessions/{sid}/followups", {"text": f"do {n}"})
            assert queued.status_code == 201
            assert (await queued.get_json())["queued"] == n + 1
        first = await (
            await post(client, f"/sessions/{sid}/followups/drain", {"limit": 2})
        ).get_json()
        assert [f["text"] for f in first["followups"]] == ["do 0", "do 1"]
        assert first["remaining"] == 3
        rest = await (await post(client, f"/sessions/{sid}/followups/drain")).get_json()
        assert [f["text"] for f in rest["followups"]] == ["do 2", "do 3", "do 4"]
        assert all(
            f["status"] == "drained" and f["drained_by"] == "coder" for f in rest["followups"]
        )
        empty = await (await post(client, f"/sessions/{sid}/followups/drain")).get_json()
        assert (empty["followups"], empty["remaining"]) == ([], 0)
        progress = await post(client, f"/sessions/{sid}/progress", {"message": "tests pass"})
        assert progress.status_code == 201
        assert (await progress.get_json())["data"]["message"] == "tests pass"
        closed = await post(client, f"/sessions/{sid}/close", {"reason": "done"})
        assert (await closed.get_json())["state"] == "closed"
        for path, body in (
            ("/progress", {"message": "late"}),
            ("/followups", {"text": "late"}),
            ("/followups/drain", {}),
        ):
            refused = await post(client, f"/sessions/{sid}{path}", body)
            assert refused.status_code == 409, path
            assert_error(await refused.get_json(), "session_closed")
        again = await post(client, f"/sessions/{sid}/close")
        assert (await again.get_json())["close_reason"] == "done"
        # A closed session's workspace gets a new session.
        fresh = await open_session(client)
        assert fresh["session_id"] != sid
    assert await db_rows(
        store_url, "SELECT COUNT(*) FROM bridge_followups WHERE status = 'queued'"
    ) == [(0,)]


async def test_sessions_events_and_followups_survive_a_restart_and_drain_once(settings, store_url):
    async with running_app(settings) as (_app, client):
        sid = (await open_session(client))["session_id"]
        await post(client, f"/sessions/{sid}/progress", {"message": "half way"})
        for n in range(3):
            await post(client, f"/sessions/{sid}/followups", {"text": f"next {n}"})
        handed = await (
            await post(client, f"/sessions/{sid}/followups/drain", {"limit": 1})
        ).get_json()
        assert [f["text"] for f in handed["followups"]] == ["next 0"]
    async with running_app(settings) as (_app, client):
        record = await (await client.get(f"{BASE}/sessions/{sid}", headers=AGENT)).get_json()
        assert (record["state"], record["followups_queued"]) == ("open", 2)
        page = await client.get(f"{BASE}/sessions/{sid}/stream?format=json", headers=AGENT)
        types = [e["type"] for e in (await page.get_json())["events"]]
        assert types == ["session.opened", "progress", *["followup.queued"] * 3, "followup.drained"]
        rest = await (await post(client, f"/sessions/{sid}/followups/drain")).get_json()
        assert [f["text"] for f in rest["followups"]] == ["next 1", "next 2"]
        assert (await (await post(client, f"/sessions/{sid}/followups/drain")).get_json())[
            "followups"
        ] == []


async def test_two_gateways_on_one_store_hand_each_followup_to_one_drainer(settings, store_url):
    count = 40
    async with running_app(settings) as (_a, one), running_app(settings) as (_b, two):
        sid = (await open_session(one))["session_id"]
        for n in range(count):
            await post(one if n % 2 else two, f"/sessions/{sid}/followups", {"text": f"t{n}"})

        async def drainer(client: Any) -> list[str]:
            got: list[str] = []
            while True:
                page = await (
                    await post(client, f"/sessions/{sid}/followups/drain", {"limit": 3})
                ).get_json()
                if not page["followups"]:
                    return got
                got += [f["id"] for f in page["followups"]]

        results = await asyncio.gather(drainer(one), drainer(two), drainer(one), drainer(two))
    handed = [i for r in results for i in r]
    assert len(handed) == count and len(set(handed)) == count
    rows = await db_rows(
        store_url, "SELECT COUNT(*) FROM bridge_followups WHERE status = 'drained'"
    )
    assert rows == [(count,)]


async def test_stream_is_live_and_a_reconnect_with_last_event_id_misses_nothing(settings):
    async with running_app(settings) as (_app, client):
        sid = (await open_session(client))["session_id"]
        path = f"{BASE}/sessions/{sid}/stream"
        async with sse(client, path, AGENT) as stream:
            assert (await stream.next_event())["type"] == "session.opened"
            for n in range(3):
                await post(client, f"/sessions/{sid}/progress", {"message": f"step {n}"})
                live = await stream.next_event()
                assert (live["type"], live["data"]["message"]) == ("progress", f"step {n}")
            last = live["id"]
        # Disconnected: events go on meanwhile.
        for n in range(3, 6):
            await post(client, f"/sessions/{sid}/progress", {"message": f"step {n}"})
        await post(client, f"/sessions/{sid}/followups", {"text": "and then"})
        async with sse(client, path, {**AGENT, "Last-Event-ID": str(last)}) as stream:
            missed = [await stream.next_event() for _ in range(4)]
            assert [e["id"] for e in missed] == [last + 1, last + 2, last + 3, last + 4]
            assert [e["data"].get("message") for e in missed[:3]] == ["step 3", "step 4", "step 5"]
            assert missed[3]["type"] == "followup.queued"
            await post(client, f"/sessions/{sid}/close")
            assert (await stream.next_event())["type"] == "session.closed"
            with pytest.raises(EOFError):
                await stream.next_event(timeout=10)  # the stream ends with the session


async def test_reap_expires_idle_sessions_of_the_caller(settings, store_url):
    async with running_app(settings) as (_app, client):
        mine = (await open_session(client))["session_id"]
        theirs = (await open_session(client, "/src/app", OTHER))["session_id"]
        kept = await (await post(client, "/reap", {"idle_seconds": 3600})).get_json()
        assert kept["reaped"] == []
        reaped = await (await post(client, "/reap", {"idle_seconds": 0})).get_json()
        assert reaped["reaped"] == [mine]
        record = await (await client.get(f"{BASE}/sessions/{mine}", headers=AGENT)).get_json()
        assert record["state"] == "expired"
        refused = await post(client, f"/sessions/{mine}/followups", {"text": "x"})
        assert refused.status_code == 409
        everyone = await (await post(client, "/reap", {"idle_seconds": 0}, ADMIN)).get_json()
        assert everyone["reaped"] == [theirs]
    assert await db_rows(store_url, "SELECT state FROM bridge_sessions") == [("expired",)] * 2


async def test_another_principals_session_is_404_and_lists_are_filtered(settings):
    async with running_app(settings) as (_app, client):
        sid = (await open_session(client))["session_id"]
        await post(client, f"/sessions/{sid}/followups", {"text": "private"})
        for headers in (OTHER, READER):
            hidden = await client.get(f"{BASE}/sessions/{sid}", headers=headers)
            assert hidden.status_code == 404
            stream = await client.get(f"{BASE}/sessions/{sid}/stream?format=json", headers=headers)
            assert stream.status_code == 404
            listed = await (await client.get(f"{BASE}/sessions", headers=headers)).get_json()
            assert listed["sessions"] == []
        for path, body in (
            ("/followups", {"text": "x"}),
            ("/followups/drain", {}),
            ("/progress", {"message": "x"}),
            ("/close", {}),
        ):
            refused = await post(client, f"/sessions/{sid}{path}", body, OTHER)
            assert refused.status_code == 404, path
        admin = await (await client.get(f"{BASE}/sessions", headers=ADMIN)).get_json()
        assert [s["session_id"] for s in admin["sessions"]] == [sid]
        mine = await (await client.get(f"{BASE}/sessions", headers=AGENT)).get_json()
        assert mine["sessions"][0]["followups_queued"] == 1


class Words:
    async def scan(self, text: str, *, direction: str, context: dict[str, Any]) -> Verdict | None:
        if "rm -rf" in text:
            return Verdict("block", reason="destructive command")
        if "hunter2" in text:
            return Verdict("redact", text=text.replace("hunter2", "[secret]"), reason="password")
        return None


class SafetyPlugin:
    seen: list[dict[str, Any]] = []

    @hookimpl
    def gateway_register_safety_scanners(self, register: Any) -> None:
        register("words", Words())


async def test_followups_are_scanned_blocked_ones_queue_nothing_redacted_ones_queue_redacted(
    settings, store_url
):
    async with running_app(settings, extra_plugins=[("safety_test", SafetyPlugin())]) as (
        _a,
        client,
    ):
        sid = (await open_session(client))["session_id"]
        blocked = await post(client, f"/sessions/{sid}/followups", {"text": "now rm -rf /"})
        assert blocked.status_code == 400
        assert_error(await blocked.get_json(), "content_blocked")
        redacted = await post(client, f"/sessions/{sid}/followups", {"text": "login hunter2"})
        assert redacted.status_code == 201
        body = await redacted.get_json()
        assert (body["followup"]["text"], body["redacted"]) == ("login [secret]", True)
        drained = await (await post(client, f"/sessions/{sid}/followups/drain")).get_json()
        assert [f["text"] for f in drained["followups"]] == ["login [secret]"]
    assert await db_rows(store_url, "SELECT text FROM bridge_followups") == [("login [secret]",)]


async def test_many_concurrent_readers_of_a_session_do_not_starve_the_store_pool(settings):
    # Each read once held a store connection while asking for a second one (the stream's
    # last seq): fifty at once took every pooled connection and waited for each other.
    async with running_app(settings) as (_app, client):
        sid = (await open_session(client))["session_id"]
        reads = [client.get(f"{BASE}/sessions/{sid}", headers=AGENT) for _ in range(50)]
        answers = await asyncio.wait_for(asyncio.gather(*reads), 120)
        assert {a.status_code for a in answers} == {200}
        assert {(await a.get_json())["last_event_seq"] for a in answers} == {1}


async def test_a_bridge_session_served_by_an_acp_agent_needs_the_agent_gate(settings, store_url):
    async with running_app(settings) as (_app, client):
        refused = await client.post(
            f"{BASE}/sessions", json={"workspace": "/w", "agent": "echo"}, headers=AGENT
        )
        assert refused.status_code == 403
        assert_error(await refused.get_json(), "policy_gate_denied")
    assert await db_rows(store_url, "SELECT COUNT(*) FROM bridge_sessions") == [(0,)]
