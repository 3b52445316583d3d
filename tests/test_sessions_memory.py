"""Memory over HTTP (``/gateway/memory``, ``/gateway/memory-graph``,
``/api/memories/graph``), on SQLite and PostgreSQL: the document, entries (create,
replace, soft delete, restore), refusals that write nothing, ranked full-text search on
a small corpus, the ranker hook, and the graph with its filters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from host.api import now_ms
from plugins.sessions.contract import MemoryCandidate
from tests.conftest import READER, assert_error, db_rows, metric, running_app
from tests.plugins_for_tests.kit import Plugin
from tests.sessions_fixtures import (
    ALICE,
    AUDITOR,
    BOB,
    app_client,
    put_entry,
    settings_for,
)

pytestmark = pytest.mark.usefixtures("store_url")
__all__ = ["app_client"]


async def entries_in_store(store_url: str) -> int:
    return int((await db_rows(store_url, "SELECT COUNT(*) FROM sessions_memory"))[0][0])


async def test_memory_document_is_written_and_read(app_client, store_url):
    _app, client = app_client
    written = await client.put("/gateway/memory/notes", json={"document": "# Alice"}, headers=ALICE)
    assert written.status_code == 200
    read = await (await client.get("/gateway/memory/notes", headers=ALICE)).get_json()
    assert read["document"] == "# Alice" and read["entries"] == []
    assert isinstance(read["document_updated_ms"], int)
    rows = await db_rows(store_url, "SELECT document FROM sessions_sessions")
    assert rows == [("# Alice",)]
    denied = await client.put("/gateway/memory/notes", json={"document": "x"}, headers=READER)
    assert denied.status_code == 403
    missing = await client.put("/gateway/memory/notes", json={}, headers=ALICE)
    assert missing.status_code == 400
    assert "document" in (await missing.get_json())["error"]["message"]
    assert await db_rows(store_url, "SELECT document FROM sessions_sessions") == [("# Alice",)]
    unknown = await client.get("/gateway/memory/nobody", headers=ALICE)
    assert unknown.status_code == 404
    assert_error(await unknown.get_json(), "session_not_found")


async def test_entry_put_creates_then_replaces_and_reads_count_accesses(app_client, store_url):
    _app, client = app_client
    created = await put_entry(
        client,
        "s",
        "e1",
        summary="Alice prefers tea",
        tags=["drinks", "alice"],
        facts=["green tea", "no sugar"],
        memory_type="preference",
        scope={"workspace_id": "w1", "actor_id": "alice"},
        relations=[{"target_id": "e2", "relation_type": "related_to", "weight": 0.5}],
        source_event_key="chat:42",
    )
    assert created.status_code == 201
    body = await created.get_json()
    assert body["importance"] == 0.8  # the preference default
    assert body["scope"] == {"workspace_id": "w1", "channel_id": None, "actor_id": "alice"}
    assert body["access_count"] == 0 and body["last_accessed_ms"] is None
    replaced = await put_entry(client, "s", "e1", summary="Alice prefers coffee", importance=0.3)
    assert replaced.status_code == 200
    replaced_body = await replaced.get_json()
    assert replaced_body["summary"] == "Alice prefers coffee" and replaced_body["importance"] == 0.3
    assert replaced_body["created_ms"] == body["created_ms"]
    for expected in (1, 2):
        read = await (await client.get("/gateway/memory/s/e1", headers=ALICE)).get_json()
        assert read["access_count"] == expected and read["last_accessed_ms"] is not None
    assert await entries_in_store(store_url) == 1


async def test_entry_refusals_name_the_field_and_write_nothing(app_client, store_url):
    _app, client = app_client
    denied = await put_entry(client, "s", "e1", headers=READER)
    assert denied.status_code == 403
    assert_error(await denied.get_json(), "policy_gate_denied")
    for fields, named in (
        ({"memory_type": "dream"}, "memory_type"),
        ({"importance": 1.5}, "importance"),
        ({"tags": ["has space"]}, "tags"),
        ({"relations": [{"target_id": "e2", "relation_type": "loves"}]}, "relation_type"),
        ({"relations": [{"target_id": "e2", "weight": 2}]}, "weight"),
        ({"scope": {"workspace_id": "a/b"}}, "workspace_id"),
        ({"colour": "blue"}, "colour"),
        ({"summary": ""}, "summary"),
    ):
        refused = await put_entry(client, "s", "e1", **fields)
        assert refused.status_code == 400, fields
        assert named in (await refused.get_json())["error"]["message"], fields
    bad_id = await put_entry(client, "s", "bad id")
    assert bad_id.status_code == 400
    assert_error(await bad_id.get_json(), "invalid_session_key")
    huge = await put_entry(client, "s", "e1", summary="x" * 100_001)
    assert huge.status_code == 413
    assert_error(await huge.get_json(), "content_too_large")
    assert await entries_in_store(store_url) == 0
    await put_entry(client, "s", "e0")
    missing = await client.get("/gateway/memory/s/e9", headers=ALICE)
    assert missing.status_code == 404
    assert_error(await missing.get_json(), "memory_entry_not_found")
    assert (await client.delete("/gateway/memory/s/e9", headers=ALICE)).status_code == 404
    assert (await client.delete("/gateway/memory/s/e0", headers=READER)).status_code == 403


async def test_delete_is_soft_listed_with_deleted_and_restorable(app_client, store_url):
    _app, client = app_client
    await put_entry(client, "s", "keep", summary="kept entry")
    await put_entry(client, "s", "gone", summary="deleted entry")
    deleted = await client.delete("/gateway/memory/s/gone", headers=ALICE)
    assert deleted.status_code == 200
    assert await deleted.get_json() == {"deleted": "gone", "session_key": "s"}
    live = await (await client.get("/gateway/memory/s", headers=ALICE)).get_json()
    assert [e["entry_id"] for e in live["entries"]] == ["keep"]
    searched = await (await client.get("/gateway/memory/s?query=entry", headers=ALICE)).get_json()
    assert [e["entry_id"] for e in searched["entries"]] == ["keep"]
    assert (await client.get("/gateway/memory/s/gone", headers=ALICE)).status_code == 404
    listed = await (await client.get("/gateway/memory/s?deleted=true", headers=ALICE)).get_json()
    assert [e["entry_id"] for e in listed["entries"]] == ["gone"]
    assert listed["entries"][0]["deleted_ms"] is not None
    shown = await client.get("/gateway/memory/s/gone?deleted=true", headers=ALICE)
    assert shown.status_code == 200
    assert (await client.delete("/gateway/memory/s/gone", headers=ALICE)).status_code == 404
    assert await db_rows(store_url, "SELECT COUNT(*) FROM sessions_memory") == [(2,)]
    denied = await client.post("/gateway/memory/s/gone/restore", headers=READER)
    assert denied.status_code == 403
    restored = await client.post("/gateway/memory/s/gone/restore", headers=ALICE)
    assert restored.status_code == 200
    assert (await restored.get_json())["deleted_ms"] is None
    again = await client.post("/gateway/memory/s/gone/restore", headers=ALICE)
    assert again.status_code == 404
    live = await (await client.get("/gateway/memory/s", headers=ALICE)).get_json()
    assert sorted(e["entry_id"] for e in live["entries"]) == ["gone", "keep"]


CORPUS = [
    # entry id, summary, facts, type, importance, age in days
    ("tea", "Alice drinks green tea every morning", ["tea without sugar"], "preference", 0.5, 1),
    ("tea-old", "Alice once drank black tea", [], "event", 0.5, 400),
    ("coffee", "Bob prefers strong coffee", ["espresso"], "preference", 0.5, 1),
    ("goal", "Ship the tea tasting app by March", ["tea app"], "goal", 0.9, 1),
    ("todo", "Buy more tea for the office", [], "todo", 0.2, 1),
    ("music", "Alice listens to jazz", [], "fact", 1.0, 1),
]


async def seed_corpus(store_url: str, client: Any) -> None:
    for entry_id, summary, facts, kind, importance, _age in CORPUS:
        response = await put_entry(
            client,
            "corpus",
            entry_id,
            summary=summary,
            facts=facts,
            memory_type=kind,
            importance=importance,
            tags=["alice"] if "Alice" in summary else [],
            scope={"workspace_id": "w2" if entry_id == "goal" else "w1"},
        )
        assert response.status_code == 201
    now = now_ms()
    for entry_id, *_rest, age in CORPUS:
        if age > 1:  # made old in the store: recency is part of the ranking
            updated = now - age * 86_400_000
            await db_rows_write(store_url, entry_id, updated)


async def db_rows_write(store_url: str, entry_id: str, updated: int) -> None:
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    engine = create_async_engine(store_url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.text("UPDATE sessions_memory SET updated_ms = :u WHERE entry_id = :e"),
                {"u": updated, "e": entry_id},
            )
    finally:
        await engine.dispose()


async def search(client: Any, query: str, headers: dict[str, str] = ALICE) -> list[str]:
    response = await client.get(f"/gateway/memory/corpus?{query}", headers=headers)
    assert response.status_code == 200, await response.get_data(as_text=True)
    return [e["entry_id"] for e in (await response.get_json())["entries"]]


async def test_search_ranks_text_matches_by_text_rank_importance_and_recency(app_client, store_url):
    _app, client = app_client
    await seed_corpus(store_url, client)
    ranked = await search(client, "query=tea")
    # Only entries that mention tea; the goal (important, tea twice) first, the old
    # event last (same text rank as others but 400 days old).
    assert set(ranked) == {"tea", "tea-old", "goal", "todo"}
    assert ranked[0] == "goal" and ranked[-1] == "tea-old"
    assert ranked.index("tea") < ranked.index("todo")  # importance 0.5 beats 0.2
    view = await (await client.get("/gateway/memory/corpus?query=tea", headers=ALICE)).get_json()
    scores = [e["score"] for e in view["entries"]]
    assert scores == sorted(scores, reverse=True) and view["query"] == "tea"
    # Stemmed words match (porter on SQLite, english on PostgreSQL).
    assert "tea" in await search(client, "query=drinking")
    assert await search(client, "query=espresso") == ["coffee"]
    # Every word first, then entries with some of them.
    both = await search(client, "query=green%20tea")
    assert both[0] == "tea" and set(both) == {"tea", "tea-old", "goal", "todo"}
    assert await search(client, "query=zebra") == []
    # Query syntax of the engines is just text here.
    assert await search(client, "query=%22tea%22%20OR%20NOT%20*") != []


async def test_search_filters_by_type_scope_tags_and_limit(app_client, store_url):
    _app, client = app_client
    await seed_corpus(store_url, client)
    assert await search(client, "query=tea&memory_type=todo") == ["todo"]
    assert await search(client, "query=tea&workspace_id=w2") == ["goal"]
    assert set(await search(client, "query=alice&tags=alice")) == {"tea", "tea-old", "music"}
    assert len(await search(client, "query=tea&limit=2")) == 2
    assert set(await search(client, "memory_type=preference")) == {"tea", "coffee"}
    bad = await client.get("/gateway/memory/corpus?memory_type=dream", headers=ALICE)
    assert bad.status_code == 400
    assert "memory_type" in (await bad.get_json())["error"]["message"]
    bad_limit = await client.get("/gateway/memory/corpus?limit=1000", headers=ALICE)
    assert bad_limit.status_code == 400


async def test_memory_of_another_principal_is_hidden_and_read_all_reads_it(app_client):
    _app, client = app_client
    await put_entry(client, "private", "e1", summary="alice's secret plan")
    for path in ("/gateway/memory/private", "/gateway/memory/private/e1"):
        hidden = await client.get(path, headers=BOB)
        assert hidden.status_code == 404
        assert "secret" not in await hidden.get_data(as_text=True)
    graph = await (await client.get("/api/memories/graph", headers=BOB)).get_json()
    assert graph["nodes"] == [] and graph["edges"] == []
    seen = await client.get("/gateway/memory/private/e1", headers=AUDITOR)
    assert seen.status_code == 200
    everyone = await (await client.get("/api/memories/graph", headers=AUDITOR)).get_json()
    assert [n["entry_id"] for n in everyone["nodes"]] == ["e1"]
    # Bob's write to the same key is his own session.
    bobs = await put_entry(client, "private", "e1", headers=BOB, summary="bob's")
    assert bobs.status_code == 201
    own = await (await client.get("/gateway/memory/private/e1", headers=BOB)).get_json()
    assert own["summary"] == "bob's"


async def test_graph_filters_nodes_and_edges(app_client):
    _app, client = app_client
    await put_entry(
        client,
        "g",
        "a",
        memory_type="goal",
        importance=0.9,
        relations=[
            {"target_id": "b", "relation_type": "depends_on", "weight": 0.9},
            {"target_id": "c", "relation_type": "related_to", "weight": 0.2},
            {"target_id": "missing", "relation_type": "related_to", "weight": 1},
        ],
    )
    await put_entry(
        client,
        "g",
        "b",
        memory_type="todo",
        importance=0.5,
        scope={"channel_id": "ops"},
        relations=[{"target_id": "c", "relation_type": "updates", "weight": 0.6}],
    )
    await put_entry(client, "g", "c", memory_type="fact", importance=0.1)

    async def graph(query: str = "") -> dict[str, Any]:
        response = await client.get(f"/gateway/memory-graph/g?{query}", headers=ALICE)
        assert response.status_code == 200, await response.get_data(as_text=True)
        found: dict[str, Any] = await response.get_json()
        return found

    def edges(body: dict[str, Any]) -> set[tuple[str, str, str]]:
        return {(e["source"], e["target"], e["relation_type"]) for e in body["edges"]}

    whole = await graph()
    assert [n["id"] for n in whole["nodes"]] == ["a", "b", "c"]  # the most important first
    # An edge to an entry that is not there is left out.
    assert edges(whole) == {
        ("a", "b", "depends_on"),
        ("a", "c", "related_to"),
        ("b", "c", "updates"),
    }
    assert whole["truncated"] is False
    assert edges(await graph("min_edge_weight=0.5")) == {
        ("a", "b", "depends_on"),
        ("b", "c", "updates"),
    }
    assert edges(await graph("relation_types=updates,depends_on")) == {
        ("a", "b", "depends_on"),
        ("b", "c", "updates"),
    }
    top = await graph("max_nodes=2")
    assert [n["id"] for n in top["nodes"]] == ["a", "b"] and top["truncated"] is True
    assert edges(top) == {("a", "b", "depends_on")}
    assert [n["id"] for n in (await graph("channel_id=ops"))["nodes"]] == ["b"]
    assert [n["id"] for n in (await graph("memory_type=fact"))["nodes"]] == ["c"]
    # A deleted entry leaves the graph, with its edges.
    await client.delete("/gateway/memory/g/b", headers=ALICE)
    assert edges(await graph()) == {("a", "c", "related_to")}
    bad = await client.get("/gateway/memory-graph/g?max_nodes=0", headers=ALICE)
    assert bad.status_code == 400
    assert "max_nodes" in (await bad.get_json())["error"]["message"]
    assert (await client.get("/gateway/memory-graph/none", headers=ALICE)).status_code == 404
    everything = await (await client.get("/api/memories/graph", headers=ALICE)).get_json()
    session_id = everything["nodes"][0]["id"].split("/")[0]
    assert {e["source"] for e in everything["edges"]} == {f"{session_id}/a"}
    narrowed = await client.get("/api/memories/graph?session_key=other", headers=ALICE)
    assert (await narrowed.get_json())["nodes"] == []


class KeywordRanker:
    """A stand-in for an embedding ranker: it scores what the words miss."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    async def score(self, query: str, candidates: Sequence[MemoryCandidate]) -> list[float]:
        self.queries.append(query)
        return [1.0 if "jazz" in c.text and query == "music" else 0.0 for c in candidates]


async def test_gateway_register_memory_rankers_add_to_the_ranking(make_settings, store_url):
    ranker = KeywordRanker()
    plugin = Plugin(gateway_register_memory_rankers=lambda register: register("kw", ranker))
    settings = settings_for(make_settings)
    async with running_app(settings, extra_plugins=[("rankers", plugin)]) as (_app, client):
        await seed_corpus(store_url, client)
        # No entry holds the word "music": the ranker finds the jazz entry anyway.
        assert (await search(client, "query=music"))[0] == "music"
        assert ranker.queries == ["music"]


async def test_search_latency_is_measured(app_client, store_url):
    _app, client = app_client
    await seed_corpus(store_url, client)
    await search(client, "query=tea")
    await search(client, "query=coffee")
    assert await metric(client, "gateway_memory_search_duration_seconds_count") == 2
    assert await metric(client, "gateway_memory_writes_total", op="create") == len(CORPUS)
