"""Reading the audit log: ``/gateway/audit/log`` filters and cursor pages,
``/gateway/audit/summary`` counts in a time window, ``/gateway/audit/export`` as JSON
lines; bad queries are 400 with the error envelope; every route needs
``allow_audit_read``. Both stores."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from host.api import service
from plugins.audit.contract import AuditLog
from tests.conftest import ADMIN, READER, assert_error, bearer, running_app

pytestmark = pytest.mark.usefixtures("store_url")

AUDITOR_TOKEN = "test-auditor-token-0123456789"
AUDITOR = bearer(AUDITOR_TOKEN)


@pytest.fixture
async def seeded(make_settings: Any) -> Any:
    tokens = {"auditor": {"token": AUDITOR_TOKEN, "gates": ["allow_audit_read"]}}
    async with running_app(make_settings(auth={"tokens": tokens})) as (app, client):
        log = service(AuditLog, app=app)
        for n in range(7):
            await log.record(
                "vault.opened" if n % 2 == 0 else "vault.sealed",
                actor="token:alice" if n < 4 else "token:bob",
                reason_code="quota" if n % 3 == 0 else None,
                outcome="success" if n % 3 else "denied",
            )
        assert (await client.post("/gateway/pause", headers=ADMIN)).status_code == 200
        yield app, client


async def log_page(client: Any, query: str = "") -> dict[str, Any]:
    response = await client.get(f"/gateway/audit/log?{query}", headers=AUDITOR)
    assert response.status_code == 200, await response.get_data(as_text=True)
    page: dict[str, Any] = await response.get_json()
    return page


async def test_the_log_filters_by_source_action_actor_reason_and_outcome(seeded):
    _app, client = seeded
    everything = await log_page(client)
    assert [r["seq"] for r in everything["records"]] == list(range(8, 0, -1))
    assert everything["next_cursor"] is None
    cases = {
        "source=request": [8],
        "source=plugin&action=vault.sealed": [6, 4, 2],
        "actor=token:bob": [7, 6, 5],
        "actor=token:admin": [8],
        "reason_code=quota": [7, 4, 1],
        "outcome=denied&actor=token:alice": [4, 1],
        "action=nothing.like.this": [],
    }
    for query, seqs in cases.items():
        found = await log_page(client, query)
        assert [r["seq"] for r in found["records"]] == seqs, query


async def test_the_log_pages_with_a_cursor_without_gaps_or_repeats(seeded):
    _app, client = seeded
    seen: list[int] = []
    query = "limit=3"
    pages = 0
    while True:
        page = await log_page(client, query)
        seen += [r["seq"] for r in page["records"]]
        pages += 1
        if page["next_cursor"] is None:
            break
        query = f"limit=3&cursor={page['next_cursor']}"
    assert seen == list(range(8, 0, -1))
    assert pages == 3
    filtered = await log_page(client, "limit=2&source=plugin&actor=token:alice")
    rest = await log_page(
        client, f"source=plugin&actor=token:alice&cursor={filtered['next_cursor']}"
    )
    assert [r["seq"] for r in filtered["records"] + rest["records"]] == [4, 3, 2, 1]


async def test_the_time_window_bounds_the_log_and_the_summary(seeded):
    _app, client = seeded
    records = (await log_page(client))["records"]
    by_seq = {r["seq"]: r["ts_ms"] for r in records}
    # Records 3 to 5 (at least: records written in the same millisecond come too).
    since, until = by_seq[3], by_seq[5] + 1
    window = await log_page(client, f"since_ms={since}&until_ms={until}")
    inside = {r["seq"] for r in window["records"]}
    assert {3, 4, 5} <= inside
    assert all(since <= by_seq[s] < until for s in inside)
    response = await client.get(
        f"/gateway/audit/summary?since_ms={since}&until_ms={until}", headers=AUDITOR
    )
    summary = await response.get_json()
    assert summary["total"] == len(inside)
    assert (summary["since_ms"], summary["until_ms"]) == (since, until)
    future = await client.get("/gateway/audit/summary?since_ms=99999999999999", headers=AUDITOR)
    assert (await future.get_json())["total"] == 0


async def test_the_summary_counts_by_source_action_actor_reason_and_outcome(seeded):
    _app, client = seeded
    response = await client.get("/gateway/audit/summary", headers=AUDITOR)
    assert response.status_code == 200
    summary = await response.get_json()
    assert summary["total"] == 8
    assert summary["by_source"] == {"plugin": 7, "request": 1}
    assert summary["by_action"] == {
        "vault.opened": 4,
        "vault.sealed": 3,
        "POST /gateway/pause": 1,
    }
    assert summary["by_actor"] == {"token:alice": 4, "token:bob": 3, "token:admin": 1}
    assert summary["by_reason_code"] == {"quota": 3}
    assert summary["by_outcome"] == {"success": 5, "denied": 3}


async def test_the_export_streams_every_matching_record_as_json_lines(seeded):
    _app, client = seeded
    response = await client.get("/gateway/audit/export", headers=AUDITOR)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in (await response.get_data(as_text=True)).splitlines()]
    assert [r["seq"] for r in lines] == list(range(1, 9))
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(lines))
    only = await client.get("/gateway/audit/export?actor=token:bob", headers=AUDITOR)
    bob = [json.loads(line) for line in (await only.get_data(as_text=True)).splitlines()]
    assert [r["seq"] for r in bob] == [5, 6, 7]


@pytest.mark.parametrize(
    "query",
    [
        "cursor=0",
        "cursor=abc",
        "limit=0",
        "limit=1001",
        "since_ms=-1",
        "until_ms=99999999999999999999",
        "colour=blue",
        "actor=a%00b",
        f"action={'x' * 301}",
    ],
)
async def test_a_bad_query_is_400_naming_it(seeded, query):
    _app, client = seeded
    response = await client.get(f"/gateway/audit/log?{query}", headers=AUDITOR)
    assert response.status_code == 400, query
    error = assert_error(await response.get_json(), "invalid_query")
    assert error["param"] == query.split("=")[0]


async def test_every_audit_route_needs_allow_audit_read(seeded):
    _app, client = seeded
    for path in ("log", "summary", "export", "verify"):
        denied = await client.get(f"/gateway/audit/{path}", headers=READER)
        assert denied.status_code == 403, path
        assert_error(await denied.get_json(), "policy_gate_denied")
        assert (await client.get(f"/gateway/audit/{path}", headers=AUDITOR)).status_code == 200


async def test_a_nul_in_a_recorded_value_is_stored_replaced_not_lost(seeded):
    app, client = seeded
    stored = await service(AuditLog, app=app).record("vault.opened", target="k\x00ey")
    assert stored.target == "k\ufffdey"
    page = await log_page(client, "limit=1")
    assert page["records"][0]["target"] == "k\ufffdey"
    checked = await client.get("/gateway/audit/verify", headers=AUDITOR)
    assert (await checked.get_json())["ok"] is True
