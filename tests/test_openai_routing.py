"""Routing over deployments and fallbacks (``[[models.<name>.deployments]]``,
``fallbacks``, ``cooldown_seconds``), through the official openai SDK against a gateway
served in this process in front of two real loopback upstreams (``a`` and ``b``, the fake
upstream; what each does is its upstream model name) and a port that refuses
connections."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest

from host.api import service
from host.app import create_app
from plugins.openai_compat.contract import ModelCatalog
from tests.conftest import ADMIN, running_app
from tests.fake_openai_upstream import KEY_ENV, NORMAL_TEXT, FakeUpstream, closed_port
from tests.openai_helpers import SAFETY_OFF, USER, InProcessServer, async_sdk, served

HEAVY, LIGHT = 1000, 0.001  # the heavy deployment is tried first (all but surely)


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    a, b = FakeUpstream().start(), FakeUpstream().start()
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture
def ab(upstreams: tuple[FakeUpstream, FakeUpstream]) -> tuple[FakeUpstream, FakeUpstream]:
    for up in upstreams:
        up.reset()
    return upstreams


def dep(up: FakeUpstream | None, upstream_model: str, **extra: Any) -> dict[str, Any]:
    url = f"{up.url}/v1" if up is not None else f"http://127.0.0.1:{closed_port()}/v1"
    return {"base_url": url, "upstream_model": upstream_model, **extra}


def models(a: FakeUpstream, b: FakeUpstream) -> dict[str, Any]:
    def model(*deployments: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {
            "provider": "openai",
            "api_key": {"env": KEY_ENV},
            "max_retries": 0,
            "deployments": list(deployments),
            **extra,
        }

    return {
        "pair": model(dep(a, "normal", weight=1), dep(b, "normal", weight=3)),
        "held": model(dep(a, "slow", name="a"), dep(b, "slow", name="b")),
        "half-refused": model(dep(None, "normal", weight=HEAVY), dep(a, "normal", weight=LIGHT)),
        "half-500": model(dep(a, "error500", weight=HEAVY), dep(b, "normal", weight=LIGHT)),
        "primary": model(dep(a, "error500"), fallbacks=["second", "third"]),
        "second": model(dep(b, "ratelimit"), cooldown_seconds=1),
        "third": model(dep(a, "normal")),
        "dying": model(dep(a, "dies"), fallbacks=["third"]),
        "brief": model(
            dep(a, "error500", name="bad", weight=HEAVY),
            dep(b, "normal", name="good", weight=LIGHT),
            cooldown_seconds=0.2,
        ),
    }


@pytest.fixture
async def gateway(
    make_settings: Any, ab: tuple[FakeUpstream, FakeUpstream], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[InProcessServer]:
    monkeypatch.setenv(KEY_ENV, ab[0].api_key)
    # Safety off: these tests watch a stream's first chunk arrive before the upstream
    # sends the next, which the safety hold-back would keep until the stream ends.
    settings = make_settings(models=models(*ab), plugins=SAFETY_OFF)
    app = create_app(settings, load_entrypoints=False)
    async with served(app) as server:
        yield server


async def status(server: InProcessServer) -> dict[str, Any]:
    import httpx

    async with httpx.AsyncClient() as http:
        answer = await http.get(f"{server.url}/gateway/status", headers=ADMIN)
    deployments: dict[str, Any] = answer.json()["plugin_status"]["openai_compat"]["deployments"]
    return deployments


async def test_requests_spread_over_deployments_by_weight(gateway, ab):
    client = async_sdk(gateway)
    for _ in range(40):
        answer = await client.chat.completions.create(model="pair", messages=USER)
        assert answer.model == "pair"
    a, b = len(ab[0].requests), len(ab[1].requests)
    assert a + b == 40 and 0 < a < b  # weight 1 against 3


async def test_a_call_goes_to_the_deployment_with_fewer_in_flight(gateway, ab):
    client = async_sdk(gateway)
    first = await client.chat.completions.create(model="held", messages=USER, stream=True)
    chunk = await anext(aiter(first))
    assert chunk.choices[0].delta.content == "first"
    second = await client.chat.completions.create(model="held", messages=USER, stream=True)
    await anext(aiter(second))
    # One each: the second went where nothing was in flight.
    assert len(ab[0].requests) == 1 and len(ab[1].requests) == 1
    in_flight = {d["deployment"]: d["in_flight"] for d in (await status(gateway))["held"]}
    assert in_flight == {"a": 1, "b": 1}
    for up in ab:
        up.release.set()
    assert [c async for c in first] and [c async for c in second]
    in_flight = {d["deployment"]: d["in_flight"] for d in (await status(gateway))["held"]}
    assert in_flight == {"a": 0, "b": 0}


@pytest.mark.parametrize("model", ["half-refused", "half-500"])
@pytest.mark.parametrize("stream", [False, True])
async def test_a_failing_deployment_is_skipped_without_the_client_noticing(
    gateway, ab, model, stream
):
    client = async_sdk(gateway)
    for _ in range(3):
        if stream:
            chunks = await client.chat.completions.create(model=model, messages=USER, stream=True)
            text = "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])
        else:
            answer = await client.chat.completions.create(model=model, messages=USER)
            text = answer.choices[0].message.content or ""
        assert text == NORMAL_TEXT
    bad, good = (await status(gateway))[model]
    assert bad["healthy"] is False and bad["failures"] == 1  # cooled: not tried again
    assert good["healthy"] is True and good["failures"] == 0
    assert bad["cooldown_remaining_seconds"] > 20  # the default 30 s
    # The 500 deployment was asked once; the other three times.
    assert len(ab[0].bodies("error500")) == (1 if model == "half-500" else 0)
    counted = await _metric(gateway, model)
    assert counted == 1


async def _metric(server: InProcessServer, model: str) -> float:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{server.url}/metrics", headers=ADMIN)).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "gateway_llm_deployment_failures_total"
                and sample.labels["model"] == model
            ):
                total += sample.value
    return total


@pytest.mark.parametrize("api", ["chat", "completions", "responses", "responses-stream"])
async def test_fallbacks_are_tried_in_order_and_the_answer_names_the_model(gateway, ab, api):
    client = async_sdk(gateway)
    raw: Any
    if api == "chat":
        raw = await client.chat.completions.with_raw_response.create(model="primary", messages=USER)
        model, header = raw.parse().model, raw.headers["X-Gateway-Model"]
    elif api == "completions":
        raw = await client.completions.with_raw_response.create(model="primary", prompt="hi")
        model, header = raw.parse().model, raw.headers["X-Gateway-Model"]
    elif api == "responses":
        raw = await client.responses.with_raw_response.create(model="primary", input="hi")
        model, header = raw.parse().model, raw.headers["X-Gateway-Model"]
        assert raw.parse().output_text == NORMAL_TEXT
    else:
        async with client.responses.with_streaming_response.create(
            model="primary", input="hi", stream=True
        ) as streamed:
            header = streamed.headers["X-Gateway-Model"]
            events: list[Any] = [e async for e in await streamed.parse()]
        assert events[0].response.model == "third"
        model = events[-1].response.model
        assert events[-1].type == "response.completed"
    assert model == header == "third"
    # primary's 500, then second's 429, then third answered.
    assert [b["model"] for b in ab[0].bodies()] == ["error500", "normal"]
    assert [b["model"] for b in ab[1].bodies()] == ["ratelimit"]
    second = (await status(gateway))["second"][0]
    # Its cool-down is 1 s, but the upstream's Retry-After said 7.
    assert second["healthy"] is False and second["cooldown_remaining_seconds"] > 5


async def test_a_cooled_deployment_is_tried_again_once_its_cool_down_ends(gateway, ab):
    client = async_sdk(gateway)
    await client.chat.completions.create(model="brief", messages=USER)
    assert len(ab[0].bodies("error500")) == 1
    deadline = time.monotonic() + 10
    while not (await status(gateway))["brief"][0]["healthy"]:
        assert time.monotonic() < deadline, "the cool-down did not end"
        await asyncio.sleep(0.05)
    answer = await client.chat.completions.create(model="brief", messages=USER)
    assert answer.choices[0].message.content == NORMAL_TEXT
    assert len(ab[0].bodies("error500")) == 2  # asked again, failed again, skipped again


async def test_a_stream_that_fails_mid_way_is_not_retried(gateway, ab):
    client = async_sdk(gateway)
    stream = await client.chat.completions.create(model="dying", messages=USER, stream=True)
    seen = []
    with pytest.raises(openai.APIError):
        async for chunk in stream:
            seen.append(chunk.choices[0].delta.content if chunk.choices else None)
    assert "partial" in seen
    # Its first chunk had reached the client: no fallback was asked.
    assert [b["model"] for b in ab[0].bodies()] == ["dies"]


async def test_pipeline_llm_steps_are_routed_through_the_catalog_service(
    make_settings, ab, monkeypatch
):
    monkeypatch.setenv(KEY_ENV, ab[0].api_key)
    async with running_app(make_settings(models=models(*ab))) as (app, _):
        catalog = service(ModelCatalog, app=app)
        answer = await catalog.chat("primary", {"messages": USER})
        assert answer["model"] == "third"
        chunks = [c async for c in catalog.chat_stream("primary", {"messages": USER})]
        text = "".join(
            c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
        )
        assert text == NORMAL_TEXT
    assert [b["model"] for b in ab[0].bodies()] == ["error500", "normal", "normal"]
