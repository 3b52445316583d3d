"""Training benchmark, in one run:

1. Rollout recording overhead on a pipeline run: the latency of a synchronous run
   (``POST /pipelines/<id>/run``, a three-step pipeline) on three gateways built alike in
   this process, in alternating rounds: the training plugin disabled, collection off,
   collection on (every run recorded: its rollout built, keys masked and written by the
   collector task, which competes for the same event loop). Also the cost of the hook on
   the run path itself (``gateway_on_event`` for a terminal event: a queue put).
2. Export throughput: rollouts written as JSONL in the fine-tuning chat format per second
   (``POST /gateway/training/exports`` over N stored rollouts), and the dataset's size.

The run latencies are taken on SQLite (each gateway its own store: gateways on one
database would run each other's runs); ``--store-url`` moves the export to PostgreSQL.

Requests go through the Quart test client in this process (the full host path) but not a
socket.

    .venv/bin/python bench/training.py [--runs 100] [--rounds 5] [--rollouts 10000]
        [--store-url postgresql+asyncpg://...]
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

from host.api import Event, context, hookimpl  # noqa: E402
from host.app import create_app  # noqa: E402
from host.settings import build_settings  # noqa: E402

ADMIN = "bench-admin-token-0123456789"
HEADERS = {"Authorization": f"Bearer {ADMIN}"}
PIPELINE = """
from plugins.pipelines.definition import Pipeline, code

BENCH = Pipeline(id="bench", steps=[
    code("fetch", lambda c: {"items": list(range(20)), "api_key": "sk-bench"}),
    code("score", lambda c: {"score": sum(c.results["fetch"]["items"])}),
    code("report", lambda c: {"text": "score " + str(c.results["score"]["score"])}),
])
"""
MODES = ("plugin disabled", "collection off", "collection on")


class NoopTrainer:
    def __init__(self) -> None:
        self.batches = 0

    @hookimpl
    def gateway_training_batch(
        self, app: Any, export: dict[str, Any], batch: list[dict[str, Any]], index: int, last: bool
    ) -> None:
        self.batches += 1


def settings_for(state: Path, pipelines: Path, store_url: str | None, mode: str) -> Any:
    training: dict[str, Any] = {"collect": mode == "collection on"}
    if mode == "plugin disabled":
        training = {"enabled": False}
    data: dict[str, Any] = {
        "state_dir": str(state),
        "auth": {
            "mode": "token",
            "tokens": {
                "admin": {"token": ADMIN, "gates": ["*"], "rate_limit": {"per_minute": 10**6}}
            },
        },
        "plugins": {
            "pipelines": {"directory": str(pipelines), "max_concurrent_runs": 4},
            "training": training,
        },
        "retention": {"enabled": False},
    }
    if store_url:
        data["storage"] = {"url": store_url}
    return build_settings(data)


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered), 3),
        "p95_ms": round(ordered[max(0, int(len(ordered) * 0.95) - 1)], 3),
        "mean_ms": round(statistics.fmean(ordered), 3),
    }


async def one_run(client: Any) -> float:
    started = time.perf_counter()
    response = await client.post("/pipelines/bench/run", json={"input": {}}, headers=HEADERS)
    body = await response.get_json()
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status_code == 200 and body["status"] == "completed", body
    return elapsed


async def recording_overhead(
    apps: dict[str, Any], clients: dict[str, Any], runs: int, rounds: int
) -> dict[str, Any]:
    """Wall latency of each run, and this process's CPU time per run over each round
    (the collector's recording included: the round ends when its queue is empty). CPU
    time is what the other processes on a shared machine disturb least."""
    samples: dict[str, list[float]] = {mode: [] for mode in clients}
    cpu: dict[str, list[float]] = {mode: [] for mode in clients}
    for n in range(rounds):
        # Each round in another order: a mode is not always first after the others.
        order = list(clients.items())
        order = order[n % len(order) :] + order[: n % len(order)]
        for mode, client in order:
            started = time.process_time()
            for _ in range(runs):
                samples[mode].append(await one_run(client))
            if mode != "plugin disabled":
                await drained(apps[mode])
            cpu[mode].append((time.process_time() - started) / runs * 1000)
    return {
        mode: {**summary(found), "cpu_ms_per_run": round(statistics.median(cpu[mode]), 3)}
        for mode, found in samples.items()
    }


async def drained(app: Any) -> int:
    """Wait for the collector's queue to empty; the rollouts recorded."""
    from plugins.training.collector import collector_of

    collector = collector_of(app)
    assert collector is not None
    while collector.pending:
        await asyncio.sleep(0.005)
    return int(collector.counters["recorded"])


def hook_cost(app: Any, calls: int) -> float:
    """µs per ``gateway_on_event`` of the training plugin for a run's terminal event, on
    a collector that is not started (its queue is emptied as it fills)."""
    from plugins import training
    from plugins.training.collector import COLLECTOR_KEY, Collector

    extras = context(app).extras
    original = extras[COLLECTOR_KEY]
    probe = Collector(app, original.file_config)
    extras[COLLECTOR_KEY] = probe
    event = Event(stream="run:bench", seq=1, type="run.completed", ts_ms=0, data={})
    try:
        started = time.perf_counter()
        for i in range(calls):
            training.gateway_on_event(event, app)
            if i % 1000 == 999:
                while not probe.queue.empty():
                    probe.queue.get_nowait()
        return (time.perf_counter() - started) / calls * 1e6
    finally:
        extras[COLLECTOR_KEY] = original


async def seed_rollouts(app: Any, count: int) -> None:
    from plugins.training.tables import rollouts

    messages = [
        {"role": "system", "content": "You run the pipeline bench."},
        {"role": "user", "content": '{"topic": "benchmarks"}'},
    ]
    tools = []
    for i, step in enumerate(("fetch", "score", "report")):
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"call_{i}",
                        "type": "function",
                        "function": {"name": step, "arguments": "{}"},
                    }
                ],
            }
        )
        messages.append({"role": "tool", "tool_call_id": f"call_{i}", "content": "x" * 200})
        tools.append(
            {
                "type": "function",
                "function": {"name": step, "parameters": {"type": "object", "properties": {}}},
            }
        )
    messages.append({"role": "assistant", "content": '{"text": "score 190"}'})
    now = int(time.time() * 1000)
    rows = [
        {
            "id": f"ro_{uuid.uuid4().hex[:24]}",
            "source": "runs",
            "source_key": uuid.uuid4().hex,
            "run_id": None,
            "pipeline_id": "bench",
            "model": "pipeline:bench",
            "outcome": "completed",
            "owner": "token:admin",
            "created_by": "admin",
            "messages": messages,
            "tools": tools,
            "details": {},
            "turns": 1,
            "redactions": 0,
            "created_ms": now,
            "updated_ms": now,
        }
        for _ in range(count)
    ]
    store = context(app).store
    for start in range(0, len(rows), 1000):
        async with store.write() as conn:
            await conn.execute(rollouts.insert(), rows[start : start + 1000])


async def export_throughput(app: Any, count: int) -> dict[str, Any]:
    await seed_rollouts(app, count)
    client = app.test_client()
    started = time.perf_counter()
    response = await client.post("/gateway/training/exports", json={}, headers=HEADERS)
    elapsed = time.perf_counter() - started
    export = await response.get_json()
    assert response.status_code == 201, export
    return {
        "rollouts": export["rollouts"],
        "seconds": round(elapsed, 3),
        "rollouts_per_second": round(export["rollouts"] / elapsed, 1),
        "bytes": export["bytes"],
        "mb_per_second": round(export["bytes"] / elapsed / 1e6, 2),
        "batches": export["batches"],
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100, help="runs per mode and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rollouts", type=int, default=10_000)
    parser.add_argument("--store-url", default=None, help="a PostgreSQL URL; default SQLite")
    args = parser.parse_args()
    info = machine()
    print_machine(info)
    load_before = load_average()
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        pipelines = Path(tmp) / "pipelines"
        pipelines.mkdir()
        (pipelines / "bench.py").write_text(PIPELINE)
        trainer = NoopTrainer()
        apps = {}
        for i, mode in enumerate(MODES):
            # Each gateway its own SQLite store (gateways on one database would run each
            # other's runs); the export runs on the store asked for.
            url = args.store_url if mode == "collection off" else None
            settings = settings_for(Path(tmp) / f"state{i}", pipelines, url, mode)
            extra = [("bench_trainer", trainer)] if mode == "collection on" else []
            apps[mode] = create_app(settings, extra_plugins=extra, load_entrypoints=False)
        async with (
            apps[MODES[0]].test_app() as a,
            apps[MODES[1]].test_app() as b,
            apps[MODES[2]].test_app() as c,
        ):
            opened = (a.test_client(), b.test_client(), c.test_client())
            clients = dict(zip(MODES, opened, strict=True))
            for client in clients.values():  # warm up: imports, first queries
                for _ in range(10):
                    await one_run(client)
            print(f"pipeline run latency, {args.rounds} alternating rounds of {args.runs}:")
            result["run_latency"] = await recording_overhead(apps, clients, args.runs, args.rounds)
            recorded = await drained(apps["collection on"])
            base = result["run_latency"]["plugin disabled"]["cpu_ms_per_run"]
            for mode, figures in result["run_latency"].items():
                print(
                    f"  {mode:16} p50 {figures['p50_ms']:7.2f} ms  p95 {figures['p95_ms']:7.2f} ms"
                    f"  CPU {figures['cpu_ms_per_run']:6.2f} ms/run"
                    f" ({figures['cpu_ms_per_run'] - base:+.2f} ms)"
                )
            print(f"  rollouts recorded with collection on: {recorded}")
            result["recorded"] = recorded
            result["hook_us"] = round(hook_cost(apps["collection on"], 100_000), 3)
            print(f"  gateway_on_event on the run path: {result['hook_us']} µs per terminal event")
            export_app = apps["collection off"]
            result["export"] = await export_throughput(export_app, args.rollouts)
            e = result["export"]
            print(
                f"export: {e['rollouts']} rollouts in {e['seconds']} s = "
                f"{e['rollouts_per_second']} rollouts/s, {e['mb_per_second']} MB/s "
                f"({e['bytes']} bytes, {e['batches']} batches)"
            )
    head = result_head("training", info, load_before, load_average())
    store = "postgresql" if args.store_url else "sqlite"
    write_results(RESULTS_DIR / "training.json", {**head, "store": store, **result})


if __name__ == "__main__":
    asyncio.run(main())
