"""The upstream hop alone: the gateway's upstream client
(``plugins/openai_compat/providers/client.py``, pools on aiohttp with the gateway's
errors, limits and pool closing) against a bare aiohttp ``ClientSession``, each sending
the same non-streamed and streamed chat completions to ``bench/upstream_app.py`` on
loopback, at 16 requests in flight, in alternating rounds.

Reported per client: requests/s and **CPU µs per request of the client process** (what
the gateway spends on the hop; the upstream runs in its own process), plus the same for
streams of 20 chunks read to the end: what the gateway's layer over aiohttp costs.
(The hand-written h11 client this replaced was measured against aiohttp the same way:
bench/README.md.) Results go to ``bench/results/upstream_clients.json``.

Run: ``.venv/bin/python bench/upstream_clients.py`` (about 1 minute).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(ROOT))

from common import RESULTS_DIR, Servers, free_port, load_average, machine  # noqa: E402

from plugins.openai_compat.providers.client import UpstreamPool  # noqa: E402

BODY = {"model": "bench-model", "messages": [{"role": "user", "content": "hi"}]}
HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}

Send = Callable[[bool], Awaitable[int]]


async def gateway_client(base: str) -> tuple[Send, Callable[[], Awaitable[None]]]:
    pool = UpstreamPool(connect_timeout=5, read_timeout=30)
    url = base.rstrip("/") + "/chat/completions"
    plain = json.dumps(BODY).encode()
    streamed = json.dumps({**BODY, "stream": True}).encode()

    async def send(stream: bool) -> int:
        response = await pool.request("POST", url, HEADERS, streamed if stream else plain)
        try:
            if stream:
                size = 0
                async for part in response.aiter_bytes():
                    size += len(part)
                return size
            return len(await response.read())
        finally:
            await response.aclose()

    return send, pool.aclose


async def with_aiohttp(base: str) -> tuple[Send, Callable[[], Awaitable[None]]]:
    import aiohttp

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=4),
        timeout=aiohttp.ClientTimeout(sock_connect=5, sock_read=30),
        auto_decompress=False,
    )
    url = base.rstrip("/") + "/chat/completions"
    plain = json.dumps(BODY).encode()
    streamed = json.dumps({**BODY, "stream": True}).encode()
    headers = dict(HEADERS)

    async def send(stream: bool) -> int:
        data = streamed if stream else plain
        async with session.post(url, data=data, headers=headers) as response:
            if stream:
                size = 0
                async for part in response.content.iter_any():
                    size += len(part)
                return size
            return len(await response.read())

    return send, session.close


async def measure(send: Send, stream: bool, seconds: float, concurrency: int) -> dict[str, float]:
    done = 0
    stop = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < stop:
            await send(stream)
            done += 1

    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    return {"requests": done, "req_s": done / wall, "cpu_us_per_req": cpu / done * 1e6}


CLIENTS = {"gateway client": gateway_client, "aiohttp session": with_aiohttp}


async def run(args: argparse.Namespace, base: str) -> dict[str, Any]:
    rounds: dict[str, dict[str, list[dict[str, float]]]] = {
        name: {"plain": [], "stream": []} for name in CLIENTS
    }
    order = list(CLIENTS)
    for n in range(args.rounds):
        for name in order if n % 2 == 0 else order[::-1]:
            send, close = await CLIENTS[name](base)
            try:
                await measure(send, False, args.warmup, args.concurrency)
                for kind in ("plain", "stream"):
                    seconds = args.seconds
                    found = await measure(send, kind == "stream", seconds, args.concurrency)
                    rounds[name][kind].append(found)
                    print(f"round {n + 1} {name:20} {kind:6} {fmt(found)}", flush=True)
            finally:
                await close()
    return {
        name: {
            kind: {
                key: statistics.median(r[key] for r in runs) for key in ("req_s", "cpu_us_per_req")
            }
            for kind, runs in kinds.items()
        }
        for name, kinds in rounds.items()
    }


def fmt(found: dict[str, float]) -> str:
    return f"{found['req_s']:8.0f} req/s  {found['cpu_us_per_req']:7.0f} µs CPU/req"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--warmup", type=float, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="between stream chunks")
    args = parser.parse_args()
    info = {"machine": machine(), "load_before": load_average(), "args": vars(args)}
    with tempfile.TemporaryDirectory() as tmp:
        servers = Servers(Path(tmp), "unused")
        try:
            results = _with_upstream(servers, args)
        finally:
            servers.stop()
    info["load_after"] = load_average()
    report(info, results)


def _with_upstream(servers: Servers, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    servers.ports["upstream"] = port
    servers.start(
        "upstream",
        [
            str(BENCH_DIR / "upstream_app.py"),
            "--port",
            str(port),
            "--chunks",
            str(args.chunks),
            "--delay-ms",
            str(args.delay_ms),
        ],
    )
    servers.wait("upstream", "/health", False)
    return asyncio.run(run(args, f"http://127.0.0.1:{port}/v1"))


def report(info: dict[str, Any], results: dict[str, Any]) -> None:
    print()
    for name, kinds in results.items():
        for kind, found in kinds.items():
            print(f"{name:20} {kind:6} {fmt(found)}")
    ours, theirs = results["gateway client"], results["aiohttp session"]
    for kind in ("plain", "stream"):
        ratio = ours[kind]["cpu_us_per_req"] / theirs[kind]["cpu_us_per_req"]
        print(f"{kind}: the gateway client costs {ratio:.2f}x a bare aiohttp session's CPU")
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / "upstream_clients.json"
    out.write_text(json.dumps({**info, "results": results}, indent=2))
    print(f"written {out.relative_to(ROOT)}; pid {os.getpid()}")


if __name__ == "__main__":
    main()
