"""What each part of a model call costs, measured in one process without a server.

``openai_proxy.py`` measures the gateway as shipped, through Hypercorn and wrk; its
rounds scatter by ±5-10 % on this machine, too much to see a part that costs 20 µs. This
script drives the ASGI apps directly (an ASGI ``http`` scope and one request body per
call, no sockets on the client side; the upstream is ``upstream_app.py`` on loopback, a
separate process) and reads this process's CPU time around each round:

* ``floor``: ``bare_proxy_app.py`` (forward and relay, nothing else);
* ``floor + checks``: the same with its token lookup, body validation and re-encoding;
* ``gateway``: the gateway as the proxy benchmark runs it (access list, budgets, two
  deployments and a fallback: ``common.teams_models``), every built-in plugin loaded;
* ``gateway`` with one part taken away: ``- teams`` (one model, no access list or
  budgets), ``- safety``, ``- audit``, ``- sessions``, ``- dashboard`` (those plugins
  disabled), and ``- all five``.

Every variant is built and warmed first, then the rounds alternate (A B C, C B A, ...)
so drift hits all alike; the table gives the median CPU µs per call and its difference
from the gateway. It is what the app costs without Hypercorn, h11 and the client side
(a call through the server costs ~100 µs more in both the floor and the gateway).

Run: ``.venv/bin/python bench/openai_inprocess.py [--calls 1000 --rounds 6]`` (~1 min).
Results go to ``bench/results/openai_inprocess.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent))

from bare_proxy_app import make_app  # noqa: E402
from common import (  # noqa: E402
    RESULTS_DIR,
    TEAMS_TOKEN,
    TOKEN_ENV,
    free_port,
    gateway_toml,
    load_average,
    machine,
    one_model,
    print_machine,
    result_head,
    teams_models,
    write_results,
)
from quart import Quart  # noqa: E402

from host.app import create_app  # noqa: E402
from host.settings import load_settings  # noqa: E402

RESULTS = RESULTS_DIR / "openai_inprocess.json"
BODY = json.dumps(
    {"model": "bench", "messages": [{"role": "user", "content": "Say something short."}]}
).encode()
FEATURE_PLUGINS = ("safety", "audit", "sessions", "dashboard")
App = Quart  # driven as an ASGI app: app(scope, receive, send)


def variants(api_base: str, token: str, tmp: Path) -> dict[str, App]:
    """Label -> ASGI app, in the order the table shows them."""

    def gateway(name: str, teams: bool = True, disabled: tuple[str, ...] = ()) -> App:
        text = gateway_toml(tmp / f"{name}-state", free_port(), TEAMS_TOKEN if teams else "")
        text += "\n" + (teams_models(api_base) if teams else one_model(api_base))
        text += "".join(f"\n[plugins.{p}]\nenabled = false\n" for p in disabled)
        path = tmp / f"{name}.toml"
        path.write_text(text, encoding="utf-8")
        return create_app(load_settings(str(path)))

    apps: dict[str, App] = {
        "gateway": gateway("gateway"),
        "gateway - teams": gateway("no-teams", teams=False),
    }
    for plugin in FEATURE_PLUGINS:
        apps[f"gateway - {plugin}"] = gateway(f"no-{plugin}", disabled=(plugin,))
    apps["gateway - all five"] = gateway("stripped", teams=False, disabled=FEATURE_PLUGINS)
    apps["floor + checks"] = make_app(api_base, token)
    apps["floor"] = make_app(api_base)
    return apps


def scope(token: str) -> dict[str, Any]:
    path = "/v1/chat/completions"
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"authorization", f"Bearer {token}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(BODY)).encode()),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8787),
        "extensions": {},
    }


async def call(app: App, token: str) -> None:
    """One non-streamed chat completion through ``app``; anything but 200 stops the run."""
    sent: list[dict[str, Any]] = []
    pending = [{"type": "http.request", "body": BODY, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop()
        await asyncio.Event().wait()  # the client never goes away
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope(token), receive, send)
    if not sent or sent[0].get("status") != 200:
        raise SystemExit(f"the call failed: {sent[:2]!r}")


class Lifespan:
    """An app's lifespan: start-up (store, plugins, upstream pools) and shut-down."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.inbox.put({"type": "lifespan.startup"})
        lifespan = {"type": "lifespan", "asgi": {"version": "3.0"}}
        self.task = asyncio.create_task(self.app(lifespan, self.inbox.get, self.outbox.put))
        message = await self.outbox.get()
        if message["type"] != "lifespan.startup.complete":
            raise SystemExit(f"start-up failed: {message!r}")

    async def stop(self) -> None:
        if self.task is not None:
            await self.inbox.put({"type": "lifespan.shutdown"})
            await self.outbox.get()
            await self.task


async def measure(
    apps: dict[str, App], token: str, calls: int, rounds: int
) -> dict[str, list[float]]:
    lifespans = [Lifespan(app) for app in apps.values()]
    for lifespan in lifespans:
        await lifespan.start()
    try:
        for app in apps.values():
            for _ in range(300):
                await call(app, token)
        gc.collect()
        gc.freeze()  # as `gateway serve` does once it is up
        per_call: dict[str, list[float]] = {label: [] for label in apps}
        labels = list(apps)
        for i in range(rounds):
            for label in labels if i % 2 == 0 else labels[::-1]:
                app = apps[label]
                started = time.process_time()
                for _ in range(calls):
                    await call(app, token)
                per_call[label].append((time.process_time() - started) * 1e6 / calls)
            print(
                f"  round {i + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in per_call.items()),
                flush=True,
            )
        return per_call
    finally:
        for lifespan in lifespans:
            await lifespan.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="calls per variant and round")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    info = machine(["aiohttp", "pydantic"])
    print_machine(info)
    load_before = load_average()
    token = secrets.token_hex(16)
    os.environ[TOKEN_ENV] = token
    port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(BENCH_DIR / "upstream_app.py"), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(
            ["curl", "-sf", f"http://127.0.0.1:{port}/health"], capture_output=True
        ).returncode:
            if time.monotonic() > deadline or upstream.poll() is not None:
                raise SystemExit("the upstream did not start")
            time.sleep(0.1)
        with tempfile.TemporaryDirectory(prefix="gw-inprocess-bench-") as tmp:
            apps = variants(f"http://127.0.0.1:{port}/v1", token, Path(tmp))
            per_call = asyncio.run(measure(apps, token, args.calls, args.rounds))
    finally:
        upstream.terminate()
        upstream.wait()
    medians = {label: statistics.median(values) for label, values in per_call.items()}
    base = medians["gateway"]
    print(f"\nCPU µs per call, median of {args.rounds} rounds of {args.calls} calls")
    for label, value in medians.items():
        print(f"{label:<22} {value:6.0f}  ({value - base:+5.0f} against the gateway)")
    floor, checks = medians["floor"], medians["floor + checks"]
    print(
        f"\nfloor + checks keeps {floor / checks:.1%} of the floor by CPU; the gateway "
        f"{floor / base:.1%} (it spends {base - checks:+.0f} µs over floor + checks)"
    )
    write_results(
        RESULTS,
        {
            **result_head("openai_inprocess", info, load_before, load_average()),
            "settings": {"calls": args.calls, "rounds": args.rounds},
            "cpu_us_per_call": {k: [round(x, 1) for x in v] for k, v in per_call.items()},
            "median_cpu_us_per_call": {k: round(v, 1) for k, v in medians.items()},
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
