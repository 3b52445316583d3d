"""``WS /acp``: the latency a prompt turn gains through the gateway, and the memory an
open remote session costs.

One run starts the test ACP agent (``tests/acp_agent.py``) directly as a subprocess (the
``agent-client-protocol`` package's client over stdio) and ``gateway serve`` as shipped
(one worker, SQLite in a temp dir) with that agent as ``[agents.echo]``. The same
``--prompts`` echo prompts (each answered with three streamed updates, then the
response) are timed on both, after ``--warmup`` of each: p50 and p99 of a turn, and the
difference (what the gateway adds: the WebSocket hop, the session's events written to
the store, the relay). Then ``--sessions`` editors each open a connection and a session
and the gateway's RSS before and after gives the memory per open remote session (the
agent processes, one per session, are counted apart).

The remote-agent hop: the same agent served over WebSocket (``tests/acp_ws_agent.py``,
in a thread of this process) is timed directly (an editor's WebSocket to it) and through
the gateway, where it is ``[agents.far] url`` (the editor's WebSocket to ``/acp``, the
gateway's WebSocket to the agent). Results go to ``bench/results/acp_gateway.json``.

Run: ``.venv/bin/python bench/acp_gateway.py`` (under a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acp import PROTOCOL_VERSION, connect_to_agent, spawn_agent_process, text_block
from acp.ws import create_websocket_stream

from bench.common import (
    Servers,
    descendants,
    load_average,
    machine,
    pct,
    print_machine,
    result_head,
    rss_bytes,
    serve_args,
    write_results,
)
from tests.acp_ws_agent import AgentServer

AGENT = Path(__file__).resolve().parents[1] / "tests" / "acp_agent.py"


class RemoteAgent:
    """The test agent over WebSocket, served by a thread with its own event loop."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with AgentServer() as server:
            self.url = server.url
            self.ready.set()
            await self._stop.wait()

    def __enter__(self) -> RemoteAgent:
        self._thread.start()
        self.ready.wait(30)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


class Editor:
    def __init__(self) -> None:
        self.updates = 0

    async def session_update(self, session_id: str, update: Any, **kwargs: Any) -> None:
        self.updates += 1

    async def request_permission(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("not asked in this bench")


async def turns(conn: Any, session_id: str, prompts: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        await conn.prompt(session_id=session_id, prompt=[text_block("warm")])
    took = []
    for n in range(prompts):
        start = time.perf_counter()
        await conn.prompt(session_id=session_id, prompt=[text_block(f"p{n}")])
        took.append(time.perf_counter() - start)
    return took


async def direct(prompts: int, warmup: int, work: Path) -> list[float]:
    editor = Editor()
    async with spawn_agent_process(editor, sys.executable, str(AGENT), cwd=work) as (conn, _):  # type: ignore[arg-type]
        await conn.initialize(protocol_version=PROTOCOL_VERSION)
        session = await conn.new_session(cwd=str(work), mcp_servers=[])
        return await turns(conn, session.session_id, prompts, warmup)


async def through_gateway(
    url: str, auth: dict[str, str], prompts: int, warmup: int, cwd: str = "/bench"
) -> list[float]:
    transport = await create_websocket_stream(url, headers=auth)
    conn = connect_to_agent(Editor(), transport)  # type: ignore[arg-type]
    try:
        await conn.initialize(protocol_version=PROTOCOL_VERSION)
        session = await conn.new_session(cwd=cwd, mcp_servers=[])
        return await turns(conn, session.session_id, prompts, warmup)
    finally:
        await transport.close()


async def memory(url: str, auth: dict[str, str], pid: int, sessions: int) -> dict[str, Any]:
    before = rss_bytes(pid) or 0
    agents_before = set(descendants(pid))
    open_: list[Any] = []
    for _ in range(sessions):
        transport = await create_websocket_stream(url, headers=auth)
        conn = connect_to_agent(Editor(), transport)  # type: ignore[arg-type]
        await conn.initialize(protocol_version=PROTOCOL_VERSION)
        session = await conn.new_session(cwd="/bench", mcp_servers=[])
        await conn.prompt(session_id=session.session_id, prompt=[text_block("hi")])
        open_.append(transport)
    after = rss_bytes(pid) or 0
    agents = [p for p in descendants(pid) if p not in agents_before]
    agent_rss = sum(rss_bytes(p) or 0 for p in agents)
    for transport in open_:
        await transport.close()
    return {
        "sessions": sessions,
        "gateway_rss_per_session_bytes": (after - before) / sessions,
        "agent_rss_per_session_bytes": agent_rss / max(1, len(agents)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--sessions", type=int, default=8)
    args = parser.parse_args()
    info = machine(["agent-client-protocol", "websockets"])
    print_machine(info)
    token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory() as tmp, RemoteAgent() as remote:
        work = Path(tmp) / "work"
        work.mkdir()
        servers = Servers(Path(tmp), token)
        extra = (
            f'[agents.echo]\ncommand = ["{sys.executable}", "{AGENT}"]\n'
            f'cwd = "{work}"\nmax_sessions = {args.sessions + 2}\n'
            f'[agents.far]\nurl = "{remote.url}"\ncwd = "{work}"\n'
        )
        config = servers.gateway_config("gateway", extra=extra)
        servers.start("gateway", serve_args(config))
        load_before = load_average()
        try:
            servers.wait("gateway", "/health", auth=False)
            url = f"ws://127.0.0.1:{servers.ports['gateway']}/acp?agent=echo"
            direct_s = asyncio.run(direct(args.prompts, args.warmup, work))
            gateway_s = asyncio.run(through_gateway(url, servers.auth, args.prompts, args.warmup))
            far = url.replace("agent=echo", "agent=far")
            remote_s = asyncio.run(
                through_gateway(remote.url, {}, args.prompts, args.warmup, str(work))
            )
            remote_gw_s = asyncio.run(through_gateway(far, servers.auth, args.prompts, args.warmup))
            pid = servers.procs["gateway"].pid
            mem = asyncio.run(memory(url, servers.auth, pid, args.sessions))
        finally:
            servers.stop()
    row = {
        "direct_p50_ms": pct(direct_s, 0.5) * 1000,
        "direct_p99_ms": pct(direct_s, 0.99) * 1000,
        "gateway_p50_ms": pct(gateway_s, 0.5) * 1000,
        "gateway_p99_ms": pct(gateway_s, 0.99) * 1000,
    }
    row["added_p50_ms"] = row["gateway_p50_ms"] - row["direct_p50_ms"]
    row["added_p99_ms"] = row["gateway_p99_ms"] - row["direct_p99_ms"]
    row["remote_direct_p50_ms"] = pct(remote_s, 0.5) * 1000
    row["remote_direct_p99_ms"] = pct(remote_s, 0.99) * 1000
    row["remote_gateway_p50_ms"] = pct(remote_gw_s, 0.5) * 1000
    row["remote_gateway_p99_ms"] = pct(remote_gw_s, 0.99) * 1000
    row["remote_added_p50_ms"] = row["remote_gateway_p50_ms"] - row["remote_direct_p50_ms"]
    row["remote_added_p99_ms"] = row["remote_gateway_p99_ms"] - row["remote_direct_p99_ms"]
    result = {
        **result_head("acp_gateway", info, load_before, load_average()),
        "args": vars(args),
        "turns": row,
        "memory": mem,
    }
    for key, value in {**row, **mem}.items():
        print(f"{key:32} {value:,.2f}" if isinstance(value, float) else f"{key:32} {value}")
    write_results(Path(__file__).with_name("results") / "acp_gateway.json", result)


if __name__ == "__main__":
    main()
