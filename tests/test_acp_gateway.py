"""``WS /acp`` end to end: remote editors written with the ``agent-client-protocol``
package connect over WebSocket to a real ``gateway serve``, which relays them to the test
ACP agent (``tests/acp_agent.py``). On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import websockets
from acp import PROTOCOL_VERSION, Client, RequestError, connect_to_agent, text_block
from acp.http.client import create_http_stream
from acp.schema import AllowedOutcome, RequestPermissionResponse
from acp.ws import create_websocket_stream

from tests.agent_helpers import agent_config, until
from tests.conftest import (
    ADMIN_TOKEN,
    READER_TOKEN,
    LiveServer,
    db_rows,
    gateway_cli,
    write_config,
)

pytestmark = pytest.mark.usefixtures("store_url")

EDITOR_TOKEN = "test-editor-token-0123456789"
OTHER_TOKEN = "test-other-editor-token-0123456789"
# A blocking rule for the safety tests: text matching it must never reach the editor.
ACME_RULE = {
    "rule_id": "test.code",
    "kind": "secret_leak",
    "reason_code": "test.code",
    "pattern": "ACME-[0-9]{8}",
    "matcher": "regex",
}


def config(tmp_path: Path, **acp: Any) -> dict[str, Any]:
    return {
        "auth": {
            "tokens": {
                "editor": {"token": EDITOR_TOKEN, "gates": ["allow_agent_sessions"]},
                "other": {"token": OTHER_TOKEN, "gates": ["allow_agent_sessions"]},
            }
        },
        "agents": {"echo": agent_config(tmp_path), "locked": agent_config(tmp_path)},
        "plugins": {"acp_gateway": {"agent_gates": {"locked": "allow_agent_act_all"}, **acp}},
    }


def ws_url(server: LiveServer, agent: str = "echo") -> str:
    return server.url.replace("http://", "ws://") + f"/acp?agent={agent}"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def api(server: LiveServer, method: str, path: str, body: Any = None) -> Any:
    response = httpx.request(
        method, f"{server.url}{path}", json=body, headers=server.headers, timeout=60
    )
    assert response.status_code < 300, response.text
    return response.json()


class Editor:
    """An ACP client (the package's ``Client``): what the gateway sends it, in order."""

    def __init__(self) -> None:
        self.updates: list[tuple[str, Any]] = []

    async def session_update(self, session_id: str, update: Any, **kwargs: Any) -> None:
        self.updates.append((session_id, update))

    async def request_permission(self, *args: Any, **kwargs: Any) -> Any:
        raise RequestError.method_not_found("session/request_permission")

    async def text(self, session_id: str, ending: str = " (done)") -> str:
        """The session's answer once its last chunk arrived (the package hands each
        notification to a task of its own: the prompt's response may come first)."""

        async def done() -> bool:
            found = self.chunks(session_id)
            return bool(found) and found[-1].endswith(ending)

        await until(done, f"the answer of {session_id}")
        return "".join(self.chunks(session_id))

    def chunks(self, session_id: str) -> list[str]:
        return [
            u.content.text
            for sid, u in self.updates
            if sid == session_id and u.session_update == "agent_message_chunk"
        ]


async def connect(server: LiveServer, token: str = EDITOR_TOKEN, agent: str = "echo") -> Any:
    editor = Editor()
    transport = await create_websocket_stream(ws_url(server, agent), headers=auth(token))
    conn = connect_to_agent(cast(Client, editor), transport)
    await conn.initialize(protocol_version=PROTOCOL_VERSION)
    return editor, conn, transport


async def test_a_prompts_updates_arrive_in_order_and_the_session_is_recorded(live_server, tmp_path):
    server = live_server(config=config(tmp_path))
    editor, conn, transport = await connect(server)
    try:
        session = await conn.new_session(cwd="/home/me/project", mcp_servers=[])
        answer = await conn.prompt(session_id=session.session_id, prompt=[text_block("hi there")])
        assert answer.stop_reason == "end_turn"
        await editor.text(session.session_id)
        assert editor.chunks(session.session_id) == ["echo:", " hi there", " (done)"]
    finally:
        await transport.close()
    sid = session.session_id
    rows = await db_rows(
        server.store_url, f"SELECT agent_id, created_by FROM agents_sessions WHERE id = '{sid}'"
    )
    assert rows == [("echo", "editor")]
    page = api(server, "GET", f"/sessions/{sid}/events?format=json&limit=200")
    types = [e["type"] for e in page["events"]]
    assert types[0] == "session.opened"
    assert "acp.session_opened" in types and "prompt.completed" in types
    opened = next(e for e in page["events"] if e["type"] == "acp.session_opened")
    assert opened["data"]["audit"]["action"] == "acp.session.open"
    assert opened["data"]["audit"]["actor"] == "editor"

    async def audited() -> Any:
        log = api(server, "GET", "/gateway/audit/log?action=acp.session.open")
        return log.get("records")

    records = await until(audited, "the audit record of the opened session")
    assert records[0]["target"] == sid and records[0]["actor"] == "editor"


async def test_a_permission_request_becomes_an_approval_and_the_decision_reaches_the_agent(
    live_server, tmp_path
):
    server = live_server(config=config(tmp_path))
    editor, conn, transport = await connect(server)
    try:
        sid = (await conn.new_session(cwd="/x", mcp_servers=[])).session_id
        workspace = Path(api(server, "GET", f"/sessions/{sid}")["workspace"])
        (workspace / "notes.txt").write_text("the secret plan")

        async def decide(verb: str) -> str:
            asked = asyncio.ensure_future(
                conn.prompt(session_id=sid, prompt=[text_block(f"read {workspace}/notes.txt")])
            )

            async def pending() -> Any:
                found = api(server, "GET", "/approvals")
                mine = [a for a in found["approvals"] if a.get("subject") == sid]
                return mine[0] if mine else None

            approval = await until(pending, "the permission request's approval")
            assert approval["source"] == "agent_session"
            api(server, "POST", f"/approvals/{approval['id']}/{verb}", {"reason": "test"})
            await asyncio.wait_for(asked, 30)
            ending = "plan" if verb == "approve" else "denied"
            return await editor.text(sid, ending)

        assert "the secret plan" in await decide("approve")
        editor.updates.clear()
        assert "permission denied" in await decide("deny")
    finally:
        await transport.close()


class Recorded:
    """A transport that keeps what the gateway sent."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.received: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        await self.inner.send(message)

    async def receive(self) -> dict[str, Any] | None:
        message = await self.inner.receive()
        if message is not None:
            self.received.append(message)
        return cast("dict[str, Any] | None", message)

    async def close(self) -> None:
        await self.inner.close()


class AskedEditor(Editor):
    """An editor that answers permission requests with ``answer`` (None: never)."""

    def __init__(self, answer: str | None) -> None:
        super().__init__()
        self.answer = answer
        self.asked: list[Any] = []

    async def request_permission(self, *args: Any, **kwargs: Any) -> Any:
        self.asked.append(kwargs.get("tool_call"))
        if self.answer is None:
            await asyncio.Event().wait()
        return RequestPermissionResponse(
            outcome=AllowedOutcome(outcome="selected", option_id=self.answer)
        )


async def ask_editor(server: LiveServer, editor: AskedEditor) -> tuple[Any, Recorded]:
    inner = await create_websocket_stream(ws_url(server), headers=auth(EDITOR_TOKEN))
    transport = Recorded(inner)
    conn = connect_to_agent(cast(Client, editor), transport)
    await conn.initialize(protocol_version=PROTOCOL_VERSION)
    return conn, transport


def approvals_of(server: LiveServer, sid: str) -> list[dict[str, Any]]:
    found = api(server, "GET", "/approvals?status=all")["approvals"]
    return [a for a in found if a.get("subject") == sid]


def resolved(server: LiveServer, sid: str) -> list[dict[str, Any]]:
    page = api(server, "GET", f"/sessions/{sid}/events?format=json&limit=200")
    return [e["data"] for e in page["events"] if e["type"] == "permission.resolved"]


async def test_the_editor_answering_first_decides_and_closes_the_approval(live_server, tmp_path):
    server = live_server(config=config(tmp_path))
    editor = AskedEditor("yes")
    conn, transport = await ask_editor(server, editor)
    try:
        sid = (await conn.new_session(cwd="/x", mcp_servers=[])).session_id
        workspace = Path(api(server, "GET", f"/sessions/{sid}")["workspace"])
        (workspace / "notes.txt").write_text("the editor said yes")
        await conn.prompt(session_id=sid, prompt=[text_block(f"read {workspace}/notes.txt")])
        assert "the editor said yes" in await editor.text(sid, "yes")
    finally:
        await transport.close()
    assert [c.title for c in editor.asked] == [f"Read {workspace}/notes.txt"]
    [approval] = approvals_of(server, sid)
    assert (approval["status"], approval["approver"]) == ("approved", "editor:editor")
    [decision] = resolved(server, sid)
    assert (decision["by"], decision["decision"]) == ("editor", "approved")
    assert decision["audit"]["action"] == "agent.permission"

    async def audited() -> Any:
        log = api(server, "GET", "/gateway/audit/log?action=agent.permission")
        return log.get("records")

    [record] = await until(audited, "the audit record of the editor's decision")
    assert (record["target"], record["actor"]) == (sid, "editor:editor")


async def test_an_approval_decided_first_withdraws_the_editors_request(live_server, tmp_path):
    server = live_server(config=config(tmp_path))
    editor = AskedEditor(None)
    conn, transport = await ask_editor(server, editor)
    try:
        sid = (await conn.new_session(cwd="/x", mcp_servers=[])).session_id
        workspace = Path(api(server, "GET", f"/sessions/{sid}")["workspace"])
        (workspace / "notes.txt").write_text("the queue said no")
        asked = asyncio.ensure_future(
            conn.prompt(session_id=sid, prompt=[text_block(f"read {workspace}/notes.txt")])
        )

        async def both_asked() -> Any:
            pending = [a for a in approvals_of(server, sid) if a["status"] == "pending"]
            return pending if pending and editor.asked else None

        [approval] = await until(both_asked, "the request in the queue and in the editor")
        api(server, "POST", f"/approvals/{approval['id']}/deny", {"reason": "not now"})
        await asyncio.wait_for(asked, 30)
        assert "permission denied" in await editor.text(sid, "denied")
    finally:
        await transport.close()
    [request] = [m for m in transport.received if m.get("method") == "session/request_permission"]
    [withdrawn] = [m for m in transport.received if m.get("method") == "$/cancel_request"]
    assert withdrawn["params"] == {"requestId": request["id"]}
    [decision] = resolved(server, sid)
    assert (decision["by"], decision["decision"]) == ("queue", "denied")


async def test_with_permissions_editor_only_the_editor_is_asked(live_server, tmp_path):
    settings = config(tmp_path)
    settings["agents"]["echo"]["permissions"] = "editor"
    server = live_server(config=settings)
    editor = AskedEditor("no")
    conn, transport = await ask_editor(server, editor)
    try:
        sid = (await conn.new_session(cwd="/x", mcp_servers=[])).session_id
        await conn.prompt(session_id=sid, prompt=[text_block("read notes.txt")])
        assert "permission denied" in await editor.text(sid, "denied")
    finally:
        await transport.close()
    assert len(editor.asked) == 1
    assert approvals_of(server, sid) == []
    [decision] = resolved(server, sid)
    assert (decision["by"], decision["decision"]) == ("editor", "denied")


async def test_a_dropped_editor_resumes_its_session_and_no_one_else_can(live_server, tmp_path):
    server = live_server(config=config(tmp_path))
    _, conn, transport = await connect(server)
    sid = (await conn.new_session(cwd="/x", mcp_servers=[])).session_id
    await conn.prompt(session_id=sid, prompt=[text_block("first")])
    await transport.close()  # the editor drops

    editor, conn, transport = await connect(server)
    try:
        await conn.load_session(cwd="/x", session_id=sid, mcp_servers=[])
        answer = await conn.prompt(session_id=sid, prompt=[text_block("history")])
        assert answer.stop_reason == "end_turn"
        assert answer.stop_reason == "end_turn", editor.updates
        assert await editor.text(sid, "before") == "1 prompts before", editor.updates
    finally:
        await transport.close()
    assert api(server, "GET", f"/sessions/{sid}")["state"] == "idle"

    _, conn, transport = await connect(server, OTHER_TOKEN)
    try:
        with pytest.raises(RequestError) as refused:
            await conn.load_session(cwd="/x", session_id=sid, mcp_servers=[])
        assert isinstance(refused.value.data, dict)
        assert refused.value.data["code"] == "session_not_found"
        with pytest.raises(RequestError):
            await conn.prompt(session_id=sid, prompt=[text_block("hijack")])
    finally:
        await transport.close()


async def test_an_editor_that_drops_mid_turn_leaves_the_turn_running(live_server, tmp_path):
    server = live_server(config=config(tmp_path))
    _, conn, transport = await connect(server)
    sid = (await conn.new_session(cwd="/x", mcp_servers=[])).session_id
    workspace = Path(api(server, "GET", f"/sessions/{sid}")["workspace"])
    (workspace / "a.txt").write_text("still here")
    asked = asyncio.ensure_future(
        conn.prompt(session_id=sid, prompt=[text_block(f"read {workspace}/a.txt")])
    )

    async def pending() -> Any:
        found = api(server, "GET", "/approvals")["approvals"]
        return [a for a in found if a.get("subject") == sid]

    approval = (await until(pending, "the permission request"))[0]
    await transport.close()  # the editor drops while the agent waits for an approver
    asked.cancel()
    api(server, "POST", f"/approvals/{approval['id']}/approve", {"reason": "go on"})

    async def ended() -> Any:
        page = api(server, "GET", f"/sessions/{sid}/events?format=json&limit=200")
        types = [e["type"] for e in page["events"]]
        return types if "prompt.completed" in types or "prompt.failed" in types else None

    types = await until(ended, "the end of the turn")
    assert "prompt.completed" in types and "prompt.failed" not in types
    editor, conn, transport = await connect(server)
    try:
        await conn.load_session(cwd="/x", session_id=sid, mcp_servers=[])
        await conn.prompt(session_id=sid, prompt=[text_block("history")])
        assert await editor.text(sid, "before") == "1 prompts before"
    finally:
        await transport.close()


async def test_two_editors_prompt_at_once(live_server, tmp_path):
    server = live_server(config=config(tmp_path))
    first, conn1, t1 = await connect(server)
    second, conn2, t2 = await connect(server, OTHER_TOKEN)
    try:
        s1 = (await conn1.new_session(cwd="/a", mcp_servers=[])).session_id
        s2 = (await conn2.new_session(cwd="/b", mcp_servers=[])).session_id
        await asyncio.gather(
            conn1.prompt(session_id=s1, prompt=[text_block("from one")]),
            conn2.prompt(session_id=s2, prompt=[text_block("from two")]),
        )
        await first.text(s1)
        await second.text(s2)
        assert first.chunks(s1) == ["echo:", " from one", " (done)"]
        assert second.chunks(s2) == ["echo:", " from two", " (done)"]
        assert not first.chunks(s2) and not second.chunks(s1)
    finally:
        await t1.close()
        await t2.close()


async def test_nothing_past_a_safety_block_reaches_the_editor(live_server, tmp_path):
    settings = config(tmp_path)
    settings["agents"]["echo"]["auto_approve"] = ["read"]
    settings["plugins"]["safety"] = {"leak_mode": "block", "rules": [ACME_RULE]}
    server = live_server(config=settings)
    editor, conn, transport = await connect(server)
    try:
        sid = (await conn.new_session(cwd="/x", mcp_servers=[])).session_id
        with pytest.raises(RequestError) as blocked:
            await conn.prompt(session_id=sid, prompt=[text_block("say ACME-12345678")])
        assert isinstance(blocked.value.data, dict)
        assert blocked.value.data["code"] == "content_blocked"
        workspace = Path(api(server, "GET", f"/sessions/{sid}")["workspace"])
        (workspace / "codes.txt").write_text("ACME-87654321")
        with pytest.raises(RequestError) as withheld:
            await conn.prompt(session_id=sid, prompt=[text_block(f"read {workspace}/codes.txt")])
        assert isinstance(withheld.value.data, dict)
        assert withheld.value.data["code"] == "content_blocked"
        # The prompt after it is relayed again.
        await conn.prompt(session_id=sid, prompt=[text_block("fine")])
        assert (await editor.text(sid)).endswith("echo: fine (done)")
    finally:
        await transport.close()
    assert not any("ACME-" in str(update) for _, update in editor.updates)


async def test_a_secret_split_across_two_updates_never_reaches_the_editor(live_server, tmp_path):
    settings = config(tmp_path)
    settings["plugins"]["safety"] = {"leak_mode": "block", "rules": [ACME_RULE]}
    server = live_server(config=settings)
    editor, conn, transport = await connect(server)
    try:
        sid = (await conn.new_session(cwd="/x", mcp_servers=[])).session_id
        # Each update alone is harmless; together they are the secret.
        with pytest.raises(RequestError) as blocked:
            await conn.prompt(session_id=sid, prompt=[text_block("chunks key ACME-1234|5678 ok")])
        assert isinstance(blocked.value.data, dict)
        assert blocked.value.data["code"] == "content_blocked"
        # Text that cannot grow into a match is not held back: split plain text arrives.
        await conn.prompt(session_id=sid, prompt=[text_block("chunks plain |text| (done)")])
        assert await editor.text(sid) == "key plain text (done)"
    finally:
        await transport.close()
    sent = "".join(str(update) for _, update in editor.updates)
    assert "ACME-" not in sent and "1234" not in sent and "5678" not in sent


REFUSALS = [
    (None, "echo", 401),
    ("wrong-token-0123456789", "echo", 401),
    (READER_TOKEN, "echo", 403),  # no allow_agent_sessions
    (EDITOR_TOKEN, "locked", 403),  # the agent's own gate
    (EDITOR_TOKEN, "nope", 404),
    (EDITOR_TOKEN, "", 400),
]


async def test_refused_callers_start_no_agent(live_server, tmp_path):
    # One gateway for every refusal (a gateway each cost a process start per case): each
    # is checked to have started nothing before the next is sent.
    server = live_server(config=config(tmp_path))
    for token, agent, status in REFUSALS:
        case = (token, agent, status)
        headers = auth(token) if token else {}
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(ws_url(server, agent), additional_headers=headers):
                pass
        response = refused.value.response
        assert response.status_code == status, case
        assert "error" in json.loads(response.body), case
        assert api(server, "GET", "/sessions")["sessions"] == [], case
        assert not list((tmp_path / "work").glob("*")), case
    # The gate-holding caller reaches the locked agent.
    editor, conn, transport = await connect(server, ADMIN_TOKEN, "locked")
    try:
        sid = (await conn.new_session(cwd="/x", mcp_servers=[])).session_id
        await conn.prompt(session_id=sid, prompt=[text_block("ok")])
        assert await editor.text(sid) == "echo: ok (done)"
    finally:
        await transport.close()


async def test_an_agent_that_dies_ends_the_connection_with_an_error(live_server, tmp_path):
    server = live_server(config=config(tmp_path))
    async with websockets.connect(ws_url(server), additional_headers=auth(EDITOR_TOKEN)) as ws:
        assert ws.response is not None
        assert ws.response.headers["Acp-Connection-Id"].startswith("acpc_")

        async def call(rid: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
            await ws.send(
                json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
            )
            while True:
                message = json.loads(await ws.recv())
                if message.get("id") == rid:
                    return message

        await ws.send("not json")
        assert json.loads(await ws.recv())["error"]["code"] == -32700
        assert "result" in await call(1, "initialize", {"protocolVersion": PROTOCOL_VERSION})
        new = await call(2, "session/new", {"cwd": "/x", "mcpServers": []})
        sid = new["result"]["sessionId"]
        crash = {"sessionId": sid, "prompt": [{"type": "text", "text": "crash"}]}
        failed = await call(3, "session/prompt", crash)
        assert "exit" in failed["error"]["message"]
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await ws.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1011
        assert "exited" in closed.value.rcvd.reason
    page = api(server, "GET", f"/sessions/{sid}/events?format=json&limit=200")
    assert "session.agent_exited" in [e["type"] for e in page["events"]]


def test_config_check_names_bad_remote_agents_and_bad_acp_gateway_keys(tmp_path):
    write_config(
        tmp_path / "gateway.toml",
        {
            "state_dir": "state",
            "agents": {
                "far": {"url": "wss://agents.example/acp", "headers": {"X-Key": {"env": "NOPE_"}}},
                "both": {"url": "wss://agents.example/acp", "command": ["agent"]},
                "plain": {"url": "ws://agents.example/acp"},
                "fine": {"url": "ws://127.0.0.1:9/acp", "permissions": "editor"},
            },
            "plugins": {"acp_gateway": {"max_frame_bytes": 10, "typo": 1}},
        },
    )
    check = gateway_cli("config", "check", cwd=tmp_path)
    assert check.returncode == 1
    output = check.stdout + check.stderr
    assert "agents.far.headers.X-Key" in output and "NOPE_" in output
    assert "agents.both" in output and "exactly one of command" in output
    assert "agents.plain" in output and "only to a loopback host" in output
    assert "agents.fine" not in output
    assert "plugins.acp_gateway." in output


def http_url(server: LiveServer, agent: str = "echo") -> str:
    return f"{server.url}/acp?agent={agent}"


async def test_an_editor_over_streamable_http_prompts_and_resumes(live_server, tmp_path):
    server = live_server(config=config(tmp_path))
    editor = AskedEditor("yes")
    transport = create_http_stream(http_url(server), headers=auth(EDITOR_TOKEN))
    conn = connect_to_agent(cast(Client, editor), transport)
    try:
        await conn.initialize(protocol_version=PROTOCOL_VERSION)
        sid = (await conn.new_session(cwd="/x", mcp_servers=[])).session_id
        answer = await conn.prompt(session_id=sid, prompt=[text_block("over the web")])
        assert answer.stop_reason == "end_turn"
        assert await editor.text(sid) == "echo: over the web (done)"
        assert editor.chunks(sid) == ["echo:", " over the web", " (done)"]
        # A permission request reaches the editor on the session's stream; it answers.
        workspace = Path(api(server, "GET", f"/sessions/{sid}")["workspace"])
        (workspace / "n.txt").write_text("read over http")
        await conn.prompt(session_id=sid, prompt=[text_block(f"read {workspace}/n.txt")])
        assert "read over http" in await editor.text(sid, "http")
    finally:
        await transport.close()  # DELETE /acp
    # Another HTTP connection loads the session back.
    editor = AskedEditor("yes")
    transport = create_http_stream(http_url(server), headers=auth(EDITOR_TOKEN))
    conn = connect_to_agent(cast(Client, editor), transport)
    try:
        await conn.initialize(protocol_version=PROTOCOL_VERSION)
        await conn.load_session(cwd="/x", session_id=sid, mcp_servers=[])
        await conn.prompt(session_id=sid, prompt=[text_block("history")])
        assert (await editor.text(sid, "before")).endswith("2 prompts before")
    finally:
        await transport.close()
    page = api(server, "GET", f"/sessions/{sid}/events?format=json&limit=200")
    assert "acp.session_resumed" in [e["type"] for e in page["events"]]


def test_acp_over_streamable_http_refuses_bad_requests_and_other_principals(live_server, tmp_path):
    server = live_server(config=config(tmp_path))
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": 1}}
    url = http_url(server)
    assert httpx.post(url, json=init, timeout=30).status_code == 401
    refused = httpx.post(f"{server.url}/acp?agent=locked", json=init, headers=auth(EDITOR_TOKEN))
    assert refused.status_code == 403
    opened = httpx.post(url, json=init, headers=auth(EDITOR_TOKEN), timeout=30)
    assert opened.status_code == 200 and opened.json()["id"] == 1
    cid = opened.headers["Acp-Connection-Id"]
    mine = {**auth(EDITOR_TOKEN), "Acp-Connection-Id": cid}
    theirs = {**auth(OTHER_TOKEN), "Acp-Connection-Id": cid}
    new = {"jsonrpc": "2.0", "id": 2, "method": "session/new", "params": {"cwd": "/x"}}
    cases = [
        (httpx.post(url, json=new, headers=theirs), 404, "connection_not_found"),
        (httpx.get(url, headers=theirs), 404, "connection_not_found"),
        (httpx.delete(url, headers=theirs), 404, "connection_not_found"),
        (httpx.post(url, json=new, headers=auth(EDITOR_TOKEN)), 400, "invalid_request"),
        (
            httpx.post(url, content=b"[1]", headers={**mine, "Content-Type": "application/json"}),
            400,
            "invalid_request",
        ),
        (
            httpx.post(url, content=b"{", headers={**mine, "Content-Type": "application/json"}),
            400,
            "invalid_json",
        ),
        (
            httpx.post(url, content=b"{}", headers={**mine, "Content-Type": "text/plain"}),
            415,
            "unsupported_media_type",
        ),
        (
            httpx.post(url, json={**new, "method": "session/prompt"}, headers=mine),
            400,
            "invalid_request",
        ),
        (httpx.get(url, headers={**mine, "Acp-Session-Id": "nope"}), 404, "session_not_found"),
    ]
    for response, status, code in cases:
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code
    assert api(server, "GET", "/sessions")["sessions"] == []
    assert httpx.delete(url, headers=mine).status_code == 202
    assert httpx.post(url, json=new, headers=mine).status_code == 404
