"""The dashboard at size: 1,000 runs and 200 alerts in the store.

One run starts ``python -m host.cli serve --no-access-log`` as shipped (one worker, state
in a temp dir, SQLite), with two pipelines: ``quick`` (one code step) and ``gated`` (a
step, then an approval). It starts 1,000 ``quick`` runs and 200 ``gated`` ones through
the API (16 at a time) and waits until every one has finished or waits; with
``approval_wait_seconds = 1`` each waiting run is an ``approval_waiting`` alert: 200
alerts. Then, against that store:

1. data API latency: each of ``GET /dashboard/health``, ``/alerts``,
   ``/queue-timeline``, ``/widgets`` and the stream's JSON snapshot
   (``/dashboard/stream`` with ``Accept: application/json``), ``--requests`` times
   sequentially by one client; p50/p90/max of the client's latency;
2. first paint of ``/dashboard``: headless Chromium (Playwright, ``/usr/bin/chromium``,
   signed in once), ``--loads`` loads of the page: the browser's first contentful paint,
   and the time until the page shows the data of its first ``snapshot`` event (the runs
   table and the alerts filled), both from the navigation's start;
3. stream delivery: one SSE client on ``/dashboard/stream``: the time to its snapshot
   event, and for ``--notices`` ``POST /dashboard/actions {"action": "refresh"}`` the
   time from sending the POST to the ``change`` notice arriving on the stream.

Results go to ``bench/results/dashboard.json``. Run: ``.venv/bin/python
bench/dashboard.py`` (about 2 to 4 minutes; ``--quick`` for 100 runs and 20 alerts).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent))
from common import (  # noqa: E402
    RESULTS_DIR,
    Servers,
    load_average,
    machine,
    pct,
    print_machine,
    result_head,
    write_results,
)

TOKEN = "bench-dashboard-token-0123456789"
PIPELINES = """
from plugins.pipelines.definition import Pipeline, approval, code

QUICK = Pipeline(id="quick", steps=[code("one", lambda c: {"ok": True})])
GATED = Pipeline(
    id="gated",
    steps=[code("draft", lambda c: {"text": "draft"}), approval("review", "ship it?")],
)
"""
APIS = [
    "/dashboard/health",
    "/dashboard/alerts",
    "/dashboard/queue-timeline",
    "/dashboard/widgets",
    "/dashboard/stream",
]


def summary(values_ms: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(values_ms), 2),
        "p90_ms": round(pct(values_ms, 0.9), 2),
        "max_ms": round(max(values_ms), 2),
        "n": len(values_ms),
    }


async def seed(base: str, auth: dict[str, str], runs: int, gated: int) -> float:
    """Start the runs and wait until none is pending or running; seconds it took."""
    began = time.monotonic()
    limit = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=base, headers=auth, timeout=60) as client:

        async def start(pipeline: str) -> None:
            async with limit:
                response = await client.post(f"/pipelines/{pipeline}/start", json={})
                response.raise_for_status()

        await asyncio.gather(
            *(start("quick") for _ in range(runs)), *(start("gated") for _ in range(gated))
        )
        while True:
            health = (await client.get("/dashboard/health")).json()
            states = health["runs_by_state"]
            if states["pending"] == 0 and states["running"] == 0:
                break
            await asyncio.sleep(0.5)
        # Every waiting run has waited past approval_wait_seconds.
        while len((await client.get("/dashboard/alerts")).json()["alerts"]) < gated:
            await asyncio.sleep(0.2)
    return time.monotonic() - began


def api_latency(base: str, auth: dict[str, str], requests: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with httpx.Client(base_url=base, headers=auth, timeout=60) as client:
        for path in APIS:
            headers = {"Accept": "application/json"}
            client.get(path, headers=headers).raise_for_status()  # warm-up
            times = []
            for _ in range(requests):
                began = time.perf_counter()
                response = client.get(path, headers=headers)
                times.append((time.perf_counter() - began) * 1000)
                response.raise_for_status()
            out[path] = {**summary(times), "bytes": len(response.content)}
    return out


def first_paint(base: str, loads: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ]
    fcp: list[float] = []
    data: list[float] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{base}/ops/login?next=/dashboard")
        page.fill("#token", TOKEN)
        page.click("#token-form button[type=submit]")
        page.wait_for_url(f"{base}/dashboard")
        for _ in range(loads):
            page.goto(f"{base}/dashboard")
            page.wait_for_selector("#recent-runs tr[data-run]", timeout=60_000)
            page.wait_for_selector("#alerts li[data-alert]", timeout=60_000)
            shown = page.evaluate("performance.now()")
            paint = page.evaluate(
                "performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? null"
            )
            data.append(shown)
            if paint is not None:
                fcp.append(paint)
        alerts = page.eval_on_selector_all("#alerts li[data-alert]", "els => els.length")
        browser.close()
    return {
        "first_contentful_paint": summary(fcp) if fcp else None,
        "snapshot_shown": summary(data),
        "alerts_shown": alerts,
    }


def stream_delivery(base: str, auth: dict[str, str], notices: int) -> dict[str, Any]:
    received: dict[int, float] = {}
    snapshot_at: list[float] = []
    ready = threading.Event()
    counted = threading.Condition()
    began = time.perf_counter()

    def reader() -> None:
        with httpx.Client(timeout=None) as client:
            with client.stream("GET", f"{base}/dashboard/stream", headers=auth) as response:
                name = ""
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: "):
                        now = time.perf_counter()
                        if name == "snapshot" and not snapshot_at:
                            snapshot_at.append(now)
                            ready.set()
                        elif name == "change" and json.loads(line[6:])["topic"] == "refresh":
                            # Each POST also makes an "alerts" notice (its audit event).
                            with counted:
                                received[len(received)] = now
                                counted.notify_all()
                            if len(received) >= notices:
                                return

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    ready.wait(120)
    delays = []
    with httpx.Client(base_url=base, headers=auth, timeout=60) as client:
        for i in range(notices):
            sent = time.perf_counter()
            client.post("/dashboard/actions", json={"action": "refresh"}).raise_for_status()
            with counted:
                counted.wait_for(lambda i=i: i in received, timeout=30)
            delays.append((received[i] - sent) * 1000)
            time.sleep(0.02)
    thread.join(30)
    return {
        "snapshot_ms": round((snapshot_at[0] - began) * 1000, 1),
        "notice_delivery": summary(delays),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--alerts", type=int, default=200)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--loads", type=int, default=10)
    parser.add_argument("--notices", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="100 runs, 20 alerts")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.alerts, args.requests, args.loads, args.notices = 100, 20, 10, 3, 10
    info = machine(["playwright"])
    print_machine(info)
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        servers = Servers(Path(tmp), TOKEN)
        pipelines = Path(tmp) / "pipelines"
        pipelines.mkdir()
        (pipelines / "bench.py").write_text(PIPELINES)
        extra = f"""
[plugins.pipelines]
directory = "{pipelines}"
max_concurrent_runs = 8

[plugins.dashboard]
approval_wait_seconds = 1
"""
        config = servers.gateway_config("gateway", extra)
        servers.start(
            "gateway", ["-m", "host.cli", "serve", "--config", str(config), "--no-access-log"]
        )
        try:
            servers.wait("gateway", "/health", auth=False)
            base = servers.url("gateway", "")
            seeded = asyncio.run(seed(base, servers.auth, args.runs, args.alerts))
            print(f"seeded {args.runs} + {args.alerts} runs in {seeded:.1f} s")
            apis = api_latency(base, servers.auth, args.requests)
            for path, row in apis.items():
                print(
                    f"{path:28} p50 {row['p50_ms']:8.2f} ms  p90 {row['p90_ms']:8.2f} ms"
                    f"  {row['bytes']} bytes"
                )
            paint = first_paint(base, args.loads)
            print(f"first paint: {paint}")
            stream = stream_delivery(base, servers.auth, args.notices)
            print(f"stream: {stream}")
        finally:
            servers.stop()
    result = result_head("dashboard", info, load_before, load_average())
    result.update(
        runs=args.runs + args.alerts,
        alerts=args.alerts,
        seed_seconds=round(seeded, 1),
        data_apis=apis,
        first_paint=paint,
        stream=stream,
    )
    write_results(
        RESULTS_DIR / ("dashboard-quick.json" if args.quick else "dashboard.json"), result
    )


if __name__ == "__main__":
    main()
