"""Safety benchmark: what the safety plugin's rules cost, in one run.

1. Scanning throughput (in-process): the default rule set (``plugins/safety/rules.py``,
   compiled with RE2) under the default policy scans a 10 MB mixed text (English prose,
   Python code, JSON log lines, with a secret or an injection phrase every ~40 KB): as one
   text, and as 4 KB messages (a chat turn's size). MB/s, median of ``--rounds``; the
   matches found are checked against the ones planted.
2. The added latency of safety on a streamed chat completion: ``bench/upstream_app.py``
   streams ``--chunks`` words ``--delay-ms`` apart; two ``gateway serve`` processes as
   shipped proxy it, one with the safety plugin (the default) and one with
   ``[plugins.safety] enabled = false``. A raw-socket keep-alive client sends streamed
   requests one at a time, in alternating rounds (on, off, then off, on, ...), and times
   the first content delta (TTFT) and the last byte; p50 and p99 of each, and on - off.
   With safety on, streamed output is held back by ``stream_reach`` (256) characters, so
   TTFT grows by the time the upstream takes to send that much; the total time grows by
   the scans.

Results go to ``bench/results/safety.json``.
Run: ``.venv/bin/python bench/safety.py`` (about 1 minute).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent))

from common import (  # noqa: E402
    RESULTS_DIR,
    Servers,
    free_port,
    load_average,
    machine,
    pct,
    print_machine,
    serve_args,
    write_results,
)
from openai_proxy import Proxy, StreamClient, StreamResult  # noqa: E402

from plugins.safety.engine import RuleSet, decide  # noqa: E402
from plugins.safety.policy import Policy  # noqa: E402
from plugins.safety.rules import DEFAULT_RULES  # noqa: E402

RESULTS = RESULTS_DIR / "safety.json"
MB = 1_000_000
WORDS = (
    "the gateway routes requests to models and tools while a pipeline waits for approval "
    "before it sends the answer back to the client who asked about keys tokens and the "
    "previous instructions of the system including the weather in Oslo and a summary"
).split()
PLANTED = [
    "AKIA" + "IOSFODNN7EXAMPLE",
    "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    "sk-proj-" + "Ab3dEf6hIj9lMn2pQr5tUv8xYz1bCd4fGh7jKl0nOp3rSt6v",
    "ignore all previous instructions",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQ",
]


def mixed_text(size: int, seed: int = 7) -> tuple[str, int]:
    """About ``size`` characters of prose, code and JSON lines, and how many secrets or
    injection phrases were planted in it (one every ~40 KB)."""
    rng = random.Random(seed)
    parts: list[str] = []
    total, planted, next_plant = 0, 0, 40_000
    while total < size:
        kind = rng.random()
        if kind < 0.6:
            piece = " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 120))) + ".\n\n"
        elif kind < 0.8:
            name = rng.choice(WORDS)
            piece = (
                f"def {name}_{rng.randint(0, 999)}(ctx, value):\n"
                f"    result = ctx.call({name!r}, value * {rng.randint(2, 9)})\n"
                "    return {'ok': True, 'value': result}\n\n"
            )
        else:
            piece = (
                f'{{"ts": {rng.randint(10**12, 2 * 10**12)}, "level": "info", "route": '
                f'"/v1/chat/completions", "latency_ms": {rng.random() * 50:.2f}, '
                f'"principal": "{rng.choice(WORDS)}"}}\n'
            )
        if total >= next_plant:
            piece = f"note: {PLANTED[planted % len(PLANTED)]} end\n" + piece
            planted += 1
            next_plant += 40_000
        parts.append(piece)
        total += len(piece)
    return "".join(parts)[:size], planted


def scan_throughput(rounds: int, size: int) -> dict[str, Any]:
    text, planted = mixed_text(size)
    rules, policy = RuleSet(DEFAULT_RULES), Policy()
    whole: list[float] = []
    found = 0
    for _ in range(rounds):
        start = time.perf_counter()
        decision = decide(rules, policy, text)
        whole.append(time.perf_counter() - start)
        found = len(decision.matches)
    step = 4096
    messages = [text[i : i + step] for i in range(0, len(text), step)]
    chunked: list[float] = []
    for _ in range(rounds):
        start = time.perf_counter()
        for message in messages:
            decide(rules, policy, message)
        chunked.append(time.perf_counter() - start)
    mb = len(text.encode()) / MB
    return {
        "text_mb": round(mb, 2),
        "rules": len(rules.compiled),
        "planted": planted,
        "found": found,
        "whole_text_mb_per_s": round(mb / statistics.median(whole), 1),
        "messages_4kb_mb_per_s": round(mb / statistics.median(chunked), 1),
        "seconds_whole": [round(s, 3) for s in whole],
        "seconds_4kb": [round(s, 3) for s in chunked],
    }


def stream_latency(args: argparse.Namespace) -> dict[str, Any]:
    token = secrets.token_urlsafe(32)
    results: dict[str, list[StreamResult]] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory(prefix="gw-safety-bench-") as tmpdir:
        servers = Servers(Path(tmpdir), token)
        try:
            up = servers.ports["upstream"] = free_port()
            servers.start(
                "upstream",
                [
                    str(BENCH_DIR / "upstream_app.py"),
                    "--port",
                    str(up),
                    "--chunks",
                    str(args.chunks),
                    "--delay-ms",
                    str(args.delay_ms),
                ],
            )
            models = (
                f'[models.bench]\nprovider = "openai"\nbase_url = "http://127.0.0.1:{up}/v1"\n'
                'upstream_model = "bench-model"\n'
            )
            servers.start("on", serve_args(servers.gateway_config("on", models)))
            off = models + "\n[plugins.safety]\nenabled = false\n"
            servers.start("off", serve_args(servers.gateway_config("off", off)))
            for name in ("upstream", "on", "off"):
                servers.wait(name, "/health", False)
            proxies = {
                name: Proxy(name, name, name, "bench", headers=dict(servers.auth))
                for name in ("on", "off")
            }
            for proxy in proxies.values():
                proxy.url = servers.url(proxy.server, "/v1/chat/completions")

            async def run() -> None:
                clients = {name: StreamClient(p) for name, p in proxies.items()}
                try:
                    for client in clients.values():  # warm-up
                        for _ in range(5):
                            await client.once()
                    order = ["on", "off"]
                    for _ in range(args.rounds):
                        for name in order:
                            for _ in range(args.streams):
                                results[name].append(await clients[name].once())
                        order.reverse()
                finally:
                    for client in clients.values():
                        await client.close()

            asyncio.run(run())
        finally:
            servers.stop()
    out: dict[str, Any] = {}
    for name, rs in results.items():
        good = [r for r in rs if r.ok]
        if len(good) < len(rs):
            raise SystemExit(f"{name}: {len(rs) - len(good)} streams failed: {rs[0].error}")
        ttft = [r.ttft_s * 1000 for r in good]
        total = [r.total_s * 1000 for r in good]
        out[name] = {
            "streams": len(good),
            "ttft_p50_ms": round(pct(ttft, 0.5), 2),
            "ttft_p99_ms": round(pct(ttft, 0.99), 2),
            "total_p50_ms": round(pct(total, 0.5), 2),
            "total_p99_ms": round(pct(total, 0.99), 2),
            "content_chunks": good[0].content_chunks,
        }
    out["added_ttft_p50_ms"] = round(out["on"]["ttft_p50_ms"] - out["off"]["ttft_p50_ms"], 2)
    out["added_total_p50_ms"] = round(out["on"]["total_p50_ms"] - out["off"]["total_p50_ms"], 2)
    out["added_total_p99_ms"] = round(out["on"]["total_p99_ms"] - out["off"]["total_p99_ms"], 2)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size-mb", type=float, default=10.0, help="the mixed text's size")
    parser.add_argument("--streams", type=int, default=40, help="streams per target per round")
    parser.add_argument("--chunks", type=int, default=100, help="words per upstream stream")
    parser.add_argument("--delay-ms", type=float, default=2.0, help="between upstream chunks")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    info = machine(extra_packages=["google-re2"])
    print_machine(info)
    load_before = load_average()
    scan = scan_throughput(args.rounds, int(args.size_mb * MB))
    if scan["found"] < scan["planted"]:
        raise SystemExit(f"the scan found {scan['found']} of {scan['planted']} planted matches")
    print(
        f"scan: {scan['text_mb']} MB, {scan['rules']} rules: "
        f"{scan['whole_text_mb_per_s']} MB/s as one text, "
        f"{scan['messages_4kb_mb_per_s']} MB/s as 4 KB messages "
        f"({scan['found']} matches, {scan['planted']} planted)"
    )
    stream = stream_latency(args)
    for name in ("on", "off"):
        s = stream[name]
        print(
            f"stream safety {name:3}: TTFT p50 {s['ttft_p50_ms']} ms p99 {s['ttft_p99_ms']} ms; "
            f"total p50 {s['total_p50_ms']} ms p99 {s['total_p99_ms']} ms "
            f"({s['streams']} streams, {s['content_chunks']} content chunks)"
        )
    print(
        f"added by safety: TTFT p50 {stream['added_ttft_p50_ms']} ms, total p50 "
        f"{stream['added_total_p50_ms']} ms, total p99 {stream['added_total_p99_ms']} ms"
    )
    load_after = load_average()
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    write_results(
        args.output,
        {
            "machine": info,
            "load_average": {"before": load_before, "after": load_after},
            "settings": vars(args) | {"output": str(args.output)},
            "scan": scan,
            "stream": stream,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
