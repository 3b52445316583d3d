"""Operations benchmark, in one run:

1. ``GET /gateway/jobs`` latency with 10,000 finished and 100 running jobs (pipeline
   runs) in the store: the first page as an operator (every owner's jobs), the first page
   as the owner of 1 % of them (its own only), ``?status=active`` and a page deep in the
   list (by cursor). The runs are written straight into the pipelines tables (storing
   10,100 through the engine would take minutes) and this process's worker claims none
   (``max_concurrent_runs = 0``), so the running ones stay running.
2. Tool-call overhead: ``host.api.call_tool`` (registry lookup, admission hook, argument
   check, approval hook, timing, statistics observer) against calling the same async
   function directly, without and with one safety scanner registered, and with an
   approval policy of ten rules that does not hold the call (``[tools.approval]``: the
   cost of the policy check on every call).

Requests go through the Quart test client in this process (the full host path: auth,
gates, rate limits, metrics, validation) but not through a socket: the figures are the
gateway's own time, not the network's.

    .venv/bin/python bench/operations.py [--finished 10000] [--running 100]
        [--requests 200] [--calls 20000] [--store-url postgresql+asyncpg://...]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))
sys.path.insert(0, str(BENCH_DIR))
from common import (  # noqa: E402
    RESULTS_DIR,
    load_average,
    machine,
    print_machine,
    result_head,
    write_results,
)

from host.api import Tool, Verdict, call_tool, context, hookimpl  # noqa: E402
from host.app import create_app  # noqa: E402
from host.settings import build_settings  # noqa: E402

ADMIN = "bench-admin-token-0123456789"
OWNER = "bench-owner-token-0123456789"


async def add(a: int, b: int = 0) -> int:
    return a + b


class PassScanner:
    async def scan(self, text: str, *, direction: str, context: dict[str, Any]) -> Verdict:
        return Verdict()


class BenchTools:
    @hookimpl
    def gateway_register_tools(self, register: Any) -> None:
        register(
            "bench_add",
            Tool(
                "Add two integers.",
                {
                    "type": "object",
                    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                    "required": ["a"],
                    "additionalProperties": False,
                },
                add,
            ),
        )


class BenchScanner:
    @hookimpl
    def gateway_register_safety_scanners(self, register: Any) -> None:
        register("pass", PassScanner())


# Ten rules, none holding ``bench_add {"a": i >= 0, "b": 1}``: eight for other tools, one
# on an argument and one on the whole arguments (two RE2 searches per call).
APPROVAL_POLICY = {
    "always": ["other_*"],
    "rules": [
        *({"tool": f"other_{n}_*", "arg": "path", "pattern": "^/etc/"} for n in range(8)),
        {"tool": "bench_*", "arg": "a", "pattern": "^-"},
        {"tool": "bench_*", "pattern": "secret"},
    ],
}


def settings_for(state: Path, store_url: str | None, approval: Any = None) -> Any:
    data: dict[str, Any] = {
        "state_dir": str(state),
        "auth": {
            "mode": "token",
            "tokens": {
                "admin": {"token": ADMIN, "gates": ["*"], "rate_limit": {"per_minute": 10**6}},
                "owner": {"token": OWNER, "gates": [], "rate_limit": {"per_minute": 10**6}},
            },
        },
        "plugins": {"pipelines": {"max_concurrent_runs": 0}},
        "retention": {"enabled": False},
    }
    if store_url:
        data["storage"] = {"url": store_url}
    if approval is not None:
        data["tools"] = {"approval": approval}
    return build_settings(data)


async def seed(app: Any, finished: int, running: int) -> None:
    from plugins.pipelines.tables import runs  # the bench writes the rows itself

    store = context(app).store
    now = int(time.time() * 1000)
    rows = []
    for i in range(finished + running):
        done = i < finished
        rows.append(
            {
                "id": uuid.uuid4().hex,
                "pipeline_id": "echo-chat",
                "pipeline_version": "1",
                "definition_key": "echo-chat@1",
                "status": "completed" if done else "running",
                "input": {"i": i},
                "output": {"ok": True} if done else None,
                "cursor": 1 if done else 0,
                "results": {},
                "resolutions": {},
                "trigger": {"type": "api"},
                "created_by": "owner" if i % 100 == 0 else "admin",
                "owner": "token:owner" if i % 100 == 0 else "token:admin",
                "created_ms": now - (finished + running - i) * 1000,
                "started_ms": now - (finished + running - i) * 1000,
                "updated_ms": now,
                "finished_ms": now if done else None,
                "claims": 1,
                "lease_owner": None if done else "bench-elsewhere",
                "lease_expires_ms": None if done else now + 3_600_000,
            }
        )
    for start in range(0, len(rows), 1000):
        async with store.write() as conn:
            await conn.execute(runs.insert(), rows[start : start + 1000])


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered), 3),
        "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1], 3),
        "mean_ms": round(statistics.fmean(ordered), 3),
    }


async def jobs_latency(client: Any, requests: int, depth: int) -> dict[str, Any]:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    owner = {"Authorization": f"Bearer {OWNER}"}
    first = await (await client.get("/gateway/jobs?limit=50", headers=admin)).get_json()
    cursor = first["next_cursor"]
    for _ in range(depth - 1):  # a page deep in the list: 2,000 jobs in for 10,000
        page = await (
            await client.get(f"/gateway/jobs?limit=50&cursor={cursor}", headers=admin)
        ).get_json()
        cursor = page["next_cursor"]
    cases = {
        "operator, first page (50)": ("/gateway/jobs?limit=50", admin),
        "owner of 1 %, first page (50)": ("/gateway/jobs?limit=50", owner),
        "operator, ?status=active (100 running)": ("/gateway/jobs?status=active&limit=100", admin),
        f"operator, page {depth + 1} by cursor (50)": (
            f"/gateway/jobs?limit=50&cursor={cursor}",
            admin,
        ),
    }
    found: dict[str, Any] = {}
    for name, (path, headers) in cases.items():
        check = await client.get(path, headers=headers)
        assert check.status_code == 200, await check.get_data(as_text=True)
        count = len((await check.get_json())["jobs"])
        samples = []
        for _ in range(requests):
            started = time.perf_counter()
            response = await client.get(path, headers=headers)
            await response.get_data()
            samples.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200
        found[name] = {"jobs_returned": count, **summary(samples)}
        print(
            f"  {name:42} {count:4} jobs  p50 {found[name]['p50_ms']:7.2f} ms"
            f"  p95 {found[name]['p95_ms']:7.2f} ms"
        )
    return found


async def tool_overhead(
    plain: Any, scanned: Any, policed: Any, calls: int, rounds: int = 7
) -> dict[str, Any]:
    """Best µs per call of each way, measured in alternating rounds (the machine is
    shared: a burst of other work hits every way alike)."""
    caller = {"kind": "bench"}

    def through(app: Any) -> Any:
        ctx = context(app)

        async def call(i: int) -> None:
            await call_tool(ctx, "bench_add", {"a": i, "b": 1}, caller=caller)

        return call

    async def direct(i: int) -> None:
        await add(a=i, b=1)

    ways = {
        "direct": direct,
        "no scanner": through(plain),
        "one safety scanner": through(scanned),
        "approval policy, 10 rules": through(policed),
    }
    best = dict.fromkeys(ways, float("inf"))
    for _ in range(rounds):
        for name, call in ways.items():
            started = time.perf_counter()
            for i in range(calls):
                await call(i)
            best[name] = min(best[name], (time.perf_counter() - started) / calls * 1e6)
    base = best["direct"]
    return {
        name: {
            "direct_us": round(base, 2),
            "call_tool_us": round(best[name], 2),
            "overhead_us": round(best[name] - base, 2),
        }
        for name in ("no scanner", "one safety scanner", "approval policy, 10 rules")
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--finished", type=int, default=10_000)
    parser.add_argument("--running", type=int, default=100)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--store-url", default=None, help="a PostgreSQL URL; default SQLite")
    args = parser.parse_args()
    info = machine()
    print_machine(info)
    load_before = load_average()
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_for(Path(tmp), args.store_url)
        app = create_app(settings, extra_plugins=[("bench", BenchTools())], load_entrypoints=False)
        async with app.test_app() as test_app:
            client = test_app.test_client()
            started = time.perf_counter()
            await seed(app, args.finished, args.running)
            print(
                f"seeded {args.finished} finished and {args.running} running runs "
                f"in {time.perf_counter() - started:.1f} s"
            )
            print("GET /gateway/jobs:")
            depth = max(1, args.finished // 250)
            result["jobs"] = await jobs_latency(client, args.requests, depth)
            scanned = create_app(
                settings_for(Path(tmp) / "scanned", None),  # its own SQLite: no seeding
                extra_plugins=[("bench", BenchTools()), ("scanner", BenchScanner())],
                load_entrypoints=False,
            )
            policed = create_app(
                settings_for(Path(tmp) / "policed", None, APPROVAL_POLICY),
                extra_plugins=[("bench", BenchTools())],
                load_entrypoints=False,
            )
            async with scanned.test_app(), policed.test_app():
                result["tool_calls"] = await tool_overhead(app, scanned, policed, args.calls)
    for name, figures in result["tool_calls"].items():
        print(
            f"tool call ({name}): direct {figures['direct_us']} µs, call_tool "
            f"{figures['call_tool_us']} µs, overhead {figures['overhead_us']} µs"
        )
    head = result_head("operations", info, load_before, load_average())
    store = "postgresql" if args.store_url else "sqlite"
    out = {**head, "store": store, "finished": args.finished, "running": args.running, **result}
    write_results(RESULTS_DIR / "operations.json", out)


if __name__ == "__main__":
    asyncio.run(main())
