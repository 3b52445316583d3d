"""Stored Responses chains are links: each turn is stored once, so a chain's stored bytes
grow linearly; a chain's length and bytes are capped (400 naming the limit); retention
removes whole chains; deleting a response that later turns link to hides it and keeps
their history. Through the Quart test client, in front of the fake upstream, on both
stores (a restart is a second app on the same store)."""

from __future__ import annotations

from typing import Any

import pytest

from host.api import context, now_ms
from tests.conftest import ADMIN, db_rows, running_app
from tests.fake_openai_upstream import KEY_ENV, FakeUpstream, models_config
from tests.openai_helpers import assert_error

pytestmark = pytest.mark.usefixtures("store_url")
DAY_MS = 86_400_000


@pytest.fixture(autouse=True)
def _upstream_key(monkeypatch: pytest.MonkeyPatch, upstream: FakeUpstream) -> None:
    monkeypatch.setenv(KEY_ENV, upstream.api_key)


def settings_for(make_settings: Any, upstream: FakeUpstream, **plugin: Any) -> Any:
    return make_settings(
        models=models_config(upstream),
        plugins={"openai_compat": plugin},
        retention={"responses_max_count": 2} if plugin.pop("keep_two", False) else {},
    )


async def turn(client: Any, text: str, previous: str | None = None) -> Any:
    body: dict[str, Any] = {"model": "gpt-test", "input": text}
    if previous is not None:
        body["previous_response_id"] = previous
    return await client.post("/v1/responses", json=body, headers=ADMIN)


async def chain(client: Any, *texts: str) -> list[str]:
    ids: list[str] = []
    for text in texts:
        answer = await turn(client, text, ids[-1] if ids else None)
        assert answer.status_code == 200, await answer.get_data(as_text=True)
        ids.append((await answer.get_json())["id"])
    return ids


async def stored_bytes(url: str) -> int:
    rows = await db_rows(
        url,
        "SELECT SUM(LENGTH(CAST(conversation AS TEXT)) + LENGTH(CAST(response AS TEXT))) "
        "FROM openai_responses",
    )
    return int(rows[0][0] or 0)


async def test_a_long_chain_is_stored_in_linear_bytes_and_continues_after_a_restart(
    make_settings, upstream, store_url
):
    settings = settings_for(make_settings, upstream)
    big = 200_000
    async with running_app(settings) as (_, client):
        ids = await chain(client, *(f"{i}" + "x" * big for i in range(6)))
    # Six 200 KB turns: about 1.2 MB stored, each once (copies grew it to 4.2 MB and more).
    assert 6 * big <= await stored_bytes(store_url) <= 6 * big * 1.1
    async with running_app(settings) as (_, client):
        last = await turn(client, "and now?", ids[-1])
        assert last.status_code == 200
    sent = upstream.bodies()[-1]["messages"]
    assert len(sent) == 13  # six questions, six answers, and this one
    assert [m["content"][0] for m in sent[0:12:2]] == list("012345")


async def test_a_chain_past_its_length_is_refused_naming_the_limit(
    make_settings, upstream, store_url
):
    settings = settings_for(make_settings, upstream, responses_max_chain_turns=3)
    async with running_app(settings) as (_, client):
        ids = await chain(client, "one", "two", "three")
        upstream.reset()
        refused = await turn(client, "four", ids[-1])
        assert refused.status_code == 400
        err = assert_error(await refused.get_json(), "response_chain_too_long")
        assert "plugins.openai_compat.responses_max_chain_turns" in err["message"]
        assert err["param"] == "previous_response_id"
        # A new chain is fine.
        assert (await turn(client, "fresh")).status_code == 200
    assert upstream.bodies() == [upstream.bodies()[0]]  # only the fresh one went up
    assert (await db_rows(store_url, "SELECT COUNT(*) FROM openai_responses"))[0][0] == 4


async def test_a_chain_past_its_bytes_is_refused_naming_the_limit(
    make_settings, upstream, store_url
):
    settings = settings_for(make_settings, upstream, responses_max_chain_bytes=65536)
    async with running_app(settings) as (_, client):
        ids = await chain(client, "a" * 40_000)
        refused = await turn(client, "b" * 40_000, ids[-1])
        assert refused.status_code == 400
        err = assert_error(await refused.get_json(), "response_chain_too_large")
        assert "plugins.openai_compat.responses_max_chain_bytes" in err["message"]
        assert "65536" in err["message"]
    assert (await db_rows(store_url, "SELECT COUNT(*) FROM openai_responses"))[0][0] == 1


async def test_retention_removes_whole_chains_and_never_breaks_one(
    make_settings, upstream, store_url
):
    settings = settings_for(make_settings, upstream, keep_two=True)
    async with running_app(settings) as (app, client):
        (alone,) = await chain(client, "alone")
        ids = await chain(client, "one", "two", "three")
        retention = context(app).retention
        assert retention is not None
        # Keep two: the chain's first turn is beyond them, but its newest is not.
        await retention.prune()  # (the background prune may have run first: same result)
        assert (await db_rows(store_url, "SELECT COUNT(*) FROM openai_responses"))[0][0] == 3
        gone = await client.get(f"/v1/responses/{alone}", headers=ADMIN)
        assert gone.status_code == 404
        follow = await turn(client, "four", ids[-1])
        assert follow.status_code == 200
        assert len(upstream.bodies()[-1]["messages"]) == 7
        # Old enough, the whole chain goes at once.
        later = await retention.prune(now=now_ms() + 31 * DAY_MS)
        assert later.removed["openai_compat"] == {"responses": 4}
    assert (await db_rows(store_url, "SELECT COUNT(*) FROM openai_responses"))[0][0] == 0


async def test_deleting_a_linked_response_hides_it_and_keeps_later_turns_whole(
    make_settings, upstream, store_url
):
    async with running_app(settings_for(make_settings, upstream)) as (_, client):
        first, middle, last = await chain(client, "one", "two", "three")
        deleted = await client.delete(f"/v1/responses/{middle}", headers=ADMIN)
        assert deleted.status_code == 200
        assert (await client.get(f"/v1/responses/{middle}", headers=ADMIN)).status_code == 404
        again = await client.delete(f"/v1/responses/{middle}", headers=ADMIN)
        assert again.status_code == 404
        refused = await turn(client, "from the middle", middle)
        assert_error(await refused.get_json(), "previous_response_not_found")
        follow = await turn(client, "four", last)
        assert follow.status_code == 200
        assert [m["content"] for m in upstream.bodies()[-1]["messages"][0::2]] == [
            "one",
            "two",
            "three",
            "four",
        ]
        follow_id = (await follow.get_json())["id"]
        # The last turns go; the hidden middle goes with them; the first stays.
        for gone in (follow_id, last):
            assert (await client.delete(f"/v1/responses/{gone}", headers=ADMIN)).status_code == 200
    rows = await db_rows(store_url, "SELECT id FROM openai_responses")
    assert rows == [(first,)]
