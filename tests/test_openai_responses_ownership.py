"""Stored responses belong to the principal that stored them: another caller cannot read,
continue or delete one (404, as if it did not exist), across restarts;
``allow_responses_read_all`` reads everyone's, ``allow_responses_act_all`` deletes them, and
no gate continues another's chain; rows stored before ownership are left to holders of
those gates. Through HTTP on SQLite and on PostgreSQL, on the offline echo model."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ADMIN, READER, db_execute, db_rows, running_app
from tests.openai_helpers import assert_error

pytestmark = pytest.mark.usefixtures("store_url")

OTHER_TOKEN = "test-other-token-0123456789"
OTHER = {"Authorization": f"Bearer {OTHER_TOKEN}"}
AUDITOR_TOKEN = "test-auditor-token-0123456789"
AUDITOR = {"Authorization": f"Bearer {AUDITOR_TOKEN}"}
JANITOR_TOKEN = "test-janitor-token-0123456789"
JANITOR = {"Authorization": f"Bearer {JANITOR_TOKEN}"}


def two_callers(make_settings: Any) -> Any:
    """The conftest tokens plus a second non-admin one, a read-all and a read-and-act-all
    one."""
    return make_settings(
        auth={
            "tokens": {
                "other": {"token": OTHER_TOKEN, "gates": []},
                "auditor": {"token": AUDITOR_TOKEN, "gates": ["allow_responses_read_all"]},
                "janitor": {
                    "token": JANITOR_TOKEN,
                    "gates": ["allow_responses_read_all", "allow_responses_act_all"],
                },
            }
        }
    )


async def create(client: Any, headers: dict[str, str], text: str, **extra: Any) -> Any:
    body = {"model": "echo", "input": text, **extra}
    return await client.post("/v1/responses", json=body, headers=headers)


async def stored(client: Any, headers: dict[str, str], text: str) -> str:
    response = await create(client, headers, text)
    assert response.status_code == 200, await response.get_data(as_text=True)
    return str((await response.get_json())["id"])


async def assert_not_found(response: Any, code: str) -> None:
    assert response.status_code == 404, await response.get_data(as_text=True)
    error = assert_error(await response.get_json(), code)
    assert error["type"] == "not_found"


async def assert_hidden_from(client: Any, headers: dict[str, str], response_id: str) -> None:
    """``headers``' caller finds nothing under ``response_id``: no read, delete or follow-up."""
    await assert_not_found(
        await client.get(f"/v1/responses/{response_id}", headers=headers), "response_not_found"
    )
    await assert_not_found(
        await client.delete(f"/v1/responses/{response_id}", headers=headers),
        "response_not_found",
    )
    follow = await create(client, headers, "replay it", previous_response_id=response_id)
    await assert_not_found(follow, "previous_response_not_found")


async def test_another_principal_cannot_read_continue_or_delete_a_response(make_settings):
    async with running_app(two_callers(make_settings)) as (_app, client):
        mine = await stored(client, READER, "my secret")
        await assert_hidden_from(client, OTHER, mine)
        # Nothing changed for the owner: it reads, continues and deletes its response.
        got = await client.get(f"/v1/responses/{mine}", headers=READER)
        assert (await got.get_json())["output"][0]["content"][0]["text"] == "echo: my secret"
        follow = await create(client, READER, "and more", previous_response_id=mine)
        assert follow.status_code == 200
        assert (await follow.get_json())["previous_response_id"] == mine
        deleted = await client.delete(f"/v1/responses/{mine}", headers=READER)
        assert (await deleted.get_json())["deleted"] is True
        gone = await client.get(f"/v1/responses/{mine}", headers=READER)
        await assert_not_found(gone, "response_not_found")


async def test_read_all_reads_act_all_deletes_and_no_gate_continues_anothers_response(
    make_settings,
):
    async with running_app(two_callers(make_settings)) as (_app, client):
        mine = await stored(client, READER, "my secret")
        for headers in (AUDITOR, JANITOR, ADMIN):  # "*" holds both gates
            got = await client.get(f"/v1/responses/{mine}", headers=headers)
            assert got.status_code == 200
            assert (await got.get_json())["output"][0]["content"][0]["text"] == "echo: my secret"
            # Continuing would copy the reader's conversation into the caller's response.
            follow = await create(client, headers, "go on", previous_response_id=mine)
            await assert_not_found(follow, "previous_response_not_found")
        # Reading is not acting: the auditor may see it but not delete it.
        refused = await client.delete(f"/v1/responses/{mine}", headers=AUDITOR)
        assert refused.status_code == 403
        assert_error(await refused.get_json(), "policy_gate_denied")
        assert (await client.get(f"/v1/responses/{mine}", headers=READER)).status_code == 200
        deleted = await client.delete(f"/v1/responses/{mine}", headers=JANITOR)
        assert (await deleted.get_json())["deleted"] is True
        gone = await client.get(f"/v1/responses/{mine}", headers=READER)
        await assert_not_found(gone, "response_not_found")


async def test_ownership_survives_a_restart(make_settings):
    settings = two_callers(make_settings)
    async with running_app(settings) as (_app, client):
        mine = await stored(client, READER, "kept")
        theirs = await stored(client, OTHER, "theirs")
    async with running_app(settings) as (_app, client):
        await assert_hidden_from(client, OTHER, mine)
        await assert_hidden_from(client, READER, theirs)
        follow = await create(client, READER, "after restart", previous_response_id=mine)
        assert follow.status_code == 200
        own = await client.get(f"/v1/responses/{theirs}", headers=OTHER)
        assert own.status_code == 200


async def test_responses_stored_before_ownership_are_left_to_read_all_holders(
    make_settings, store_url
):
    settings = two_callers(make_settings)
    async with running_app(settings) as (_app, client):
        old = await stored(client, READER, "from before")
    # Take the store back to before migration 3 of openai_compat (no owner column).
    await db_execute(
        store_url,
        "ALTER TABLE openai_responses DROP COLUMN owner",
        "DELETE FROM schema_migrations WHERE namespace = 'openai_compat' AND version = 3",
    )
    async with running_app(settings) as (_app, client):
        await assert_hidden_from(client, READER, old)
        got = await client.get(f"/v1/responses/{old}", headers=ADMIN)
        assert got.status_code == 200
        follow = await create(client, ADMIN, "go on", previous_response_id=old)
        assert follow.status_code == 200
        # The continuation is the admin's own response.
        follow_id = (await follow.get_json())["id"]
        await assert_hidden_from(client, READER, follow_id)
        deleted = await client.delete(f"/v1/responses/{old}", headers=ADMIN)
        assert deleted.status_code == 200
    owners = await db_rows(
        store_url,
        "SELECT id, owner, deleted_ms IS NOT NULL FROM openai_responses ORDER BY created_ms",
    )
    # The deleted one stays, hidden, for the turn that links to it.
    assert owners == [(old, None, 1), (follow_id, "token:admin", 0)]


async def test_a_streamed_response_is_stored_for_its_caller(make_settings):
    async with running_app(two_callers(make_settings)) as (_app, client):
        streamed = await create(client, READER, "streamed", stream=True)
        raw = await streamed.get_data(as_text=True)
        assert raw.rstrip().endswith("data: [DONE]")
        response_id = raw.split('"id":"', 1)[1].split('"', 1)[0]
        assert response_id.startswith("resp")
        await assert_hidden_from(client, OTHER, response_id)
        own = await client.get(f"/v1/responses/{response_id}", headers=READER)
        assert (await own.get_json())["status"] == "completed"
