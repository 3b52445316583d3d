"""Host overhead: the gateway's authenticated light route against a bare Quart route.

One run starts these servers on free loopback ports, each one Hypercorn worker with no
access log:

* ``bare``: ``bench/bare_app.py``, a bare Quart app with one JSON route;
* ``gw``: ``bench/gateway_app.py``, the gateway (all built-in and installed plugins) plus
  a benchmark plugin whose protected ``GET /bench/ping`` returns the same dict, so auth,
  rate limiting, metrics and error handling are all in the path;
* informational rows (skip with ``--no-info``): ``bare_app.py --quart-schema``,
  ``python -m host.cli serve`` as shipped for ``GET /gateway/status`` (authenticated,
  reads the store) and ``GET /health`` (public), and ``gw`` again with its rate-limit
  buckets in the store (``auth.rate_limit_state = "store"``, as when several processes
  share it: one upsert per request), on SQLite or on ``--store-url`` (PostgreSQL);

Load comes from ``wrk`` (1 thread, 16 keep-alive connections) when installed, else from
a small asyncio keep-alive client in this process (slower than wrk, so it understates
the difference). After a warm-up the targets are measured in alternating rounds, so
drift hits all of them alike, and the medians are reported. Results go to
``bench/results/host_overhead.json``.

Run: ``.venv/bin/python bench/host_overhead.py`` (about 90 s with the defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from common import (  # noqa: E402
    RESULTS_DIR,
    WRK_LUA,
    Sample,
    Servers,
    Target,
    expect_status,
    free_port,
    load_average,
    machine,
    print_machine,
    result_head,
    run_wrk,
    serve_args,
    summarize,
    with_cpu,
    write_results,
)
from payload import ROUTE  # noqa: E402

RESULTS = RESULTS_DIR / "host_overhead.json"
TARGET_RATIO = 0.85


# -- servers -----------------------------------------------------------------------------


def start_servers(
    servers: Servers, profile: Path | None, info: bool, store_url: str | None = None
) -> list[Target]:
    """Start every server the run needs and return the targets, main pair first."""
    port = free_port()
    servers.ports["bare"] = port
    servers.start("bare", [str(BENCH_DIR / "bare_app.py"), "--bind", f"127.0.0.1:{port}"])
    gateway = [str(BENCH_DIR / "gateway_app.py"), "--config", str(servers.gateway_config("gw"))]
    servers.start("gw", gateway + (["--profile", str(profile)] if profile else []))
    targets = [
        Target("bare Quart  GET /bench/ping", "bare", ROUTE, note="bench/bare_app.py"),
        Target(
            "gateway  GET /bench/ping (token)",
            "gw",
            ROUTE,
            auth=True,
            note="bench/gateway_app.py: protected plugin route, full host path",
        ),
    ]
    if info:
        port = free_port()
        servers.ports["bare_schema"] = port
        servers.start(
            "bare_schema",
            [str(BENCH_DIR / "bare_app.py"), "--bind", f"127.0.0.1:{port}", "--quart-schema"],
        )
        config = servers.gateway_config("serve")
        servers.start("serve", serve_args(config))
        shared = {"GATEWAY_AUTH__RATE_LIMIT_STATE": "store"}
        if store_url:
            shared["GATEWAY_STORAGE__URL"] = store_url
        config = servers.gateway_config("gw_store")
        argv = [sys.executable, str(BENCH_DIR / "gateway_app.py"), "--config", str(config)]
        servers.start_exe("gw_store", argv, env=shared)
        targets += [
            Target(
                "bare Quart + QuartSchema",
                "bare_schema",
                ROUTE,
                main=False,
                note="bench/bare_app.py --quart-schema: the share quart-schema takes",
            ),
            Target(
                "gateway serve  GET /gateway/status",
                "serve",
                "/gateway/status",
                auth=True,
                main=False,
                note="python -m host.cli serve: authenticated, reads the store",
            ),
            Target(
                "gateway serve  GET /health (public)",
                "serve",
                "/health",
                main=False,
                note="python -m host.cli serve: public, not rate limited",
            ),
            Target(
                "gateway  ping, buckets in store",
                "gw_store",
                ROUTE,
                auth=True,
                main=False,
                note="bench/gateway_app.py with auth.rate_limit_state = store"
                + (" on --store-url" if store_url else " (SQLite)"),
            ),
        ]
    for t in targets:
        t.url = servers.url(t.server, t.path)
        t.headers = dict(servers.auth) if t.auth else {}
        servers.wait(t.server, t.path, t.auth)
    return targets


def config_differences() -> list[str]:
    """Hypercorn settings in which bare_app.py differs from the gateway's (bind aside)."""
    from bare_app import bare_config

    from host.serve import hypercorn_config
    from host.settings import build_settings

    bind = "127.0.0.1:1"
    settings = build_settings({"server": {"bind": bind, "access_log": False, "workers": 1}})
    ours, theirs = vars(bare_config(bind)), vars(hypercorn_config(settings))
    return sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))


def body_size(url: str, headers: dict[str, str]) -> int:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
        return len(r.read())


# -- load generators ---------------------------------------------------------------------


async def _py_load(target: Target, seconds: float, connections: int) -> Sample:
    """Keep-alive HTTP/1.1 GETs over raw sockets: cheaper per request than httpx."""
    from urllib.parse import urlsplit

    parts = urlsplit(target.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    lines = [f"GET {parts.path or '/'} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{k}: {v}" for k, v in target.headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.perf_counter() < stop_at:
                start = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                if match:
                    await reader.readexactly(int(match.group(1)))
                latencies.append(time.perf_counter() - start)
                if status >= 400:
                    errors += 1
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - began
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return Sample(
        rps=len(latencies) / elapsed,
        p50_ms=pct(0.50),
        p90_ms=pct(0.90),
        p99_ms=pct(0.99),
        requests=len(latencies),
        errors=errors,
    )


def run_python(target: Target, seconds: float, connections: int) -> Sample:
    return asyncio.run(_py_load(target, seconds, connections))


# -- the run -----------------------------------------------------------------------------


def table(rows: dict[str, dict[str, Any]], targets: list[Target]) -> str:
    bare = rows[targets[0].name]
    head = (
        f"{'target':<38} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'CPU us/req':>10} "
        f"{'req/s vs bare':>13}"
    )
    out = [head, "-" * len(head)]
    for t in targets:
        r = rows[t.name]
        label = t.name if t.main else f"({t.name})"
        cpu = f"{r['cpu_us_per_request']:.0f}" if r["cpu_us_per_request"] is not None else "-"
        out.append(
            f"{label:<38} {r['rps']:>7.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {cpu:>10} "
            f"{r['rps'] / bare['rps']:>13.1%}"
        )
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="length of one measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds per target")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--client", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument(
        "--no-info", action="store_true", help="only the bare/gateway pair, no informational rows"
    )
    parser.add_argument("--profile", type=Path, help="cProfile the gateway into this file")
    parser.add_argument(
        "--store-url",
        help="the store of the buckets-in-store row (e.g. postgresql+asyncpg://...); "
        "default: SQLite",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    client = args.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "python"
    if client == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")

    info = machine()
    print_machine(info)
    print(
        f"client: {client}, {args.connections} connections, {args.rounds} rounds x "
        f"{args.seconds} s per target after {args.warmup} s warm-up; 1 Hypercorn worker each"
    )
    differences = config_differences()
    if differences:
        print(f"warning: bare_app.py's Hypercorn config differs from the gateway's: {differences}")
    load_before = load_average()

    token = secrets.token_urlsafe(32)
    with tempfile.TemporaryDirectory(prefix="gw-bench-") as tmpdir:
        tmp = Path(tmpdir)
        script = tmp / "report.lua"
        script.write_text(WRK_LUA, encoding="utf-8")
        servers = Servers(tmp, token)
        profile = args.profile.resolve() if args.profile else None
        try:
            targets = start_servers(servers, profile, not args.no_info, args.store_url)
            gateway = targets[1]
            expect_status(gateway.url, {}, 401)  # the route really is behind auth
            sizes = {t.name: body_size(t.url, t.headers) for t in targets}

            def measure(target: Target, seconds: int) -> Sample:
                if client == "wrk":
                    return with_cpu(
                        servers,
                        target.server,
                        lambda: run_wrk(target, seconds, args.connections, script),
                    )
                return with_cpu(
                    servers, target.server, lambda: run_python(target, seconds, args.connections)
                )

            for target in targets:
                if args.warmup > 0:
                    measure(target, args.warmup)
            samples: dict[str, list[Sample]] = {t.name: [] for t in targets}
            for i in range(args.rounds):
                # Alternate the order every round (A B C ..., then ... C B A) so drift in
                # the machine's load hits every target alike.
                order = targets if i % 2 == 0 else list(reversed(targets))
                for target in order:
                    sample = measure(target, args.seconds)
                    samples[target.name].append(sample)
                    print(
                        f"  round {i + 1}  {target.name:<36} {sample.rps:>6.0f} req/s  "
                        f"p50 {sample.p50_ms:5.2f} ms  p99 {sample.p99_ms:6.2f} ms  "
                        f"{sample.cpu_us_per_request or 0:4.0f} us CPU/req",
                        flush=True,
                    )
        finally:
            servers.stop()
        if args.profile:
            print(f"gateway profile written to {args.profile}")
    load_after = load_average()

    rows = {name: summarize(s) for name, s in samples.items()}
    bare, gw = rows[targets[0].name], rows[targets[1].name]
    ratio = gw["rps"] / bare["rps"]
    cpu_ratio = (
        bare["cpu_us_per_request"] / gw["cpu_us_per_request"]
        if bare["cpu_us_per_request"] and gw["cpu_us_per_request"]
        else None
    )
    errors = sum(r["errors"] for r in rows.values())
    print()
    print(table(rows, targets))
    print()
    verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
    print(
        f"gateway/bare throughput: {ratio:.1%} (host overhead {1 - ratio:.1%}; "
        f"target >= {TARGET_RATIO:.0%}: {verdict})"
    )
    if cpu_ratio is not None:
        print(f"bare/gateway server CPU per request: {cpu_ratio:.1%}")
    print(
        "load average (1 min) before/after: "
        f"{load_before[0]:.2f} / {load_after[0]:.2f} on {info['cores']} cores"
    )
    if errors:
        print(f"warning: {errors} failed or non-2xx responses during the run")

    result = {
        **result_head("host_overhead", info, load_before, load_after),
        "client": client,
        "connections": args.connections,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "warmup_seconds": args.warmup,
        "workers": 1,
        "targets": [
            {
                "name": t.name,
                "main": t.main,
                "path": t.path,
                "authenticated": t.auth,
                "note": t.note,
                "body_bytes": sizes[t.name],
                **rows[t.name],
            }
            for t in targets
        ],
        "ratio_gateway_over_bare": round(ratio, 4),
        "host_overhead": round(1 - ratio, 4),
        "cpu_ratio_bare_over_gateway": round(cpu_ratio, 4) if cpu_ratio is not None else None,
        "target_ratio": TARGET_RATIO,
        "target_met": ratio >= TARGET_RATIO,
        "errors": errors,
    }
    write_results(args.output, result)
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
