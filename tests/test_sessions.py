"""Sessions over HTTP (``/gateway/sessions``), on SQLite and PostgreSQL: appends, the
head and lineage, reset, branch, listing, ownership, refusals that write nothing,
concurrent appends that lose nothing, and a restart that keeps everything."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import ADMIN, READER, assert_error, db_rows, metric, running_app
from tests.sessions_fixtures import (
    ALICE,
    AUDITOR,
    BOB,
    OPERATOR,
    app_client,
    append,
    settings_for,
)

pytestmark = pytest.mark.usefixtures("store_url")
__all__ = ["app_client"]


async def count(store_url: str, table: str = "sessions_messages") -> int:
    return int((await db_rows(store_url, f"SELECT COUNT(*) FROM {table}"))[0][0])


async def test_append_builds_a_conversation_with_a_head_and_a_lineage(app_client, store_url):
    _app, client = app_client
    first = await append(client, "chat-1", "hello")
    assert first.status_code == 201
    body = await first.get_json()
    assert body["message"]["seq"] == 1 and body["message"]["parent_id"] is None
    assert body["session"]["owner"] == "token:alice" and body["session"]["message_count"] == 1
    second = await (await append(client, "chat-1", "hi there", role="assistant")).get_json()
    assert second["message"]["parent_id"] == body["message"]["id"]
    detail = await (await client.get("/gateway/sessions/chat-1", headers=ALICE)).get_json()
    assert detail["head_id"] == second["message"]["id"]
    assert detail["lineage"] == [body["message"]["id"], second["message"]["id"]]
    assert [(m["role"], m["content"]) for m in detail["messages"]] == [
        ("user", "hello"),
        ("assistant", "hi there"),
    ]
    rows = await db_rows(store_url, "SELECT role, content, seq FROM sessions_messages ORDER BY seq")
    assert rows == [("user", "hello", 1), ("assistant", "hi there", 2)]


async def test_append_under_an_earlier_message_branches_within_the_session(app_client):
    _app, client = app_client
    root = (await (await append(client, "tree", "q1")).get_json())["message"]
    await append(client, "tree", "a1", role="assistant")
    other = await append(client, "tree", "q1 again, differently", parent_id=root["id"])
    assert other.status_code == 201
    detail = await (await client.get("/gateway/sessions/tree", headers=ALICE)).get_json()
    assert [m["content"] for m in detail["messages"]] == ["q1", "q1 again, differently"]
    assert [m["content"] for m in detail["entries"]] == ["q1", "a1", "q1 again, differently"]
    assert detail["message_count"] == 3
    unknown = await append(client, "tree", "x", parent_id="0" * 32)
    assert unknown.status_code == 404
    assert_error(await unknown.get_json(), "message_not_found")


async def test_append_refusals_write_nothing(app_client, store_url):
    _app, client = app_client
    denied = await append(client, "s", "hello", headers=READER)
    assert denied.status_code == 403
    assert_error(await denied.get_json(), "policy_gate_denied")
    bad_role = await append(client, "s", "hello", role="wizard")
    assert bad_role.status_code == 400
    assert "role" in (await bad_role.get_json())["error"]["message"]
    missing = await client.post("/gateway/sessions/s/append", json={"role": "user"}, headers=ALICE)
    assert missing.status_code == 400
    assert "content" in (await missing.get_json())["error"]["message"]
    for key in ("bad key", "a" * 129, "..", "-x", "x%2Fy"):
        bad_key = await append(client, key, "hello")
        assert bad_key.status_code in (400, 404), key
    bad = await append(client, "has space", "hello")
    assert_error(await bad.get_json(), "invalid_session_key")
    huge = await append(client, "s", "x" * 100_001)
    assert huge.status_code == 413
    assert_error(await huge.get_json(), "content_too_large")
    assert await count(store_url) == 0
    assert await count(store_url, "sessions_sessions") == 0


async def test_the_content_bound_is_configurable(make_settings, store_url):
    async with running_app(settings_for(make_settings, max_content_chars=10)) as (_app, client):
        assert (await append(client, "s", "x" * 10)).status_code == 201
        assert (await append(client, "s", "x" * 11)).status_code == 413
    assert await count(store_url) == 1


async def test_unknown_session_is_404(app_client):
    _app, client = app_client
    for path in ("/gateway/sessions/nope",):
        missing = await client.get(path, headers=ALICE)
        assert missing.status_code == 404
        assert_error(await missing.get_json(), "session_not_found")
    reset = await client.post("/gateway/sessions/nope/reset", headers=ALICE)
    assert reset.status_code == 404
    branch = await client.post("/gateway/sessions/nope/branch", json={}, headers=ALICE)
    assert branch.status_code == 404


async def test_reset_starts_afresh_and_keeps_the_messages(app_client, store_url):
    _app, client = app_client
    await append(client, "r", "old question")
    denied = await client.post("/gateway/sessions/r/reset", headers=READER)
    assert denied.status_code == 403
    reset = await client.post("/gateway/sessions/r/reset", headers=ALICE)
    assert reset.status_code == 200
    assert (await reset.get_json())["head_id"] is None
    fresh = await (await append(client, "r", "new question")).get_json()
    assert fresh["message"]["parent_id"] is None
    detail = await (await client.get("/gateway/sessions/r", headers=ALICE)).get_json()
    assert [m["content"] for m in detail["messages"]] == ["new question"]
    assert [m["content"] for m in detail["entries"]] == ["old question", "new question"]
    assert await count(store_url) == 2


async def test_branch_copies_the_lineage_up_to_a_message_into_a_new_session(app_client):
    _app, client = app_client
    ids = []
    for n, role in enumerate(("user", "assistant", "user", "assistant")):
        sent = await (await append(client, "main", f"m{n}", role=role)).get_json()
        ids.append(sent["message"]["id"])
    branched = await client.post(
        "/gateway/sessions/main/branch",
        json={"entry_id": ids[1], "new_session_key": "alt"},
        headers=ALICE,
    )
    assert branched.status_code == 201
    body = await branched.get_json()
    assert body["session_key"] == "alt" and body["owner"] == "token:alice"
    assert [m["content"] for m in body["messages"]] == ["m0", "m1"]
    assert body["metadata"]["branched_from"] == {
        "session_key": "main",
        "session_id": body["metadata"]["branched_from"]["session_id"],
        "message_id": ids[1],
    }
    # The copy is its own: appending to it leaves the original alone.
    await append(client, "alt", "m2 (alt)")
    original = await (await client.get("/gateway/sessions/main", headers=ALICE)).get_json()
    assert [m["content"] for m in original["messages"]] == ["m0", "m1", "m2", "m3"]
    alt = await (await client.get("/gateway/sessions/alt", headers=ALICE)).get_json()
    assert [m["content"] for m in alt["messages"]] == ["m0", "m1", "m2 (alt)"]
    # Default: at the head, under a generated key.
    whole = await (await client.post("/gateway/sessions/main/branch", headers=ALICE)).get_json()
    assert whole["session_key"].startswith("main.branch-") and len(whole["messages"]) == 4
    taken = await client.post(
        "/gateway/sessions/main/branch", json={"new_session_key": "alt"}, headers=ALICE
    )
    assert taken.status_code == 409
    assert_error(await taken.get_json(), "session_exists")
    unknown = await client.post(
        "/gateway/sessions/main/branch", json={"entry_id": "f" * 32}, headers=ALICE
    )
    assert unknown.status_code == 404
    bad = await client.post(
        "/gateway/sessions/main/branch", json={"new_session_key": "no/slash"}, headers=ALICE
    )
    assert bad.status_code == 400
    assert "new_session_key" in (await bad.get_json())["error"]["message"]
    denied = await client.post("/gateway/sessions/main/branch", json={}, headers=READER)
    assert denied.status_code == 403


async def test_list_sorts_by_last_activity_with_counts_and_pages(app_client):
    _app, client = app_client
    for key in ("a", "b", "c"):
        await append(client, key, f"{key}1")
    await append(client, "a", "a2")  # a is now the most recent
    listed = await (await client.get("/gateway/sessions", headers=ALICE)).get_json()
    assert [s["session_key"] for s in listed["sessions"]] == ["a", "c", "b"]
    assert [s["message_count"] for s in listed["sessions"]] == [2, 1, 1]
    assert listed["total"] == 3 and listed["next_offset"] is None
    page = await (await client.get("/gateway/sessions?limit=2", headers=ALICE)).get_json()
    assert len(page["sessions"]) == 2 and page["next_offset"] == 2
    rest = await (await client.get("/gateway/sessions?limit=2&offset=2", headers=ALICE)).get_json()
    assert [s["session_key"] for s in rest["sessions"]] == ["b"]
    created = await (
        await client.get("/gateway/sessions?sort=created&order=asc", headers=ALICE)
    ).get_json()
    assert [s["session_key"] for s in created["sessions"]] == ["a", "b", "c"]
    bad = await client.get("/gateway/sessions?limit=0", headers=ALICE)
    assert bad.status_code == 400
    assert "limit" in (await bad.get_json())["error"]["message"]


async def test_keys_are_per_owner_and_others_sessions_are_hidden(app_client):
    _app, client = app_client
    await append(client, "support", "alice's secret", headers=ALICE)
    await append(client, "support", "bob's own", headers=BOB)
    mine = await (await client.get("/gateway/sessions/support", headers=BOB)).get_json()
    assert [m["content"] for m in mine["messages"]] == ["bob's own"]
    listed = await (await client.get("/gateway/sessions", headers=BOB)).get_json()
    assert [s["owner"] for s in listed["sessions"]] == ["token:bob"]
    hidden = await client.get("/gateway/sessions/support?owner=token:alice", headers=BOB)
    assert hidden.status_code == 404
    assert "alice's secret" not in await hidden.get_data(as_text=True)
    # Bob cannot write into Alice's session either: it is as if it did not exist.
    refused = await client.post(
        "/gateway/sessions/support/append?owner=token:alice",
        json={"role": "user", "content": "x"},
        headers=BOB,
    )
    assert refused.status_code == 404
    assert (await client.get("/gateway/sessions", headers=READER)).status_code == 200
    assert (await (await client.get("/gateway/sessions", headers=READER)).get_json())[
        "sessions"
    ] == []


async def test_read_all_reads_and_act_all_acts_on_others_sessions(app_client):
    _app, client = app_client
    await append(client, "only-alice", "hello", headers=ALICE)
    await append(client, "shared-name", "alice", headers=ALICE)
    await append(client, "shared-name", "bob", headers=BOB)
    everyone = await (await client.get("/gateway/sessions", headers=AUDITOR)).get_json()
    assert everyone["total"] == 3
    # One owner has the key: a read-all holder reads it without naming the owner.
    found = await client.get("/gateway/sessions/only-alice", headers=AUDITOR)
    assert found.status_code == 200
    ambiguous = await client.get("/gateway/sessions/shared-name", headers=AUDITOR)
    assert ambiguous.status_code == 409
    assert_error(await ambiguous.get_json(), "session_ambiguous")
    named = await client.get("/gateway/sessions/shared-name?owner=token:bob", headers=AUDITOR)
    assert [m["content"] for m in (await named.get_json())["messages"]] == ["bob"]
    # Reading is not acting: the auditor lacks the write gate; the operator may act.
    path = "/gateway/sessions/only-alice/reset?owner=token:alice"
    assert (await client.post(path, headers=AUDITOR)).status_code == 403
    acted = await client.post(
        "/gateway/sessions/only-alice/append?owner=token:alice",
        json={"role": "system", "content": "operator note"},
        headers=OPERATOR,
    )
    assert acted.status_code == 201
    assert (await acted.get_json())["session"]["owner"] == "token:alice"
    assert (await client.post(path, headers=OPERATOR)).status_code == 200
    # Bob holds the write gate but not act-all: he may not touch Alice's session.
    assert (await client.post(path, headers=BOB)).status_code == 404


async def test_concurrent_appends_to_one_session_keep_every_message_in_one_order(
    app_client, store_url
):
    _app, client = app_client
    total = 64

    async def one(n: int) -> Any:
        return await append(client, "busy", f"message {n}")

    answers = await asyncio.gather(*(one(n) for n in range(total)))
    assert [a.status_code for a in answers] == [201] * total
    rows = await db_rows(
        store_url,
        "SELECT m.seq, m.id, m.parent_id, m.content FROM sessions_messages m ORDER BY m.seq",
    )
    assert [r[0] for r in rows] == list(range(1, total + 1))
    assert sorted(r[3] for r in rows) == sorted(f"message {n}" for n in range(total))
    # One chain: each message's parent is the one appended before it.
    assert [r[2] for r in rows] == [None, *(r[1] for r in rows[:-1])]
    detail = await (await client.get("/gateway/sessions/busy?limit=1000", headers=ALICE)).get_json()
    assert len(detail["lineage"]) == total and detail["message_count"] == total
    assert detail["head_id"] == rows[-1][1]


async def test_concurrent_appends_across_two_apps_on_one_store_lose_nothing(
    make_settings, store_url
):
    settings = settings_for(make_settings)
    async with running_app(settings) as (_a, one), running_app(settings) as (_b, two):

        async def send(n: int) -> int:
            client = one if n % 2 else two
            return int((await append(client, "shared", f"n{n}")).status_code)

        assert await asyncio.gather(*(send(n) for n in range(40))) == [201] * 40
    seqs = await db_rows(store_url, "SELECT seq FROM sessions_messages ORDER BY seq")
    assert [s[0] for s in seqs] == list(range(1, 41))


async def test_a_restarted_gateway_keeps_sessions_and_memory(make_settings, store_url):
    settings = settings_for(make_settings)
    async with running_app(settings) as (_app, client):
        await append(client, "kept", "before the restart")
        await client.put("/gateway/memory/kept", json={"document": "notes"}, headers=ALICE)
        await client.put("/gateway/memory/kept/e1", json={"summary": "remember me"}, headers=ALICE)
    async with running_app(settings) as (_app, client):
        detail = await (await client.get("/gateway/sessions/kept", headers=ALICE)).get_json()
        assert [m["content"] for m in detail["messages"]] == ["before the restart"]
        memory = await (await client.get("/gateway/memory/kept", headers=ALICE)).get_json()
        assert memory["document"] == "notes"
        assert [e["summary"] for e in memory["entries"]] == ["remember me"]
        found = await (
            await client.get("/gateway/memory/kept?query=remember", headers=ALICE)
        ).get_json()
        assert [e["entry_id"] for e in found["entries"]] == ["e1"]
        appended = await append(client, "kept", "after")
        assert (await appended.get_json())["message"]["seq"] == 2


async def test_session_metrics_count_sessions_and_messages(app_client):
    _app, client = app_client
    await append(client, "m1", "one")
    await append(client, "m1", "two", role="assistant")
    await append(client, "m2", "three")
    assert await metric(client, "gateway_sessions_created_total", source="api") == 2
    assert await metric(client, "gateway_session_messages_total", role="user") == 2
    assert await metric(client, "gateway_session_messages_total", role="assistant") == 1
    assert (await client.get("/metrics", headers=ADMIN)).status_code == 200
