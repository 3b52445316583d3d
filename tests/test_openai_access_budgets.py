"""Per-principal model access, budgets and usage: the ``models`` and ``budgets`` keys of
``[auth.tokens.<name>]``, through the official openai SDK against a gateway served in
this process (Hypercorn on loopback) in front of the fake upstream, on both stores. A
restart is a second app on the same store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import openai
import pytest

from host.app import create_app
from host.settings import Settings
from tests.conftest import ADMIN, ADMIN_TOKEN, bearer, db_rows, gateway_cli, metric, running_app
from tests.fake_openai_upstream import KEY_ENV, FakeUpstream, models_config
from tests.openai_helpers import USER, InProcessServer, async_sdk, served

pytestmark = pytest.mark.usefixtures("store_url")

LIMITED_TOKEN = "test-limited-token-0123456789"
SPENDER_TOKEN = "test-spender-token-0123456789"
LIMITED = bearer(LIMITED_TOKEN)
SPENDER = bearer(SPENDER_TOKEN)


def settings_with(make_settings: Callable[..., Settings], upstream: FakeUpstream, **budgets: Any):
    return make_settings(
        models=models_config(upstream),
        auth={
            "tokens": {
                "limited": {"token": LIMITED_TOKEN, "models": ["gpt-test", "gpt-strict-*"]},
                "spender": {"token": SPENDER_TOKEN, "budgets": budgets},
            }
        },
    )


@asynccontextmanager
async def gateway(settings: Settings) -> AsyncIterator[InProcessServer]:
    async with served(create_app(settings, load_entrypoints=False)) as server:
        yield server


@pytest.fixture(autouse=True)
def _upstream_key(monkeypatch: pytest.MonkeyPatch, upstream: FakeUpstream) -> None:
    monkeypatch.setenv(KEY_ENV, upstream.api_key)


# -- access ---------------------------------------------------------------------------------


async def test_a_key_limited_to_models_sees_only_them_and_others_are_not_found(
    make_settings, upstream
):
    async with gateway(settings_with(make_settings, upstream)) as server:
        limited = async_sdk(server, LIMITED_TOKEN)
        listed = {m.id async for m in limited.models.list()}
        assert listed == {"gpt-test", "gpt-strict-quiet"}  # gpt-strict-* does not match gpt-strict
        answer = await limited.chat.completions.create(model="gpt-test", messages=USER)
        assert answer.model == "gpt-test"
        # A configured model it may not use answers exactly as one that does not exist.
        errors = {}
        for name in ("gpt-slow", "no-such-model"):
            with pytest.raises(openai.NotFoundError) as missing:
                await limited.chat.completions.create(model=name, messages=USER)
            assert missing.value.code == "model_not_found"
            errors[name] = missing.value.message.replace(name, "<model>")
            with pytest.raises(openai.NotFoundError):
                await limited.models.retrieve(name)
            with pytest.raises(openai.NotFoundError):
                await limited.responses.create(model=name, input="hi")
        assert errors["gpt-slow"] == errors["no-such-model"]
        assert [b["model"] for b in upstream.bodies()] == ["normal"]
        # The admin (no models key) sees every model.
        admin = {m.id async for m in async_sdk(server).models.list()}
        assert {"gpt-slow", "gpt-test", "echo"} <= admin


async def test_config_check_names_a_bad_budget_key(make_settings, upstream, tmp_path):
    from tests.conftest import write_config

    config = {
        "state_dir": str(tmp_path / "state"),
        "auth": {
            "mode": "token",
            "tokens": {"ci": {"token": "x" * 24, "budgets": {"tokens_per_day": 0, "typo": 1}}},
        },
    }
    write_config(tmp_path / "gateway.toml", config)
    result = gateway_cli("config", "check", cwd=tmp_path)
    assert result.returncode == 1
    assert "auth.tokens.ci.budgets.tokens_per_day" in result.stdout + result.stderr
    assert "auth.tokens.ci.budgets.typo" in result.stdout + result.stderr


# -- budgets --------------------------------------------------------------------------------


async def test_requests_per_minute_refuses_the_next_request_before_the_upstream(
    make_settings, upstream
):
    settings = settings_with(make_settings, upstream, requests_per_minute=2)
    async with gateway(settings) as server:
        client = async_sdk(server, SPENDER_TOKEN)
        for _ in range(3):  # again if a minute turned over during the attempt
            minute = time.time() // 60
            upstream.reset()
            ok = 0
            refused: openai.RateLimitError | None = None
            for _ in range(3):
                try:
                    await client.chat.completions.create(model="gpt-test", messages=USER)
                    ok += 1
                except openai.RateLimitError as exc:
                    refused = exc
            if time.time() // 60 == minute:
                break
        assert ok == 2 and refused is not None
        assert refused.code == "budget_exceeded"
        assert "requests_per_minute" in refused.message
        retry_after = int(refused.response.headers["Retry-After"])
        assert 1 <= retry_after <= 60
        assert len(upstream.requests) == 2  # the refused one never reached it
        # Per model: another model has its own per-minute count.
        other = await client.chat.completions.create(model="gpt-length", messages=USER)
        assert other.model == "gpt-length"


async def test_a_day_budget_refuses_at_the_right_count_and_across_a_restart(
    make_settings, upstream
):
    # The fake upstream reports 11 tokens a call: 11 and 22 are admitted (under 30 when
    # asked), the third call finds 33 spent.
    settings = settings_with(make_settings, upstream, tokens_per_day=30)
    async with gateway(settings) as server:
        client = async_sdk(server, SPENDER_TOKEN)
        for _ in range(3):
            await client.chat.completions.create(model="gpt-test", messages=USER)
        with pytest.raises(openai.RateLimitError) as refused:
            await client.chat.completions.create(model="gpt-test", messages=USER)
        assert refused.value.code == "budget_exceeded"
        assert "tokens_per_day" in refused.value.message
        until_midnight = 86400 - time.time() % 86400
        assert abs(int(refused.value.response.headers["Retry-After"]) - until_midnight) <= 5
    assert len(upstream.requests) == 3
    async with gateway(settings) as server:
        with pytest.raises(openai.RateLimitError):
            await async_sdk(server, SPENDER_TOKEN).responses.create(model="gpt-test", input="hi")
        # Another key's budget is its own.
        await async_sdk(server).chat.completions.create(model="gpt-test", messages=USER)
    assert len(upstream.requests) == 4


async def test_a_month_budget_counts_every_model_and_streams_at_their_end(make_settings, upstream):
    # 11 tokens, counted when the stream ended, spend a budget of 10.
    settings = settings_with(make_settings, upstream, tokens_per_month=10)
    async with gateway(settings) as server:
        client = async_sdk(server, SPENDER_TOKEN)
        stream = await client.chat.completions.create(model="gpt-test", messages=USER, stream=True)
        assert [c async for c in stream]
        with pytest.raises(openai.RateLimitError) as refused:
            await client.completions.create(model="gpt-length", prompt="hi")
        assert "tokens_per_month" in refused.value.message


async def test_a_stream_without_usage_is_estimated_from_its_text_and_marked(
    make_settings, upstream, store_url
):
    async with gateway(settings_with(make_settings, upstream)) as server:
        client = async_sdk(server, LIMITED_TOKEN)
        stream = await client.chat.completions.create(
            model="gpt-strict-quiet", messages=USER, stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        await client.chat.completions.create(model="gpt-test", messages=USER)
    rows = await db_rows(
        store_url,
        "SELECT model, requests, input_tokens, output_tokens, estimated_requests, principal "
        "FROM openai_usage ORDER BY model",
    )
    assert rows == [
        ("gpt-strict-quiet", 1, rows[0][2], -(-len(text) // 4), 1, "token:limited"),
        ("gpt-test", 1, 7, 4, 0, "token:limited"),
    ]
    assert rows[0][2] > 0


# -- usage ----------------------------------------------------------------------------------


async def test_usage_is_per_principal_model_and_day_and_read_all_needs_the_gate(
    make_settings, upstream
):
    settings = settings_with(make_settings, upstream)
    async with running_app(settings) as (_, client):
        for headers in (LIMITED, ADMIN, ADMIN):
            answer = await client.post(
                "/v1/chat/completions",
                json={"model": "gpt-test", "messages": USER},
                headers=headers,
            )
            assert answer.status_code == 200
            assert answer.headers["X-Gateway-Model"] == "gpt-test"
        own = await (await client.get("/gateway/usage", headers=LIMITED)).get_json()
        assert [(r["principal"], r["requests"], r["total_tokens"]) for r in own["data"]] == [
            ("token:limited", 1, 11)
        ]
        assert own["data"][0]["day"] == time.strftime("%Y-%m-%d", time.gmtime())
        for query in ("?all=true", "?principal=token:admin"):
            denied = await client.get(f"/gateway/usage{query}", headers=LIMITED)
            assert denied.status_code == 403
            assert (await denied.get_json())["error"]["code"] == "policy_gate_denied"
        everyone = await (await client.get("/gateway/usage?all=true", headers=ADMIN)).get_json()
        assert {(r["principal"], r["requests"]) for r in everyone["data"]} == {
            ("token:limited", 1),
            ("token:admin", 2),
        }
        bad = await client.get("/gateway/usage?since=yesterday", headers=ADMIN)
        assert bad.status_code == 400
        assert (await bad.get_json())["error"]["code"] == "invalid_query"
        assert (
            await metric(client, "gateway_llm_principal_requests_total", principal="token:limited")
            == 1
        )
        assert (
            await metric(
                client,
                "gateway_llm_principal_tokens_total",
                principal="token:admin",
                model="gpt-test",
                direction="out",
            )
            == 8
        )


async def test_gateway_usage_prints_the_callers_usage(make_settings, upstream, tmp_path):
    settings = settings_with(make_settings, upstream)
    async with gateway(settings) as server:
        await async_sdk(server, LIMITED_TOKEN).chat.completions.create(
            model="gpt-test", messages=USER
        )
        result = await asyncio.to_thread(
            gateway_cli,
            "usage",
            "--url",
            server.url,
            "--token",
            LIMITED_TOKEN,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        header, row = result.stdout.strip().splitlines()
        assert header.split()[:4] == ["DAY", "PRINCIPAL", "MODEL", "REQUESTS"]
        assert row.split()[1:6] == ["token:limited", "gpt-test", "1", "7", "4"]
        denied = await asyncio.to_thread(
            gateway_cli,
            "usage",
            "--all",
            "--url",
            server.url,
            "--token",
            LIMITED_TOKEN,
            cwd=tmp_path,
        )
        assert denied.returncode == 1 and "policy_gate_denied" in denied.stderr
        assert ADMIN_TOKEN not in denied.stderr


async def test_two_replicas_on_one_store_share_the_budgets(make_settings, upstream):
    settings = make_settings(
        models=models_config(upstream),
        auth={
            "tokens": {
                "spender": {
                    "token": SPENDER_TOKEN,
                    "budgets": {"requests_per_minute": 3, "tokens_per_day": 30},
                }
            }
        },
        plugins={"openai_compat": {"usage_flush_seconds": 0.1}},
    )
    async with running_app(settings) as (_, one), running_app(settings) as (_, two):

        async def ask(client: Any) -> Any:
            return await client.post(
                "/v1/chat/completions",
                json={"model": "gpt-test", "messages": USER},
                headers=SPENDER,
            )

        for _ in range(3):  # again if a minute turned over during the attempt
            minute = time.time() // 60
            codes = [(await ask(client)).status_code for client in (one, two, one, two)]
            if time.time() // 60 == minute:
                break
        # Three requests a minute between them, whichever replica takes them.
        assert codes == [200, 200, 200, 429]
        # 33 tokens spent, 22 of them through the first replica: the second sees them
        # once they are written (within usage_flush_seconds) and refuses for the day.
        deadline = time.monotonic() + 10
        while True:
            refused = await ask(two)
            assert refused.status_code == 429
            if "tokens_per_day" in (await refused.get_json())["error"]["message"]:
                break
            assert time.monotonic() < deadline, "the second replica never saw the tokens"
            await asyncio.sleep(0.05)


async def test_a_reload_applies_a_tokens_new_model_list_and_refuses_a_bad_budget(tmp_path):
    from host.settings import load_settings
    from tests.conftest import base_config, write_config

    def config(models: list[str], budgets: dict[str, Any]) -> dict[str, Any]:
        data = base_config(tmp_path / "state")
        data["auth"]["tokens"]["limited"] = {
            "token": LIMITED_TOKEN,
            "models": models,
            "budgets": budgets,
        }
        data["models"] = {"echo": {"provider": "echo"}, "other": {"provider": "echo"}}
        return data

    path = write_config(tmp_path / "gateway.toml", config(["echo"], {}))
    async with running_app(load_settings(str(path))) as (_, client):

        async def listed() -> list[str]:
            found = await (await client.get("/v1/models", headers=LIMITED)).get_json()
            return [m["id"] for m in found["data"]]

        assert await listed() == ["echo"]
        write_config(path, config(["other"], {}))
        assert (await client.post("/gateway/reload", headers=ADMIN)).status_code == 200
        assert await listed() == ["other"]
        write_config(path, config(["echo"], {"requests_per_minute": -1}))
        refused = await client.post("/gateway/reload", headers=ADMIN)
        assert refused.status_code == 400
        message = (await refused.get_json())["error"]["message"]
        assert "auth.tokens.limited.budgets.requests_per_minute" in message
        assert await listed() == ["other"]  # the running configuration stays


async def test_a_stream_the_client_leaves_is_counted_estimated(make_settings, upstream, store_url):
    async with gateway(settings_with(make_settings, upstream)) as server:
        client = async_sdk(server, SPENDER_TOKEN)
        stream = await client.chat.completions.create(
            model="gpt-endless", messages=USER, stream=True
        )
        seen = 0
        async for chunk in stream:
            seen += len(chunk.choices[0].delta.content or "")
            if seen >= 20:
                break
        await stream.close()  # an endless stream never sends its usage
        await asyncio.to_thread(upstream.disconnected.wait, 10)
    rows = await db_rows(
        store_url,
        "SELECT principal, model, requests, output_tokens, estimated_requests, errors "
        "FROM openai_usage",
    )
    # Its text so far, about four characters a token, marked estimated; not ended well.
    ((principal, model, requests, output_tokens, estimated, errors),) = rows
    assert (principal, model, requests, estimated, errors) == (
        "token:spender",
        "gpt-endless",
        1,
        1,
        1,
    )
    assert output_tokens >= 5
