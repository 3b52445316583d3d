"""The sessions plugin with the others, on SQLite and PostgreSQL: conversations from
``/v1`` recorded as sessions (``gateway_record_conversation``), safety scanners on
appends, the ``session`` and ``memory`` pipeline steps, the typed service, and its
configuration section."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from host.api import GatewayError, Verdict, service
from plugins.pipelines.contract import Pipeline, code
from plugins.sessions.contract import (
    MemoryEntryRequest,
    MemoryQuery,
    NewMessage,
    SessionsService,
    memory_step,
    session_step,
)
from tests.conftest import ADMIN, assert_error, db_rows, gateway_cli, running_app
from tests.plugins_for_tests.kit import Plugin
from tests.sessions_fixtures import ALICE, TOKENS, append, settings_for

pytestmark = pytest.mark.usefixtures("store_url")


async def chat(client: Any, messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    body = {"model": "echo", "messages": messages, **extra}
    response = await client.post("/v1/chat/completions", json=body, headers=ADMIN)
    assert response.status_code == 200, await response.get_data(as_text=True)
    answer: dict[str, Any] = await response.get_json()
    return answer


async def conversation(client: Any, key: str) -> list[tuple[str, str]]:
    response = await client.get(f"/gateway/sessions/{key}", headers=ADMIN)
    assert response.status_code == 200, await response.get_data(as_text=True)
    return [(m["role"], m["content"]) for m in (await response.get_json())["messages"]]


async def test_gateway_record_conversation_keeps_chat_sessions_without_duplicates(
    make_settings,
):
    async with running_app(make_settings()) as (_app, client):
        meta = {"session_id": "chat-7"}
        turn1 = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
        await chat(client, turn1, metadata=meta, user="end-user-1")
        assert await conversation(client, "chat-7") == [
            ("system", "be brief"),
            ("user", "hi"),
            ("assistant", "echo: hi"),
        ]
        # The client resends the whole history: only the new turn is appended.
        turn2 = [*turn1, {"role": "assistant", "content": "echo: hi"}]
        turn2.append({"role": "user", "content": "again"})
        await chat(client, turn2, metadata=meta)
        assert [c for _, c in await conversation(client, "chat-7")] == [
            "be brief",
            "hi",
            "echo: hi",
            "again",
            "echo: again",
        ]
        # A changed history continues as a branch from where it parts.
        edited = [*turn1, {"role": "assistant", "content": "echo: hi"}]
        edited.append({"role": "user", "content": "something else"})
        await chat(client, edited, metadata=meta)
        detail = await (await client.get("/gateway/sessions/chat-7", headers=ADMIN)).get_json()
        assert [m["content"] for m in detail["messages"]][-2:] == [
            "something else",
            "echo: something else",
        ]
        assert detail["message_count"] == 7 and detail["source"] == "chat"
        assert detail["user"] == "end-user-1" and detail["owner"] == "token:admin"
        assert detail["messages"][-1]["metadata"]["model"] == "echo"
        # No session key, no session.
        await chat(client, [{"role": "user", "content": "anonymous"}], user="end-user-1")
        listed = await (await client.get("/gateway/sessions", headers=ADMIN)).get_json()
        assert [s["session_key"] for s in listed["sessions"]] == ["chat-7"]


async def test_gateway_record_conversation_keeps_a_responses_chain_as_one_session(
    make_settings,
):
    async with running_app(make_settings()) as (_app, client):
        first = await client.post(
            "/v1/responses",
            json={"model": "echo", "input": "one", "instructions": "be kind"},
            headers=ADMIN,
        )
        first_id = (await first.get_json())["id"]
        second = await client.post(
            "/v1/responses",
            json={"model": "echo", "input": "two", "previous_response_id": first_id},
            headers=ADMIN,
        )
        assert second.status_code == 200
        assert await conversation(client, first_id) == [
            ("system", "be kind"),
            ("user", "one"),
            ("assistant", "echo: one"),
            ("user", "two"),
            ("assistant", "echo: two"),
        ]


async def test_recording_can_be_turned_off(make_settings, store_url):
    settings = make_settings(plugins={"sessions": {"record_conversations": False}})
    async with running_app(settings) as (_app, client):
        await chat(client, [{"role": "user", "content": "hi"}], metadata={"session_id": "off"})
    assert await db_rows(store_url, "SELECT COUNT(*) FROM sessions_sessions") == [(0,)]


class Words:
    async def scan(self, text: str, *, direction: str, context: dict[str, Any]) -> Verdict | None:
        assert context["stage"] == "session_append" and context["session_key"]
        if "forbidden" in text:
            return Verdict("block", reason="forbidden word")
        if "secret123" in text:
            return Verdict("redact", text=text.replace("secret123", "[redacted]"), reason="key")
        return None


def safety_plugin() -> Plugin:
    return Plugin(gateway_register_safety_scanners=lambda register: register("words", Words()))


async def test_safety_scanners_block_or_redact_session_appends(make_settings, store_url):
    settings = settings_for(make_settings)
    async with running_app(settings, extra_plugins=[("words_scanner", safety_plugin())]) as (
        _,
        client,
    ):
        blocked = await append(client, "scanned", "this is forbidden")
        assert blocked.status_code == 400
        assert_error(await blocked.get_json(), "content_blocked")
        assert await db_rows(store_url, "SELECT COUNT(*) FROM sessions_messages") == [(0,)]
        assert await db_rows(store_url, "SELECT COUNT(*) FROM sessions_sessions") == [(0,)]
        redacted = await append(client, "scanned", "my key is secret123")
        assert (await redacted.get_json())["message"]["content"] == "my key is [redacted]"
        rows = await db_rows(store_url, "SELECT content FROM sessions_messages")
        assert rows == [("my key is [redacted]",)]


def steps_plugin() -> Plugin:
    def read_back(ctx: Any) -> dict[str, Any]:
        return {"said": [m["content"] for m in ctx.results["read"]["messages"]]}

    pipeline = Pipeline(
        id="remember",
        steps=[
            session_step("say", "append", lambda c: c.input["key"], role="user", content="hi"),
            session_step("read", "read", lambda c: c.input["key"]),
            memory_step(
                "note",
                "put",
                lambda c: c.input["key"],
                entry_id="fact-1",
                entry={"summary": "the user said hi", "memory_type": "event"},
            ),
            memory_step("find", "search", lambda c: c.input["key"], query="said"),
            code("out", read_back),
        ],
    )
    return Plugin(gateway_register_pipelines=lambda register: register("remember", pipeline))


async def test_session_and_memory_steps_write_as_the_runs_owner(make_settings):
    tokens = {**TOKENS, "alice": {**TOKENS["alice"], "gates": ["allow_pipeline_run"]}}
    settings = make_settings(auth={"tokens": tokens})
    async with running_app(settings, extra_plugins=[("steps", steps_plugin())]) as (_, client):
        run = await client.post(
            "/pipelines/remember/run", json={"input": {"key": "from-run"}}, headers=ALICE
        )
        assert run.status_code == 200, await run.get_data(as_text=True)
        record = await run.get_json()
        assert record["status"] == "completed", record
        results = {s["step_id"]: s["output"] for s in record["steps"]}
        assert results["out"] == {"said": ["hi"]}
        assert [e["entry_id"] for e in results["find"]["entries"]] == ["fact-1"]
        # Alice started the run: the session is hers.
        detail = await (await client.get("/gateway/sessions/from-run", headers=ALICE)).get_json()
        assert detail["owner"] == "token:alice" and detail["source"] == "pipeline"
        entry = await client.get("/gateway/memory/from-run/fact-1", headers=ALICE)
        assert entry.status_code == 200


async def test_the_sessions_service_reads_and_writes_from_python(make_settings):
    async with running_app(make_settings()) as (app, client):
        sessions = service(SessionsService, app=app)
        stored, summary = await sessions.append(
            "plugin:mine", "svc", [NewMessage("user", "a"), NewMessage("assistant", "b")]
        )
        assert [m.seq for m in stored] == [1, 2] and summary.message_count == 2
        assert [m.content for m in await sessions.conversation("plugin:mine", "svc")] == ["a", "b"]
        entry, created = await sessions.put_memory(
            "plugin:mine", "svc", "e1", MemoryEntryRequest(summary="python wrote this")
        )
        assert created and entry.importance == 0.6
        found = await sessions.search_memory("plugin:mine", "svc", MemoryQuery(query="python"))
        assert [e.entry_id for e in found.entries] == ["e1"]
        graph = await sessions.memory_graph("plugin:mine", "svc")
        assert [n.id for n in graph.nodes] == ["e1"]
        with pytest.raises(GatewayError) as missing:
            await sessions.conversation("plugin:mine", "nope")
        assert missing.value.code == "session_not_found"
        with pytest.raises(GatewayError) as bad:
            await sessions.append("plugin:mine", "no/slash", [NewMessage("user", "x")])
        assert bad.value.code == "invalid_session_key"
        # What the service wrote is what the routes see (the admin reads every owner's).
        listed = await (await client.get("/gateway/sessions", headers=ADMIN)).get_json()
        assert [s["owner"] for s in listed["sessions"]] == ["plugin:mine"]


async def test_an_invalid_sessions_section_fails_start_up_naming_the_key(make_settings):
    settings = make_settings(plugins={"sessions": {"max_content_chars": 0, "ranker_weight": "x"}})
    with pytest.raises(Exception) as failed:
        async with running_app(settings):
            pass
    message = str(failed.value)
    assert "plugins.sessions.max_content_chars" in message
    assert "plugins.sessions.ranker_weight" in message


async def test_sessions_run_without_the_pipelines_and_openai_plugins(make_settings, caplog):
    disabled = {"pipelines": {"enabled": False}, "openai_compat": {"enabled": False}}
    settings = make_settings(auth={"tokens": TOKENS}, plugins=disabled)
    with caplog.at_level(logging.WARNING, logger="gateway.plugins"):
        async with running_app(settings) as (_app, client):
            assert (await append(client, "alone", "still works")).status_code == 201
    assert not [r for r in caplog.records if "plugin sessions" in r.getMessage()]


def test_config_check_names_each_invalid_sessions_key(tmp_path):
    (tmp_path / "gateway.toml").write_text(
        'state_dir = "state"\n[plugins.sessions]\nmax_content_chars = -1\n'
        'text_weight = "heavy"\nrecord_conversations = "yes"\ncandiate_pool = 5\n'
    )
    result = gateway_cli("config", "check", "--config", "gateway.toml", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    for key in ("max_content_chars", "text_weight", "record_conversations", "candiate_pool"):
        assert f"plugins.sessions.{key}" in result.stdout + result.stderr, key
    assert "Traceback" not in result.stderr


async def test_a_streamed_chat_is_kept_whole_in_its_session(make_settings):
    async with running_app(make_settings()) as (_app, client):
        body = {
            "model": "echo",
            "messages": [{"role": "user", "content": "stream me"}],
            "stream": True,
            "metadata": {"session_id": "streamed"},
        }
        response = await client.post("/v1/chat/completions", json=body, headers=ADMIN)
        assert response.status_code == 200
        assert "[DONE]" in await response.get_data(as_text=True)
        assert await conversation(client, "streamed") == [
            ("user", "stream me"),
            ("assistant", "echo: stream me"),
        ]
