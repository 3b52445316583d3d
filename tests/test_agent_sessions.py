"""Agent (ACP) sessions (``/sessions``, seed 000) with a real ACP agent as the peer
(``tests/acp_agent.py``, written with the same ``agent-client-protocol`` package, run
by the gateway as a subprocess): a prompt's updates in order on the live SSE stream,
permission requests answered through the approvals API, files confined to the
workspace, resume after the agent restarts (``session/load``), prune and TTL expiry,
an agent that cannot start, no agent process left after shutdown, the pipeline step
kind ``agent`` and the bridge handing follow-ups to an ACP agent."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from host.api import Verdict, hookimpl
from tests.agent_helpers import AGENT_SCRIPT, agent_config, sse, until
from tests.conftest import (
    ADMIN,
    READER,
    assert_error,
    bearer,
    db_rows,
    gateway_cli,
    running_app,
    write_config,
)
from tests.pipelines_fixtures import write_pipelines

USER_TOKEN = "test-agent-user-token-0123456789"
USER = bearer(USER_TOKEN)
TOKENS = {"dev": {"token": USER_TOKEN, "gates": ["allow_agent_sessions", "allow_bridge_write"]}}


def make(make_settings: Any, tmp_path: Path, **agent: Any) -> Any:
    return make_settings(
        auth={"tokens": TOKENS},
        agents={"echo": agent_config(tmp_path, **agent)},
        plugins={"agents": {"sweep_seconds": 0.05}},
        events={"poll_seconds": 0.05},
    )


async def open_session(client: Any, workspace: str | None = None, headers: Any = USER) -> Any:
    body: dict[str, Any] = {"agent": "echo"}
    if workspace is not None:
        body["workspace"] = workspace
    response = await client.post("/sessions", json=body, headers=headers)
    assert response.status_code == 201, await response.get_data(as_text=True)
    return await response.get_json()


async def prompt(client: Any, session_id: str, text: str, wait: bool = True) -> Any:
    response = await client.post(
        f"/sessions/{session_id}/prompt", json={"text": text, "wait": wait}, headers=USER
    )
    assert response.status_code == (200 if wait else 202), await response.get_data(as_text=True)
    return await response.get_json()


async def events_of(client: Any, session_id: str) -> list[dict[str, Any]]:
    page = await client.get(f"/sessions/{session_id}/events?format=json&limit=1000", headers=USER)
    assert page.status_code == 200
    found: list[dict[str, Any]] = (await page.get_json())["events"]
    return found


def said(events: list[dict[str, Any]]) -> str:
    return "".join(
        e["data"]["update"]["content"]["text"]
        for e in events
        if e["type"] == "session.update" and e["data"]["kind"] == "agent_message_chunk"
    )


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_prompts_updates_arrive_on_the_sse_stream_in_order(
    make_settings, tmp_path, store_url
):
    settings = make(make_settings, tmp_path)
    async with running_app(settings) as (_app, client):
        session = await open_session(client, "proj")
        assert (session["state"], session["attached"], session["owner"]) == (
            "idle",
            True,
            "token:dev",
        )
        assert session["workspace"] == str((tmp_path / "work" / "proj").resolve())
        async with sse(client, f"/sessions/{session['id']}/events", USER) as stream:
            assert (await stream.next_event())["type"] == "session.opened"
            accepted = await prompt(client, session["id"], "hello world", wait=False)
            assert accepted["events_after"] == 1
            got = await stream.until_type("prompt.completed")
        assert [e["type"] for e in got] == [
            "prompt.started",
            *["session.update"] * 3,
            "prompt.completed",
        ]
        assert [e["id"] for e in got] == list(range(2, 7))
        assert said(got) == "echo: hello world (done)"
        assert got[-1]["data"]["stop_reason"] == "end_turn"
        record = await (await client.get(f"/sessions/{session['id']}", headers=USER)).get_json()
        assert record["state"] == "idle"
    rows = await db_rows(store_url, "SELECT agent_id, state, owner FROM agents_sessions")
    assert rows == [("echo", "idle", "token:dev")]


async def test_permission_requests_are_answered_through_the_approvals_api(
    make_settings, tmp_path, store_url
):
    settings = make(make_settings, tmp_path)
    async with running_app(settings) as (_app, client):
        session = await open_session(client, "perm")
        sid = session["id"]
        Path(session["workspace"], "notes.txt").write_text("the plan")
        for decision, answer in (("approve", "content: the plan"), ("deny", "permission denied")):
            await prompt(client, sid, "read notes.txt", wait=False)

            async def pending() -> Any:
                page = await (await client.get("/approvals", headers=USER)).get_json()
                return page["approvals"]

            [approval] = await until(pending, "the agent's permission request")
            assert (approval["source"], approval["subject"], approval["owner"]) == (
                "agent_session",
                sid,
                "token:dev",
            )
            assert approval["details"]["tool_call"]["kind"] == "read"
            # The session's owner may not answer its own agent (four eyes): an approver does.
            own = await client.post(f"/approvals/{approval['id']}/approve", json={}, headers=USER)
            assert own.status_code == 403
            decided = await client.post(
                f"/approvals/{approval['id']}/{decision}", json={}, headers=ADMIN
            )
            assert decided.status_code == 200

            async def finished() -> Any:
                found = await events_of(client, sid)
                return found if found[-1]["type"] == "prompt.completed" else None

            events = await until(finished, "the prompt's end")
            assert said(events).endswith(answer)
        types = [e["type"] for e in events]
        assert types.count("permission.requested") == 2
        assert types.count("file.read") == 1
        resolved = [e["data"]["decision"] for e in events if e["type"] == "permission.resolved"]
        assert resolved == ["approved", "denied"]
    rows = await db_rows(
        store_url, "SELECT status FROM pipelines_queue_approvals ORDER BY requested_ms"
    )
    assert rows == [("approved",), ("denied",)]


async def test_file_requests_outside_the_workspace_are_refused(make_settings, tmp_path):
    settings = make(make_settings, tmp_path, auto_approve=["read", "edit"])
    outside = tmp_path / "outside.txt"
    outside.write_text("not yours")
    async with running_app(settings) as (_app, client):
        session = await open_session(client, "box")
        sid, workspace = session["id"], Path(session["workspace"])
        (workspace / "link.txt").symlink_to(outside)
        (workspace / "inside.txt").write_text("yours")
        for path in ("../../outside.txt", str(outside), "link.txt"):
            answer = said(await prompt_events(client, sid, f"read {path}"))
            assert answer.startswith("read failed"), (path, answer)
        assert said(await prompt_events(client, sid, "read inside.txt")) == "content: yours"
        wrote = said(await prompt_events(client, sid, "write ../escape.txt x"))
        assert wrote.startswith("write failed")
        assert not (tmp_path / "work" / "escape.txt").exists()
        assert (
            said(await prompt_events(client, sid, "write sub/new.txt fine")) == "wrote sub/new.txt"
        )
        assert (workspace / "sub" / "new.txt").read_text() == "fine"
        events = await events_of(client, sid)
        refused = [e["data"]["path"] for e in events if e["type"] == "file.refused"]
        assert refused == ["../../outside.txt", str(outside), "link.txt", "../escape.txt"]
        # The policy answered: nothing was queued for an approver.
        assert (await (await client.get("/approvals?status=all", headers=ADMIN)).get_json())[
            "approvals"
        ] == []


async def prompt_events(client: Any, sid: str, text: str) -> list[dict[str, Any]]:
    accepted = await prompt(client, sid, text)
    return [e for e in await events_of(client, sid) if e["seq"] > accepted["events_after"]]


async def test_resume_after_the_agent_restarts_loads_the_session(
    make_settings, tmp_path, store_url
):
    settings = make(make_settings, tmp_path)
    async with running_app(settings) as (_app, client):
        sid = (await open_session(client))["id"]
        await prompt(client, sid, "first")
        crashed = await client.post(
            f"/sessions/{sid}/prompt", json={"text": "crash", "wait": True}, headers=USER
        )
        assert crashed.status_code == 502
        assert_error(await crashed.get_json(), "agent_prompt_failed")

        async def exited() -> Any:
            found = [e for e in await events_of(client, sid) if e["type"] == "session.agent_exited"]
            return found

        [exit_event] = await until(exited, "the agent's exit to be reported")
        assert exit_event["data"]["returncode"] == 3
        record = await (await client.get(f"/sessions/{sid}", headers=USER)).get_json()
        assert (record["state"], record["attached"]) == ("idle", False)
        resumed = await client.post(f"/sessions/{sid}/resume", headers=USER)
        assert resumed.status_code == 200
        assert (await resumed.get_json())["attached"] is True
        events = await events_of(client, sid)
        resumed_event = next(e for e in events if e["type"] == "session.resumed")
        assert resumed_event["data"]["loaded"] is True
        # Loading replayed the history, and the agent remembers it.
        assert said(await prompt_events(client, sid, "history")) == "1 prompts before"
    # After a gateway restart the session is resumed by its next prompt.
    async with running_app(settings) as (_app, client):
        record = await (await client.get(f"/sessions/{sid}", headers=USER)).get_json()
        assert (record["state"], record["attached"]) == ("idle", False)
        assert said(await prompt_events(client, sid, "history")) == "2 prompts before"


async def test_idle_sessions_expire_after_their_ttl_and_prune_removes_them(
    make_settings, tmp_path, store_url
):
    settings = make(make_settings, tmp_path, idle_ttl_seconds=1)
    async with running_app(settings) as (_app, client):
        sid = (await open_session(client))["id"]
        pid = (await events_of(client, sid))[0]["data"]["pid"]

        async def expired() -> bool:
            record = await (await client.get(f"/sessions/{sid}", headers=USER)).get_json()
            return bool(record["state"] == "expired")

        await until(expired, "the idle session to expire")
        assert not running(pid)
        assert (await events_of(client, sid))[-1]["type"] == "session.expired"
        refused = await client.post(f"/sessions/{sid}/prompt", json={"text": "hi"}, headers=USER)
        assert refused.status_code == 409
        assert_error(await refused.get_json(), "session_closed")
        kept = await client.post("/sessions/prune", json={"older_than_seconds": 3600}, headers=USER)
        assert (await kept.get_json())["removed"] == []
        pruned = await (await client.post("/sessions/prune", json={}, headers=USER)).get_json()
        assert pruned["removed"] == [sid]
        assert (await client.get(f"/sessions/{sid}", headers=USER)).status_code == 404
    assert await db_rows(store_url, "SELECT COUNT(*) FROM agents_sessions") == [(0,)]
    stream = f"agent_session:{sid}"
    assert await db_rows(
        store_url, f"SELECT COUNT(*) FROM gateway_events WHERE stream = '{stream}'"
    ) == [(0,)]


async def test_prune_expires_sessions_past_their_ttl_and_delete_stops_the_agent(
    make_settings, tmp_path
):
    settings = make(make_settings, tmp_path)
    async with running_app(settings) as (_app, client):
        sid = (await open_session(client))["id"]
        pid = (await events_of(client, sid))[0]["data"]["pid"]
        assert running(pid)
        deleted = await client.delete(f"/sessions/{sid}", headers=USER)
        assert (await deleted.get_json())["state"] == "closed"
        assert not running(pid)
        again = await client.delete(f"/sessions/{sid}", headers=USER)
        assert (again.status_code, (await again.get_json())["state"]) == (200, "closed")


async def test_an_agent_that_cannot_start_is_a_clear_error_and_leaves_no_session(
    make_settings, tmp_path, store_url
):
    for command, reason in (
        (["/nonexistent/agent-binary"], "was not found"),
        ([sys.executable, str(AGENT_SCRIPT), "--fail"], "refuses to start"),
    ):
        settings = make(make_settings, tmp_path, command=command)
        async with running_app(settings) as (_app, client):
            response = await client.post("/sessions", json={"agent": "echo"}, headers=USER)
            assert response.status_code == 502
            error = assert_error(await response.get_json(), "agent_start_failed")
            assert reason in error["message"]
            listed = await (await client.get("/sessions", headers=USER)).get_json()
            assert listed["sessions"] == []
    assert await db_rows(store_url, "SELECT COUNT(*) FROM agents_sessions") == [(0,)]


async def test_unknown_closed_and_invalid_requests(make_settings, tmp_path, store_url):
    settings = make(make_settings, tmp_path, max_sessions=1)
    async with running_app(settings) as (_app, client):
        unknown = await client.get("/sessions/ags_nope", headers=USER)
        assert unknown.status_code == 404
        assert_error(await unknown.get_json(), "session_not_found")
        for path in ("/sessions/ags_nope/resume", "/sessions/ags_nope/prompt"):
            missing = await client.post(path, json={"text": "x"}, headers=USER)
            assert missing.status_code == 404, path
        no_agent = await client.post("/sessions", json={"agent": "nope"}, headers=USER)
        assert no_agent.status_code == 404
        assert_error(await no_agent.get_json(), "agent_not_found")
        escape = await client.post(
            "/sessions", json={"agent": "echo", "workspace": "../../x"}, headers=USER
        )
        assert escape.status_code == 400
        assert "workspace" in assert_error(await escape.get_json(), "invalid_workspace")["message"]
        for body, field in (({}, "agent"), ({"agent": "echo", "extra": 1}, "extra")):
            bad = await client.post("/sessions", json=body, headers=USER)
            assert bad.status_code == 400
            assert field in assert_error(await bad.get_json(), "invalid_request_body")["message"]
        sid = (await open_session(client))["id"]
        full = await client.post("/sessions", json={"agent": "echo"}, headers=USER)
        assert full.status_code == 409
        assert_error(await full.get_json(), "too_many_sessions")
        empty = await client.post(f"/sessions/{sid}/prompt", json={}, headers=USER)
        assert empty.status_code == 400
        assert "text" in assert_error(await empty.get_json(), "invalid_request_body")["message"]
        await prompt(client, sid, "sleep", wait=False)
        busy = await client.post(f"/sessions/{sid}/prompt", json={"text": "x"}, headers=USER)
        assert busy.status_code == 409
        assert_error(await busy.get_json(), "prompt_in_progress")
        assert (await client.delete(f"/sessions/{sid}", headers=USER)).status_code == 200
        for path, payload in (
            (f"/sessions/{sid}/prompt", {"text": "x"}),
            (f"/sessions/{sid}/resume", {}),
        ):
            closed = await client.post(path, json=payload, headers=USER)
            assert closed.status_code == 409, path
            assert_error(await closed.get_json(), "session_closed")
        # Another principal sees nothing of it; the read-all gate (admin's *) does.
        assert (await client.get(f"/sessions/{sid}", headers=READER)).status_code == 404
        assert (await (await client.get("/sessions", headers=READER)).get_json())["sessions"] == []
        assert (await client.get(f"/sessions/{sid}", headers=ADMIN)).status_code == 200
        denied = await client.post("/sessions", json={"agent": "echo"}, headers=READER)
        assert denied.status_code == 403


async def test_shutdown_stops_every_agent_process(make_settings, tmp_path):
    settings = make(make_settings, tmp_path)
    async with running_app(settings) as (_app, client):
        ids = [(await open_session(client, f"w{n}"))["id"] for n in range(2)]
        pids = [(await events_of(client, sid))[0]["data"]["pid"] for sid in ids]
        await prompt(client, ids[0], "sleep", wait=False)  # one busy mid-prompt
        assert all(running(pid) for pid in pids)
    assert not any(running(pid) for pid in pids)
    async with running_app(settings) as (_app, client):
        # The sessions stay, detached: the prompt that was cut off is reported.
        for sid in ids:
            record = await (await client.get(f"/sessions/{sid}", headers=USER)).get_json()
            assert (record["state"], record["attached"]) == ("idle", False)
        assert (await events_of(client, ids[0]))[-1]["type"] == "prompt.failed"


PIPELINE = """
from plugins.agents.contract import agent
from plugins.pipelines.definition import Pipeline

ASK = Pipeline(id="ask", steps=[agent("look", "echo", "read notes.txt", workspace="pipe")])
"""


async def test_pipeline_agent_step_streams_updates_and_asks_through_the_runs_approvals(
    make_settings, tmp_path, store_url
):
    directory = write_pipelines(tmp_path, "agentic", PIPELINE)
    settings = make_settings(
        auth={"tokens": TOKENS},
        agents={"echo": agent_config(tmp_path)},
        plugins={"pipelines": {"directory": str(directory), "poll_seconds": 0.05}},
    )
    (tmp_path / "work" / "pipe").mkdir(parents=True)
    (tmp_path / "work" / "pipe" / "notes.txt").write_text("from the pipeline")
    async with running_app(settings) as (_app, client):
        started = await client.post("/pipelines/ask/start", json={"input": {}}, headers=ADMIN)
        run_id = (await started.get_json())["runId"]

        async def asked() -> Any:
            page = await (await client.get("/approvals", headers=ADMIN)).get_json()
            return [a for a in page["approvals"] if a["run_id"] == run_id]

        [approval] = await until(asked, "the agent step's permission request")
        assert approval["source"] == "agent_session"
        assert (
            await client.post(f"/approvals/{approval['id']}/approve", headers=ADMIN)
        ).status_code == 200

        async def done() -> Any:
            run = await (await client.get(f"/runs/{run_id}", headers=ADMIN)).get_json()
            return run if run["status"] in ("completed", "failed") else None

        run = await until(done, "the run to end")
        assert run["status"] == "completed", run
        assert run["output"]["text"] == "content: from the pipeline"
        page = await client.get(f"/runs/{run_id}/events?format=json&limit=1000", headers=ADMIN)
        types = [e["type"] for e in (await page.get_json())["events"]]
        assert "step.agent" in types and "step.delta" in types
        assert "approval.requested" in types and "approval.resolved" in types
        sessions = await (await client.get("/sessions", headers=ADMIN)).get_json()
        assert [(s["run_id"], s["state"]) for s in sessions["sessions"]] == [(run_id, "closed")]


async def test_bridge_hands_followups_to_an_acp_agent_as_its_prompts(
    make_settings, tmp_path, store_url
):
    settings = make(make_settings, tmp_path)
    base = "/gateway/external-coding-agent"
    async with running_app(settings) as (_app, client):
        opened = await client.post(
            f"{base}/sessions", json={"workspace": "repo", "agent": "echo"}, headers=USER
        )
        assert opened.status_code == 201, await opened.get_data(as_text=True)
        bridge = await opened.get_json()
        assert bridge["agent_session_id"].startswith("ags_")
        for text in ("first task", "second task"):
            queued = await client.post(
                f"{base}/sessions/{bridge['session_id']}/followups",
                json={"text": text},
                headers=USER,
            )
            assert queued.status_code == 201

        async def both_done() -> Any:
            page = await client.get(
                f"{base}/sessions/{bridge['session_id']}/stream?format=json&limit=1000",
                headers=USER,
            )
            events = (await page.get_json())["events"]
            done = [e for e in events if e["type"] == "agent.prompt.completed"]
            return events if len(done) == 2 else None

        events = await until(both_done, "both follow-ups to be answered")
        chunks = [
            e["data"]["update"]["content"]["text"]
            for e in events
            if e["type"] == "agent.session.update"
        ]
        assert "".join(chunks) == "echo: first task (done)echo: second task (done)"
        drained = [e["data"]["by"] for e in events if e["type"] == "followup.drained"]
        assert drained == ["agent:echo", "agent:echo"]
        nothing = await client.post(
            f"{base}/sessions/{bridge['session_id']}/followups/drain", json={}, headers=USER
        )
        assert (await nothing.get_json())["followups"] == []
        closed = await client.post(f"{base}/sessions/{bridge['session_id']}/close", headers=USER)
        assert closed.status_code == 200
        agent_session = await client.get(f"/sessions/{bridge['agent_session_id']}", headers=USER)
        assert (await agent_session.get_json())["state"] == "closed"


@pytest.mark.usefixtures("store_url")
async def test_bridge_session_for_an_agent_that_cannot_start_is_not_opened(
    make_settings, tmp_path, store_url
):
    settings = make(make_settings, tmp_path, command=["/nonexistent/agent-binary"])
    async with running_app(settings) as (_app, client):
        response = await client.post(
            "/gateway/external-coding-agent/sessions",
            json={"workspace": "repo", "agent": "echo"},
            headers=USER,
        )
        assert response.status_code == 502
        assert_error(await response.get_json(), "agent_start_failed")
    assert await db_rows(store_url, "SELECT COUNT(*) FROM bridge_sessions") == [(0,)]


def test_config_check_names_bad_agent_and_bridge_keys(tmp_path):
    write_config(
        tmp_path / "gateway.toml",
        {
            "state_dir": "state",
            "agents": {"coder": {"command": [], "max_sessions": 0}, "bad id!": {"command": ["x"]}},
            "plugins": {"coding_agent_bridge": {"max_open_sessions": 0, "typo": 1}},
        },
    )
    check = gateway_cli("config", "check", cwd=tmp_path)
    assert check.returncode == 1
    output = check.stdout + check.stderr
    for key in (
        "agents.coder.command",
        "agents.bad id!",
        "plugins.coding_agent_bridge.max_open_sessions",
    ):
        assert key in output, (key, output)


async def test_terminals_run_in_the_workspace_and_are_killed_with_the_session(
    make_settings, tmp_path
):
    settings = make(make_settings, tmp_path, terminal=True)
    async with running_app(settings) as (_app, client):
        session = await open_session(client, "term")
        sid, workspace = session["id"], Path(session["workspace"])
        (workspace / "sub").mkdir()
        ran = said(await prompt_events(client, sid, "run sub pwd"))
        assert ran == f"exit 0: {workspace / 'sub'}"
        refused = said(await prompt_events(client, sid, "run ../.. pwd"))
        assert refused.startswith("terminal refused")
        spawned = await prompt_events(client, sid, "spawn")
        created = [e for e in spawned if e["type"] == "terminal.created"]
        pid = created[0]["data"]["pid"]
        assert running(pid)
        assert (await client.delete(f"/sessions/{sid}", headers=USER)).status_code == 200
        assert not running(pid)
        events = await events_of(client, sid)
        refusals = [e["data"] for e in events if e["type"] == "file.refused"]
        assert [(r["path"], r["action"]) for r in refusals] == [("../..", "terminal")]


async def test_terminals_are_not_offered_unless_configured(make_settings, tmp_path):
    settings = make(make_settings, tmp_path)
    async with running_app(settings) as (_app, client):
        sid = (await open_session(client))["id"]
        answer = said(await prompt_events(client, sid, "run . pwd"))
        assert answer.startswith("terminal refused")


async def test_a_followup_queued_while_the_agent_is_busy_waits_for_its_turn(
    make_settings, tmp_path
):
    settings = make(make_settings, tmp_path)
    base = "/gateway/external-coding-agent"
    async with running_app(settings) as (_app, client):
        opened = await client.post(
            f"{base}/sessions", json={"workspace": "busy", "agent": "echo"}, headers=USER
        )
        bridge = await opened.get_json()
        agent_sid = bridge["agent_session_id"]
        # The agent's own prompt waits for a permission: the agent is busy meanwhile.
        await prompt(client, agent_sid, "read missing.txt", wait=False)

        async def asked() -> Any:
            page = await (await client.get("/approvals", headers=ADMIN)).get_json()
            return page["approvals"]

        [approval] = await until(asked, "the permission request")
        queued = await client.post(
            f"{base}/sessions/{bridge['session_id']}/followups",
            json={"text": "after you"},
            headers=USER,
        )
        assert queued.status_code == 201
        await client.post(f"/approvals/{approval['id']}/deny", headers=ADMIN)

        async def answered() -> Any:
            events = await events_of(client, agent_sid)
            done = [e for e in events if e["type"] == "prompt.completed"]
            return events if len(done) == 2 else None

        events = await until(answered, "the follow-up's turn")
        assert said(events) == "permission deniedecho: after you (done)"
        assert not [e for e in events if e["type"] == "prompt.failed"]


class BlockWords:
    async def scan(self, text: str, *, direction: str, context: dict[str, Any]) -> Verdict | None:
        if "rm -rf" in text:
            return Verdict("block", reason="destructive command")
        if "hunter2" in text:
            return Verdict("redact", text=text.replace("hunter2", "[secret]"), reason="password")
        return None


class ScannerPlugin:
    @hookimpl
    def gateway_register_safety_scanners(self, register: Any) -> None:
        register("words", BlockWords())


async def test_prompts_are_scanned_before_the_agent_sees_them(make_settings, tmp_path):
    settings = make(make_settings, tmp_path)
    async with running_app(settings, extra_plugins=[("scan", ScannerPlugin())]) as (_a, client):
        sid = (await open_session(client))["id"]
        blocked = await client.post(
            f"/sessions/{sid}/prompt", json={"text": "now rm -rf /"}, headers=USER
        )
        assert blocked.status_code == 400
        assert_error(await blocked.get_json(), "content_blocked")
        assert [e["type"] for e in await events_of(client, sid)] == ["session.opened"]
        assert said(await prompt_events(client, sid, "login hunter2")) == (
            "echo: login [secret] (done)"
        )


async def test_a_session_closed_through_another_gateway_stops_its_agent_here(
    make_settings, tmp_path, store_url
):
    settings = make(make_settings, tmp_path)
    async with running_app(settings) as (_a, one), running_app(settings) as (_b, two):
        sid = (await open_session(one))["id"]
        pid = (await events_of(one, sid))[0]["data"]["pid"]
        closed = await two.delete(f"/sessions/{sid}", headers=USER)
        assert (await closed.get_json())["state"] == "closed"

        async def stopped() -> bool:
            return not running(pid)

        await until(stopped, "the first gateway to stop the closed session's agent")
        record = await (await one.get(f"/sessions/{sid}", headers=USER)).get_json()
        assert (record["state"], record["attached"]) == ("closed", False)


async def test_without_the_pipelines_plugin_permission_requests_are_refused(
    make_settings, tmp_path
):
    settings = make_settings(
        auth={"tokens": TOKENS},
        agents={"echo": agent_config(tmp_path)},
        plugins={"pipelines": {"enabled": False}},
    )
    async with running_app(settings) as (_app, client):
        session = await open_session(client)
        Path(session["workspace"], "notes.txt").write_text("x")
        events = await prompt_events(client, session["id"], "read notes.txt")
        assert said(events) == "permission denied"
        [resolved] = [e["data"] for e in events if e["type"] == "permission.resolved"]
        assert "no approvals queue" in resolved["reason"]
