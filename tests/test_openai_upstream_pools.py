"""Connections from the gateway to its model upstreams, seen from the upstream's side:
kept alive across requests, closed when a reload points the model elsewhere, and sent
through the proxy the environment names."""

from __future__ import annotations

import asyncio

import tomli_w

from host.settings import load_settings
from tests.conftest import ADMIN, base_config, running_app
from tests.fake_openai_upstream import closed_port
from tests.scripted_server import (
    CLOSE_WAIT,
    ESTABLISHED,
    ScriptedServer,
    chat_completion,
    held_until,
    request_json,
    sockets_to,
    until,
)

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def write_config(path, state_dir, base_url: str) -> None:
    path.write_text(
        tomli_w.dumps(
            {
                **base_config(state_dir),
                "models": {
                    "m": {"provider": "openai", "base_url": base_url, "upstream_model": "up"}
                },
            }
        )
    )


async def test_requests_reuse_a_connection_and_a_reload_to_a_new_base_url_closes_it(
    tmp_path, state_dir
):
    async with (
        ScriptedServer(chat_completion("old")) as old,
        ScriptedServer(chat_completion("new")) as new,
    ):
        config = tmp_path / "gateway.toml"
        write_config(config, state_dir, f"http://127.0.0.1:{old.port}/v1")
        async with running_app(load_settings(str(config))) as (_app, client):
            for _ in range(3):
                answer = await client.post("/v1/chat/completions", json=CHAT, headers=ADMIN)
                assert (await answer.get_json())["choices"][0]["message"]["content"] == "old"
            assert old.connections == 1  # kept alive
            assert request_json(old.requests[0])["model"] == "up"

            write_config(config, state_dir, f"http://127.0.0.1:{new.port}/v1")
            reloaded = await client.post("/gateway/reload", headers=ADMIN)
            assert reloaded.status_code == 200, await reloaded.get_data()
            await asyncio.sleep(0.1)
            assert old.closed_by_client == 1  # the old pool let its connection go

            answer = await client.post("/v1/chat/completions", json=CHAT, headers=ADMIN)
            assert (await answer.get_json())["choices"][0]["message"]["content"] == "new"
            assert len(old.requests) == 3


async def test_connections_the_upstream_closes_after_a_burst_leave_no_close_wait_socket(
    tmp_path, state_dir
):
    release = asyncio.Event()
    async with ScriptedServer(held_until(30, chat_completion("hi"), release)) as upstream:
        config = tmp_path / "gateway.toml"
        write_config(config, state_dir, f"http://127.0.0.1:{upstream.port}/v1")
        async with running_app(load_settings(str(config))) as (_app, client):
            answers = await asyncio.gather(
                *(client.post("/v1/chat/completions", json=CHAT, headers=ADMIN) for _ in range(30))
            )
            assert [answer.status_code for answer in answers] == [200] * 30
            assert upstream.connections == 30
            release.set()  # the upstream closes its idle connections, long before 4 s
            await until(lambda: sockets_to(upstream.port, ESTABLISHED, CLOSE_WAIT) == 0)
            answer = await client.post("/v1/chat/completions", json=CHAT, headers=ADMIN)
            assert answer.status_code == 200, await answer.get_data()  # a new connection
        assert upstream.connections == 31


async def test_a_proxy_from_the_environment_is_used_unless_no_proxy_names_the_host(
    tmp_path, state_dir, monkeypatch
):
    # The "proxy" answers itself: enough to see the absolute-form request a proxy gets.
    upstream_port = closed_port()
    async with ScriptedServer(chat_completion("via proxy")) as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        config = tmp_path / "gateway.toml"
        write_config(config, state_dir, f"http://127.0.0.1:{upstream_port}/v1")
        async with running_app(load_settings(str(config))) as (_app, client):
            answer = await client.post("/v1/chat/completions", json=CHAT, headers=ADMIN)
            body = await answer.get_json()
            assert answer.status_code == 200, body
            assert body["choices"][0]["message"]["content"] == "via proxy"
        request_line = proxy.requests[0].split(b"\r\n", 1)[0]
        assert request_line == (
            f"POST http://127.0.0.1:{upstream_port}/v1/chat/completions HTTP/1.1".encode()
        )

        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        async with running_app(load_settings(str(config))) as (_app, client):
            answer = await client.post("/v1/chat/completions", json=CHAT, headers=ADMIN)
            body = await answer.get_json()
            assert answer.status_code == 502, body  # straight to the closed port
            assert body["error"]["code"] == "upstream_unavailable"
        assert len(proxy.requests) == 1
