"""The coding-agent bridge: progress events per second into 50 live SSE subscribers, and
the delay from ``POST .../progress`` to delivery.

One run starts ``python -m host.cli serve --no-access-log`` as shipped (one worker,
SQLite in a temp dir, a token whose rate limit is never reached), opens one bridge
session, and connects ``--subscribers`` (50) clients to its
``GET /gateway/external-coding-agent/sessions/{id}/stream`` (live SSE). Each round then
POSTs ``--events`` progress events from ``--posters`` concurrent clients (keep-alive
connections), and records when each subscriber receives each event (by its ``id:``, the
seq the POST answered with). Reported per round, then as medians:

* posted events/s: events accepted (201) per second of the posting window;
* delivered events/s: events received by all subscribers together per second, from the
  first POST to the last delivery;
* p50/p99 delay from the moment a POST was sent to each subscriber's receipt of that
  event (every subscriber of every event);
* the gateway's CPU time per posted event.

Clients are asyncio streams on raw sockets in this one process (a timestamp on receipt,
the ``id:`` line picked out, no other parsing). Results go to ``bench/results/bridge.json``.

Run: ``.venv/bin/python bench/bridge.py`` (about a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    Servers,
    load_average,
    machine,
    pct,
    print_machine,
    request,
    result_head,
    serve_args,
    write_results,
)

BASE = "/gateway/external-coding-agent"


class Subscriber:
    def __init__(self) -> None:
        self.received: dict[int, float] = {}
        self.ready = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def run(self, port: int, path: str, token: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        await writer.drain()
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                if line.startswith(b"id: "):
                    self.received[int(line[4:])] = time.perf_counter()
                elif line.startswith(b"retry:"):
                    self.ready.set()
        finally:
            writer.close()


class Poster:
    """One keep-alive connection that POSTs progress events and reads the answers."""

    def __init__(self, port: int, path: str, token: str) -> None:
        self.port, self.path, self.token = port, path, token

    async def post(self, count: int, sent: dict[int, float], errors: list[int]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            for n in range(count):
                body = json.dumps({"message": f"step {n}", "kind": "bench"}).encode()
                head = (
                    f"POST {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Authorization: Bearer {self.token}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                ).encode()
                start = time.perf_counter()
                writer.write(head + body)
                await writer.drain()
                status = int((await reader.readline()).split()[1])
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                answer = json.loads(await reader.readexactly(length))
                if status != 201:
                    errors.append(status)
                    continue
                sent[int(answer["seq"])] = start
        finally:
            writer.close()


async def one_round(
    port: int,
    session_path: str,
    token: str,
    subscribers: list[Subscriber],
    events: int,
    posters: int,
) -> dict[str, Any]:
    sent: dict[int, float] = {}
    errors: list[int] = []
    per = events // posters
    began = time.perf_counter()
    await asyncio.gather(
        *(
            Poster(port, f"{session_path}/progress", token).post(per, sent, errors)
            for _ in range(posters)
        )
    )
    posted_at = time.perf_counter()
    wanted = set(sent)
    deadline = time.monotonic() + 60
    while any(not wanted <= s.received.keys() for s in subscribers):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.01)
    delays = [
        (s.received[seq] - start) * 1000
        for s in subscribers
        for seq, start in sent.items()
        if seq in s.received
    ]
    last = max(
        (s.received[seq] for s in subscribers for seq in sent if seq in s.received),
        default=posted_at,
    )
    missing = len(sent) * len(subscribers) - len(delays)
    return {
        "posted": len(sent),
        "errors": len(errors),
        "missing_deliveries": missing,
        "posted_per_s": round(len(sent) / (posted_at - began), 1),
        "delivered_per_s": round(len(delays) / (last - began), 1),
        "p50_ms": round(pct(delays, 0.5), 2),
        "p99_ms": round(pct(delays, 0.99), 2),
    }


async def measure(args: argparse.Namespace, servers: Servers, token: str) -> list[dict[str, Any]]:
    port = servers.ports["gateway"]
    status, body = request(
        "POST",
        servers.url("gateway", f"{BASE}/sessions"),
        {**servers.auth, "Content-Type": "application/json"},
        json.dumps({"workspace": "/bench"}),
    )
    assert status == 201, body
    session_path = f"{BASE}/sessions/{json.loads(body)['session_id']}"
    subscribers = [Subscriber() for _ in range(args.subscribers)]
    for sub in subscribers:
        sub.task = asyncio.create_task(sub.run(port, f"{session_path}/stream", token))
    await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in subscribers)), 30)
    # Warm-up: one small round, not reported.
    await one_round(port, session_path, token, subscribers, args.posters * 10, args.posters)
    rounds = []
    for n in range(args.rounds):
        cpu_before = servers.cpu("gateway")
        result = await one_round(port, session_path, token, subscribers, args.events, args.posters)
        cpu_after = servers.cpu("gateway")
        if cpu_before is not None and cpu_after is not None and result["posted"]:
            result["cpu_us_per_event"] = round((cpu_after - cpu_before) / result["posted"] * 1e6)
        print(f"round {n + 1}: {result}")
        rounds.append(result)
    for sub in subscribers:
        assert sub.task is not None
        sub.task.cancel()
    await asyncio.gather(*(s.task for s in subscribers if s.task), return_exceptions=True)
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=50)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--posters", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    info = machine()
    print_machine(info)
    load_before = load_average()
    token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="bench-bridge-") as tmp:
        servers = Servers(Path(tmp), token)
        extra = "[events]\nmax_streams_per_principal = 1000\n"
        config = servers.gateway_config("gateway", extra)
        servers.start("gateway", serve_args(config))
        try:
            servers.wait("gateway", "/health", auth=False)
            rounds = asyncio.run(measure(args, servers, token))
        finally:
            servers.stop()
    summary = {
        key: statistics.median(r[key] for r in rounds)
        for key in ("posted_per_s", "delivered_per_s", "p50_ms", "p99_ms")
    }
    summary["cpu_us_per_event"] = statistics.median(r.get("cpu_us_per_event", 0) for r in rounds)
    summary["missing_deliveries"] = sum(r["missing_deliveries"] for r in rounds)
    summary["errors"] = sum(r["errors"] for r in rounds)
    print(f"median: {summary}")
    result = result_head("bridge", info, load_before, load_average())
    result.update({"settings": vars(args), "summary": summary, "rounds": rounds})
    write_results(Path(__file__).with_name("results") / "bridge.json", result)


if __name__ == "__main__":
    main()
