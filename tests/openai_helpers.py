"""Shared by the tests of the OpenAI-compatible surface (``tests/test_openai_*.py``).

Fixtures (registered through ``tests/conftest.py``): ``module_upstream``, one fake
upstream per test module; ``upstream``, the same, reset for each test;
``openai_gateway``, a real ``gateway serve`` in front of it with
:func:`tests.fake_openai_upstream.models_config`; and ``app_client``, the Quart test
client of a gateway in front of ``fake_upstream``. Helpers: SDK clients, the error
envelope check, a request refused before the upstream, SSE parsing, and a gateway
served in-process by Hypercorn (for plugins given as objects, which a ``gateway serve``
subprocess cannot load).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import openai
import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config
from openai.types.chat import ChatCompletionMessageParam
from quart import Quart

from tests.conftest import ADMIN, ADMIN_TOKEN, LiveServer, free_port, running_app, start_server
from tests.fake_openai_upstream import KEY_ENV, FakeUpstream, models_config

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def module_upstream() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture
def upstream(module_upstream: FakeUpstream) -> FakeUpstream:
    module_upstream.reset()
    return module_upstream


@pytest.fixture(scope="module")
def openai_gateway(
    module_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    server = start_server(
        tmp_path_factory.mktemp("openai"),
        config={"models": models_config(module_upstream)},
        env={KEY_ENV: module_upstream.api_key},
    )
    yield server
    server.stop()


@pytest.fixture
async def app_client(
    make_settings: Any, fake_upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Any]:
    monkeypatch.setenv(KEY_ENV, fake_upstream.api_key)
    settings = make_settings(models=models_config(fake_upstream))
    async with running_app(settings) as (_, client):
        yield client


def sdk(server: Any, token: str = ADMIN_TOKEN) -> openai.OpenAI:
    """The sync SDK against ``server`` (anything with a ``url``), retries off."""
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=token, max_retries=0)


def async_sdk(server: Any, token: str = ADMIN_TOKEN) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=token, max_retries=0)


def assert_error(body: Any, code: str, param: str | None = None) -> dict[str, Any]:
    """The error envelope with ``code``; with ``param``, the field is named twice."""
    err: dict[str, Any] = body["error"]
    assert set(err) >= {"type", "code", "message"}
    assert err["code"] == code, err
    if param is not None:
        assert err["param"] == param, err
        assert param in err["message"], err
    return err


async def refused(
    client: Any, upstream: FakeUpstream, path: str, body: dict[str, Any]
) -> dict[str, Any]:
    """POST ``body`` for model ``gpt-test`` to ``path`` with the test ``client``: it must be
    a 400 that never reached ``upstream``. Returns the answer's body."""
    response = await client.post(path, json={"model": "gpt-test", **body}, headers=ADMIN)
    answer: dict[str, Any] = await response.get_json()
    assert response.status_code == 400, answer
    assert upstream.requests == []
    return answer


def sse_data(raw: bytes) -> list[Any]:
    """The ``data:`` payloads of an SSE body, JSON-decoded (``[DONE]`` kept as is)."""
    out: list[Any] = []
    for line in raw.decode().splitlines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


class InProcessServer:
    def __init__(self, url: str) -> None:
        self.url = url


@asynccontextmanager
async def served(app: Quart) -> AsyncIterator[InProcessServer]:
    """Serve ``app`` with Hypercorn on a free loopback port in this event loop (start-up
    and shut-down hooks included); the async SDK can then call it over real HTTP."""
    port = free_port()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.graceful_timeout = 2
    config.accesslog = None
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))
    try:
        await _wait_listening(port, task)
        yield InProcessServer(f"http://127.0.0.1:{port}")
    finally:
        stop.set()
        # Graceful (2 s for open connections) plus the shut-down hooks: well within 30 s,
        # also on a loaded machine (10 s was exceeded once under load).
        await asyncio.wait_for(task, 30)


async def _wait_listening(port: int, task: asyncio.Task[Any]) -> None:
    for _ in range(200):
        if task.done():
            task.result()  # raises what stopped the server
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.02)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise RuntimeError(f"the in-process gateway did not listen on port {port}")
