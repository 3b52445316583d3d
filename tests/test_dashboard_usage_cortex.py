"""The ops console's usage and cortex pages over HTTP: one's own model usage, everyone's
only with ``allow_usage_read_all`` (403 otherwise), totals per model and principal; the
copilot's readiness and the caller's tools; each page says it is disabled when its
plugin is off. On SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ADMIN, READER, READER_TOKEN, running_app
from tests.dashboard_pages_helpers import sign_in

pytestmark = pytest.mark.usefixtures("store_url")
HI = [{"role": "user", "content": "hi"}]


async def text(client: Any, path: str) -> tuple[int, str]:
    response = await client.get(path)
    return response.status_code, (await response.get_data()).decode()


async def chat(client: Any, headers: dict[str, str]) -> None:
    answer = await client.post(
        "/v1/chat/completions", json={"model": "echo", "messages": HI}, headers=headers
    )
    assert answer.status_code == 200, await answer.get_data()


async def test_the_usage_page_shows_ones_own_usage_and_everyones_only_with_the_gate(
    make_settings: Any,
) -> None:
    async with running_app(make_settings()) as (_, client):
        await chat(client, ADMIN)
        await chat(client, ADMIN)
        await chat(client, READER)
        assert (await client.get("/ops/usage")).status_code == 303
        await sign_in(client, token=READER_TOKEN)
        status, html = await text(client, "/ops/usage")
        assert status == 200
        assert "token:reader" in html and "token:admin" not in html
        status, html = await text(client, "/ops/usage?scope=all")
        assert status == 403 and "policy_gate_denied" in html
        status, html = await text(client, "/ops/usage?since=yesterday")
        assert status == 400 and "invalid_query" in html
        await sign_in(client)
        status, html = await text(client, "/ops/usage?scope=all")
        assert status == 200
        assert "token:reader" in html and "token:admin" in html
        # The totals per principal: admin's two requests.
        assert "<td>token:admin</td><td>2</td>" in html


async def test_the_cortex_page_shows_the_copilots_readiness_and_the_callers_tools(
    make_settings: Any,
) -> None:
    async with running_app(make_settings()) as (_, client):
        await sign_in(client)
        status, html = await text(client, "/ops/cortex")
        assert status == 200
        api = await (await client.get("/cortex/status", headers=ADMIN)).get_json()
        assert api["model"]["name"] in html
        for tool in api["tools"]:
            assert tool["name"] in html
        assert 'href="/ops/cortex"' in html and 'href="/ops/usage"' in html


async def test_the_usage_and_cortex_pages_say_so_when_their_plugins_are_off(
    make_settings: Any,
) -> None:
    settings = make_settings(
        plugins={"openai_compat": {"enabled": False}, "cortex": {"enabled": False}}
    )
    async with running_app(settings) as (_, client):
        await sign_in(client)
        for path, plugin in (("/ops/usage", "openai_compat"), ("/ops/cortex", "cortex")):
            status, html = await text(client, path)
            assert status == 503, path
            assert f"This feature is disabled: the {plugin} plugin is off" in html
