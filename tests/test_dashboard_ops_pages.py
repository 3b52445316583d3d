"""The ops console's sessions and memory pages over HTTP: the signed-in principal's own
sessions (another's are not found), message text escaped, reset and branch forms, memory
create, edit and delete, the graph drawn as SVG; each form keeps its API's gate and
needs the CSRF token (403, nothing written). On SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ADMIN, READER_TOKEN, db_rows, running_app
from tests.dashboard_pages_helpers import page_csrf, sign_in

pytestmark = pytest.mark.usefixtures("store_url")

WRITER = {"Authorization": "Bearer test-writer-token-0123456789"}
WRITER_AUTH = {
    "tokens": {
        "writer": {"token": "test-writer-token-0123456789", "gates": ["allow_session_write"]}
    }
}


async def append(client: Any, key: str, content: str, headers: dict[str, str] = ADMIN) -> None:
    response = await client.post(
        f"/gateway/sessions/{key}/append",
        json={"role": "user", "content": content},
        headers=headers,
    )
    assert response.status_code == 201, await response.get_data()


async def text(client: Any, path: str) -> tuple[int, str]:
    response = await client.get(path)
    return response.status_code, (await response.get_data()).decode()


async def test_sessions_pages_show_own_sessions_with_text_escaped(make_settings: Any) -> None:
    async with running_app(make_settings(auth=WRITER_AUTH)) as (_, client):
        await append(client, "mine", "<script>alert(1)</script> hello")
        await append(client, "theirs", "reader secret", headers=WRITER)
        await sign_in(client)
        status, listing = await text(client, "/ops/sessions")
        assert status == 200 and 'data-session="mine"' in listing
        assert "theirs" not in listing
        status, page = await text(client, "/ops/sessions/mine")
        assert status == 200
        assert "&lt;script&gt;alert(1)&lt;/script&gt; hello" in page
        assert "<script>alert" not in page
        status, other = await text(client, "/ops/sessions/theirs")
        assert status == 404 and "session_not_found" in other and "reader secret" not in other


async def test_branch_and_reset_forms_act_and_keep_the_session_write_gate(
    make_settings: Any, store_url: str
) -> None:
    async with running_app(make_settings()) as (_, client):
        await append(client, "talk", "first")
        await append(client, "talk", "second")
        await sign_in(client)
        csrf = await page_csrf(client, "/ops/sessions")
        refused = await client.post(
            "/ops/sessions/branch", form={"session_key": "talk", "new_session_key": "copy"}
        )
        assert refused.status_code == 403
        branched = await client.post(
            "/ops/sessions/branch",
            form={"csrf_token": csrf, "session_key": "talk", "new_session_key": "copy"},
        )
        assert branched.status_code == 303
        assert branched.headers["Location"] == "/ops/sessions/copy"
        status, page = await text(client, "/ops/sessions/copy")
        assert status == 200 and "branched from talk" in page and "second" in page
        again = await client.post(
            "/ops/sessions/branch",
            form={"csrf_token": csrf, "session_key": "talk", "new_session_key": "copy"},
        )
        assert again.status_code == 409
        reset = await client.post("/ops/sessions/talk", form={"csrf_token": csrf})
        assert reset.status_code == 303
        detail = await (await client.get("/gateway/sessions/talk", headers=ADMIN)).get_json()
        assert detail["head_id"] is None and detail["message_count"] == 2
    keys = await db_rows(store_url, "SELECT key FROM sessions_sessions ORDER BY key")
    assert keys == [("copy",), ("talk",)]


async def test_a_principal_without_the_write_gates_changes_nothing_from_the_forms(
    make_settings: Any, store_url: str
) -> None:
    async with running_app(make_settings()) as (_, client):
        await append(client, "own", "hello")
        await sign_in(client, token=READER_TOKEN)
        csrf = await page_csrf(client, "/ops/sessions")
        branch = await client.post(
            "/ops/sessions/branch", form={"csrf_token": csrf, "session_key": "own"}
        )
        assert branch.status_code == 403
        assert "policy_gate_denied" in (await branch.get_data()).decode()
        reset = await client.post("/ops/sessions/own", form={"csrf_token": csrf})
        assert reset.status_code == 403
        memory = await client.post(
            "/ops/memory", form={"csrf_token": csrf, "session_key": "own", "summary": "x"}
        )
        assert memory.status_code == 403
    assert await db_rows(store_url, "SELECT key FROM sessions_sessions") == [("own",)]
    assert await db_rows(store_url, "SELECT entry_id FROM sessions_memory") == []


async def test_memory_entries_are_created_edited_deleted_and_drawn(
    make_settings: Any, store_url: str
) -> None:
    async with running_app(make_settings()) as (_, client):
        await append(client, "notes", "hello")
        await sign_in(client)
        csrf = await page_csrf(client, "/ops/memory")
        base = {"csrf_token": csrf, "session_key": "notes", "op": "save"}
        for entry_id, summary in (("tea", "likes <em>tea</em>"), ("cake", "likes cake")):
            made = await client.post(
                "/ops/memory",
                form={**base, "entry_id": entry_id, "summary": summary, "tags": "food"},
            )
            assert made.status_code == 303
            assert made.headers["Location"] == "/ops/memory?session_key=notes"
        edited = await client.post(
            "/ops/memory", form={**base, "entry_id": "cake", "summary": "likes cheesecake"}
        )
        assert edited.status_code == 303
        status, page = await text(client, "/ops/memory?session_key=notes")
        assert status == 200 and "likes cheesecake" in page
        assert "likes &lt;em&gt;tea&lt;/em&gt;" in page
        status, graph = await text(client, "/ops/memory-graph?session_key=notes")
        assert status == 200 and graph.count("<circle") == 2
        bad = await client.post("/ops/memory", form={**base, "summary": ""})
        assert bad.status_code == 400
        deleted = await client.post(
            "/ops/memory",
            form={"csrf_token": csrf, "session_key": "notes", "entry_id": "tea", "op": "delete"},
        )
        assert deleted.status_code == 303
        status, page = await text(client, "/ops/memory?session_key=notes")
        assert 'data-entry="tea"' not in page and 'data-entry="cake"' in page
    rows = await db_rows(store_url, "SELECT entry_id FROM sessions_memory WHERE deleted_ms IS NULL")
    assert rows == [("cake",)]


async def test_sessions_pages_say_so_when_the_sessions_plugin_is_off(make_settings: Any) -> None:
    settings = make_settings(plugins={"sessions": {"enabled": False}})
    async with running_app(settings) as (_, client):
        await sign_in(client)
        for path in ("/ops/sessions", "/ops/memory", "/ops/memory-graph"):
            status, page = await text(client, path)
            assert status == 503, path
            assert "This feature is disabled: the sessions plugin is off" in page


async def test_chat_forms_start_a_session_and_append_to_it(
    make_settings: Any, store_url: str
) -> None:
    async with running_app(make_settings()) as (_, client):
        await sign_in(client)
        csrf = await page_csrf(client, "/ops/chat")
        refused = await client.post("/ops/chat/new", form={"content": "hello"})
        assert refused.status_code == 403
        started = await client.post(
            "/ops/chat/new",
            form={"csrf_token": csrf, "session_key": "desk", "content": "<i>hello</i>"},
        )
        assert started.status_code == 303
        assert started.headers["Location"] == "/ops/chat?session_key=desk"
        again = await client.post(
            "/ops/chat/new", form={"csrf_token": csrf, "session_key": "desk", "content": "x"}
        )
        assert again.status_code == 409
        sent = await client.post(
            "/ops/chat/send",
            form={"csrf_token": csrf, "session_key": "desk", "role": "assistant", "content": "hi"},
        )
        assert sent.status_code == 303
        empty = await client.post(
            "/ops/chat/send", form={"csrf_token": csrf, "session_key": "desk", "content": " "}
        )
        assert empty.status_code == 400
        status, page = await text(client, "/ops/chat?session_key=desk")
        assert status == 200 and "&lt;i&gt;hello&lt;/i&gt;" in page and ">hi<" in page
    rows = await db_rows(store_url, "SELECT role, content FROM sessions_messages ORDER BY seq")
    assert rows == [("user", "<i>hello</i>"), ("assistant", "hi")]
