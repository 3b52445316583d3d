"""Replicas: runs per second and cross-replica event delivery with 1, 2 and 3 gateways on one
PostgreSQL database, reported as ratios to one replica measured in the same run.

The script starts its own PostgreSQL the way the tests do (``tests/pg.py``: Debian's
binaries, a throwaway cluster on a loopback port; ``fsync`` and ``synchronous_commit``
off unless ``--durable``), then for each round a fresh database and N replicas: ``python -m
host.cli serve --no-access-log`` as shipped (one worker each, its own state directory, the
database URL through ``{ env = ... }``), all loading a module this script writes:

* ``bench-quick``: two ``code`` steps doing trivial work (sync functions, each in a worker
  thread, the default isolation);
* ``bench-gated``: three ``code`` steps, each of which connects to a loopback port of this
  script and returns when the script writes a line to it; its output carries
  ``time.time_ns()`` taken as it returns, and the process id of the replica running it.

In each round:

1. runs per second: ``--clients`` keep-alive connections spread round-robin over the
   replicas, each POSTing ``/pipelines/bench-quick/run`` (which answers when the run has
   finished, wherever it ran) again as soon as the last one answered; after
   ``--warmup`` seconds, for ``--seconds``: the runs completed (``finished_ms`` in the
   window, from the database), the client latency, the CPU time of the replicas, of
   PostgreSQL and of the whole machine (``/proc``), PostgreSQL's commits
   (``pg_stat_database``) and how many sessions wait for a lock (``pg_locks``: the claim
   lock is an advisory one), sampled every 0.2 s;
2. event delivery: ``bench-gated`` runs, started on replica ``r mod N``, with
   ``--subscribers`` SSE subscribers on ``GET /runs/{id}/events`` spread round-robin over
   the replicas; per step, once every subscriber has the step's ``step.started``, the
   script releases the step and records when each subscriber receives ``step.completed``;
   latency from the step function's return (published by the replica that runs the run)
   to receipt, p50/p99 over every subscriber of every step, also split by whether the
   subscriber's replica is the one that ran the step (in-process wake) or another (woken by
   PostgreSQL's ``NOTIFY``).

Rounds go 1, 2, 3, 3, 2, 1 replicas (``--quick``: 1, 2, 3 with shorter windows), so a
change in the machine's load shows as a difference between the two rounds of one N rather
than as scaling; the figures are medians (runs/s) or pooled samples (latency) per N.
Results go to ``bench/results/replicas.json``.

Run: ``.venv/bin/python bench/replicas.py`` (about 4 minutes; ``--quick``: about 1.5).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(1, str(BENCH_DIR.parent))
import asyncpg  # noqa: E402
from common import (  # noqa: E402
    RESULTS_DIR,
    Servers,
    cpu_seconds,
    descendants,
    load_average,
    machine,
    pct,
    post,
    print_machine,
    result_head,
    serve_args,
    write_results,
)
from pipelines import Gate, Subscriber, close_all, open_subscribers, seen, until  # noqa: E402

from tests import pg  # noqa: E402

RESULTS = RESULTS_DIR / "replicas.json"
URL_ENV = "BENCH_DATABASE_URL"

PIPELINES_MODULE = '''\
"""Benchmark pipelines, written by bench/replicas.py."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from plugins.pipelines.definition import Pipeline, code


def one(ctx: Any) -> dict[str, int]:
    return {"a": 1}


def two(ctx: Any) -> dict[str, int]:
    return {"b": ctx.results["one"]["a"] + 1}


async def gate(ctx: Any) -> dict[str, int]:
    """Returns when the benchmark writes a line to the connection; reports when, and where."""
    reader, writer = await asyncio.open_connection("127.0.0.1", int(ctx.input["gate_port"]))
    writer.write(f"{ctx.run_id} {ctx.step.id}\\n".encode())
    await writer.drain()
    await reader.readline()
    writer.close()
    return {"done_ns": time.time_ns(), "pid": os.getpid()}


PIPELINES = [
    Pipeline(id="bench-quick", steps=[code("one", one), code("two", two)]),
    Pipeline(id="bench-gated", steps=[code("g1", gate), code("g2", gate), code("g3", gate)]),
]
'''


def replica_config(directory: Path, max_concurrent: int) -> str:
    return (
        f'[storage]\nurl = {{ env = "{URL_ENV}" }}\n\n'
        "[events]\nmax_streams_per_principal = 1000  # one token holds every subscriber\n\n"
        f'[plugins.pipelines]\ndirectory = "{directory}"\n'
        f"max_concurrent_runs = {max_concurrent}\n"
    )


# -- a keep-alive HTTP/1.1 client on a raw socket ----------------------------------------


class Connection:
    """One keep-alive connection; ``post`` returns the status and the body."""

    def __init__(self, port: int, auth: dict[str, str]) -> None:
        self.port = port
        self.head = "".join(f"{k}: {v}\r\n" for k, v in auth.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        self.writer.write(
            (
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n{self.head}"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return int(lines[0].split()[1]), await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# -- readings --------------------------------------------------------------------------


def runqueue_wait(pid: int) -> float:
    """Seconds the threads of ``pid`` spent runnable but waiting for a CPU (the second
    field of ``/proc/<pid>/task/<tid>/schedstat``): how much a busy machine held it back."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue
    except OSError:
        return 0.0
    return total / 1e9


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    total = sum(fields[:8]) / tick
    idle = (fields[3] + fields[4]) / tick
    return total - idle, total


@dataclass
class Reading:
    at: float
    gateway_cpu: float
    postgres_cpu: float
    busy: float
    total: float
    commits: int
    gateway_wait: float


class Cluster:
    """The PostgreSQL server and the database of the current round."""

    def __init__(self, server: pg.PostgresServer) -> None:
        self.server = server
        self.database = ""
        self.conn: asyncpg.Connection | None = None
        folder = server.folder
        assert folder is not None
        self.postmaster = int((folder / "data" / "postmaster.pid").read_text().split()[0])

    async def new_database(self) -> str:
        if self.conn is not None:
            await self.conn.close()
        if self.database:
            self.server.drop_database(self.database)
        self.database = self.server.create_database()
        self.conn = await asyncpg.connect(self.server.url(self.database, driver="postgresql"))
        return self.server.url(self.database)

    def cpu(self) -> float:
        pids = [self.postmaster, *descendants(self.postmaster)]
        return sum(cpu_seconds(p) or 0.0 for p in pids)

    async def scalar(self, sql: str, *args: Any) -> Any:
        assert self.conn is not None
        return await self.conn.fetchval(sql, *args)

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()


async def reading(cluster: Cluster, servers: Servers, names: list[str]) -> Reading:
    busy, total = machine_busy()
    commits = await cluster.scalar(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = $1", cluster.database
    )
    return Reading(
        time.time(),
        sum(servers.cpu(n) or 0.0 for n in names),
        cluster.cpu(),
        busy,
        total,
        int(commits),
        sum(runqueue_wait(servers.pid(n)) for n in names),
    )


# -- phase 1: runs per second ------------------------------------------------------------


async def runs_phase(
    cluster: Cluster,
    servers: Servers,
    names: list[str],
    clients: int,
    warmup: float,
    seconds: float,
) -> dict[str, Any]:
    conns = [Connection(servers.ports[names[i % len(names)]], servers.auth) for i in range(clients)]
    await asyncio.gather(*(c.open() for c in conns))
    loop = asyncio.get_running_loop()
    began = loop.time()
    window = (began + warmup, began + warmup + seconds)
    latencies: list[float] = []
    errors: list[str] = []
    body = json.dumps({"input": {}, "wait_seconds": 60}).encode()

    async def client(conn: Connection) -> None:
        while loop.time() < window[1]:
            sent = loop.time()
            status, answer = await conn.post("/pipelines/bench-quick/run", body)
            done = loop.time()
            if status != 200 or json.loads(answer).get("status") != "completed":
                errors.append(f"{status} {answer[:200]!r}")
            elif window[0] <= done <= window[1]:
                latencies.append((done - sent) * 1000)

    async def sample() -> tuple[Reading, Reading, list[int]]:
        await asyncio.sleep(max(0.0, window[0] - loop.time()))
        first = await reading(cluster, servers, names)
        waiting: list[int] = []
        while loop.time() < window[1]:
            await asyncio.sleep(0.2)
            waiting.append(
                int(await cluster.scalar("SELECT count(*) FROM pg_locks WHERE NOT granted"))
            )
        return first, await reading(cluster, servers, names), waiting

    try:
        sampled, *_ = await asyncio.gather(sample(), *(client(c) for c in conns))
    finally:
        for c in conns:
            c.close()
    first, last, waiting = sampled
    completed = int(
        await cluster.scalar(
            "SELECT count(*) FROM pipelines_runs WHERE status = 'completed' "
            "AND finished_ms >= $1 AND finished_ms < $2",
            int(first.at * 1000),
            int(last.at * 1000),
        )
    )
    span = last.at - first.at
    rps = completed / span
    busy = last.busy - first.busy
    return {
        "seconds": round(span, 2),
        "completed": completed,
        "runs_per_second": round(rps, 1),
        "run_p50_ms": round(pct(latencies, 0.5), 1) if latencies else None,
        "run_p99_ms": round(pct(latencies, 0.99), 1) if latencies else None,
        "errors": len(errors),
        "first_errors": errors[:3],
        "gateway_cpu_ms_per_run": round(
            (last.gateway_cpu - first.gateway_cpu) * 1000 / completed, 1
        )
        if completed
        else None,
        "postgres_cpu_ms_per_run": round(
            (last.postgres_cpu - first.postgres_cpu) * 1000 / completed, 1
        )
        if completed
        else None,
        "gateway_cores": round((last.gateway_cpu - first.gateway_cpu) / span, 2),
        "postgres_cores": round((last.postgres_cpu - first.postgres_cpu) / span, 2),
        "machine_busy_cores": round(busy / span, 2),
        # Per replica: the share of the window its threads were ready but not on a CPU.
        "gateway_runqueue_wait_fraction": round(
            (last.gateway_wait - first.gateway_wait) / span / len(names), 3
        ),
        "machine_busy_fraction": round(busy / (last.total - first.total), 3),
        "commits_per_second": round((last.commits - first.commits) / span, 1),
        "commits_per_run": round((last.commits - first.commits) / completed, 1)
        if completed
        else None,
        "lock_waiters_mean": round(statistics.fmean(waiting), 2) if waiting else None,
        "lock_waiters_max": max(waiting) if waiting else None,
    }


# -- phase 2: event delivery across replicas ----------------------------------------------


@dataclass
class StepRound:
    run_id: str
    step: str
    done_ns: int = 0
    pid: int = 0
    receipts: list[tuple[str, int]] = field(default_factory=list)  # (replica, ns)


async def fanout_phase(
    servers: Servers, names: list[str], runs: int, subscribers: int
) -> list[StepRound]:
    gate = Gate()
    await gate.start()
    rounds: list[StepRound] = []
    try:
        for r in range(runs):
            home = names[r % len(names)]
            status, raw = post(
                servers.url(home, "/pipelines/bench-gated/start"),
                json.dumps({"input": {"gate_port": gate.port}}),
                servers.auth,
            )
            if status != 202:
                raise SystemExit(f"start bench-gated: {status} {raw[:300]!r}")
            run_id = json.loads(raw)["runId"]
            path = f"/runs/{run_id}/events"
            groups: dict[str, list[Subscriber]] = {}
            for i, name in enumerate(names):
                count = subscribers // len(names) + (i < subscribers % len(names))
                groups[name] = await open_subscribers(
                    servers.ports[name], path, servers.auth, count, keep=1
                )
            subs = [s for group in groups.values() for s in group]
            started, done = b"event: step.started", b"event: step.completed"
            for k, step in enumerate(("g1", "g2", "g3"), start=1):
                await until(functools.partial(gate.waiting.__contains__, (run_id, step)), 30, step)
                await until(seen(subs, started, k), 30, "step.started")
                await asyncio.sleep(0.1)  # let the replicas go idle
                await gate.release(run_id, step)
                await until(seen(subs, done, k), 30, "step.completed")
                sr = StepRound(run_id, step)
                sr.receipts = [(n, s.completed_ns[k - 1]) for n, g in groups.items() for s in g]
                rounds.append(sr)
            await close_all(subs)
            kept = groups[names[0]][0]
            completed = {e["data"]["step"]: e for t, e in kept.events() if t == "step.completed"}
            for sr in rounds[-3:]:
                output = completed[sr.step]["data"]["output"]
                sr.done_ns, sr.pid = int(output["done_ns"]), int(output["pid"])
    finally:
        await gate.close()
    return rounds


def latency_summary(rounds: list[StepRound], pids: dict[int, str]) -> dict[str, Any]:
    def dist(values: list[float]) -> dict[str, Any]:
        if not values:
            return {"samples": 0}
        return {
            "samples": len(values),
            "p50_ms": round(pct(values, 0.5), 2),
            "p99_ms": round(pct(values, 0.99), 2),
            "max_ms": round(max(values), 2),
        }

    every, same, other = [], [], []
    for sr in rounds:
        runner = pids.get(sr.pid)
        for name, ns in sr.receipts:
            ms = (ns - sr.done_ns) / 1e6
            every.append(ms)
            (same if name == runner else other).append(ms)
    return {"all": dist(every), "same_replica": dist(same), "other_replica": dist(other)}


# -- one round ---------------------------------------------------------------------------


async def one_round(
    n: int, cluster: Cluster, tmp: Path, token: str, directory: Path, args: argparse.Namespace
) -> dict[str, Any]:
    url = await cluster.new_database()
    round_dir = tmp / f"round-{time.monotonic_ns()}"
    round_dir.mkdir()
    servers = Servers(round_dir, token)
    servers.env[URL_ENV] = url
    names = [f"replica{i}" for i in range(n)]
    try:
        for name in names:
            config = servers.gateway_config(
                name, replica_config(directory, args.max_concurrent_runs)
            )
            servers.start(name, serve_args(config))
        for name in names:
            servers.wait(name, "/health", False, timeout=90)
        runs = await runs_phase(cluster, servers, names, args.clients, args.warmup, args.seconds)
        rounds = await fanout_phase(servers, names, args.fanout_runs, args.subscribers)
        pids = {servers.pid(name): name for name in names}
        latency = latency_summary(rounds, pids)
        tracebacks = [name for name in names if "Traceback" in servers.log(name)]
    finally:
        servers.stop()
    print(
        f"  {n} replica(s): {runs['runs_per_second']:6.1f} runs/s "
        f"(run p50 {runs['run_p50_ms']} ms, gateway {runs['gateway_cores']} + PostgreSQL "
        f"{runs['postgres_cores']} cores, machine {runs['machine_busy_cores']} cores busy, "
        f"replicas waited for a CPU {runs['gateway_runqueue_wait_fraction']:.0%} of the time, "
        f"{runs['commits_per_run']} commits/run, lock waiters {runs['lock_waiters_mean']}); "
        f"event p50 {latency['all'].get('p50_ms')} ms p99 {latency['all'].get('p99_ms')} ms",
        flush=True,
    )
    return {"replicas": n, "runs": runs, "delivery": latency, "tracebacks": tracebacks}


def summarize(rounds: list[dict[str, Any]], counts: list[int]) -> dict[str, Any]:
    per: dict[str, Any] = {}
    for n in counts:
        mine = [r for r in rounds if r["replicas"] == n]
        rps = [r["runs"]["runs_per_second"] for r in mine]
        per[str(n)] = {
            "runs_per_second": round(statistics.median(rps), 1),
            "runs_per_second_rounds": rps,
            "gateway_cpu_ms_per_run": statistics.median(
                r["runs"]["gateway_cpu_ms_per_run"] or 0 for r in mine
            ),
            "postgres_cpu_ms_per_run": statistics.median(
                r["runs"]["postgres_cpu_ms_per_run"] or 0 for r in mine
            ),
            "machine_busy_cores": statistics.median(r["runs"]["machine_busy_cores"] for r in mine),
            "gateway_cores": statistics.median(r["runs"]["gateway_cores"] for r in mine),
            "postgres_cores": statistics.median(r["runs"]["postgres_cores"] for r in mine),
            "gateway_runqueue_wait_fraction": statistics.median(
                r["runs"]["gateway_runqueue_wait_fraction"] for r in mine
            ),
            "commits_per_run": statistics.median(r["runs"]["commits_per_run"] or 0 for r in mine),
            "lock_waiters_mean": statistics.median(
                r["runs"]["lock_waiters_mean"] or 0 for r in mine
            ),
            "delivery_p50_ms": statistics.median(
                r["delivery"]["all"]["p50_ms"] for r in mine if r["delivery"]["all"]["samples"]
            ),
            "delivery_p99_ms": statistics.median(
                r["delivery"]["all"]["p99_ms"] for r in mine if r["delivery"]["all"]["samples"]
            ),
        }
        other = [
            r["delivery"]["other_replica"]
            for r in mine
            if r["delivery"]["other_replica"]["samples"]
        ]
        if other:
            per[str(n)]["delivery_other_replica_p50_ms"] = statistics.median(
                o["p50_ms"] for o in other
            )
            per[str(n)]["delivery_other_replica_p99_ms"] = statistics.median(
                o["p99_ms"] for o in other
            )
    base = per[str(counts[0])]
    for figures in per.values():
        figures["runs_per_second_ratio"] = round(
            figures["runs_per_second"] / base["runs_per_second"], 2
        )
        figures["delivery_p50_ratio"] = round(
            figures["delivery_p50_ms"] / base["delivery_p50_ms"], 2
        )
    return per


async def run(args: argparse.Namespace) -> dict[str, Any]:
    order = [1, 2, 3] if args.quick else [1, 2, 3, 3, 2, 1]
    if args.durable:
        pg.SERVER_SETTINGS.update(fsync="on", synchronous_commit="on", full_page_writes="on")
    token = secrets.token_urlsafe(32)
    server = pg.start_server()
    cluster = Cluster(server)
    rounds: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="gw-replicas-bench-") as tmpdir:
            tmp = Path(tmpdir)
            directory = tmp / "pipelines"
            directory.mkdir()
            (directory / "bench_replicas.py").write_text(PIPELINES_MODULE, encoding="utf-8")
            for n in order:
                rounds.append(await one_round(n, cluster, tmp, token, directory, args))
    finally:
        await cluster.close()
        server.stop()
    return {
        "order": order,
        "postgres_settings": dict(pg.SERVER_SETTINGS),
        "per_replicas": summarize(rounds, sorted(set(order))),
        "rounds": rounds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1, 2, 3 replicas once, short")
    parser.add_argument("--seconds", type=float, help="runs/s window (default 10; quick 5)")
    parser.add_argument("--warmup", type=float, help="runs/s warm-up (default 3; quick 2)")
    parser.add_argument("--clients", type=int, default=24, help="concurrent /run clients")
    parser.add_argument("--fanout-runs", type=int, help="gated runs per round (default 2)")
    parser.add_argument("--subscribers", type=int, default=100, help="SSE subscribers")
    parser.add_argument(
        "--max-concurrent-runs",
        type=int,
        default=16,
        help="[plugins.pipelines] max_concurrent_runs, counted over all replicas (default 16)",
    )
    parser.add_argument(
        "--durable", action="store_true", help="PostgreSQL with fsync and synchronous_commit on"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.seconds = args.seconds or (5.0 if args.quick else 10.0)
    args.warmup = args.warmup or (2.0 if args.quick else 3.0)
    args.fanout_runs = args.fanout_runs or (1 if args.quick else 2)

    info = machine(extra_packages=["sqlalchemy", "asyncpg"])
    print_machine(info)
    print(
        f"runs/s: {args.clients} /run clients over the replicas, {args.seconds} s after "
        f"{args.warmup} s warm-up, max_concurrent_runs = {args.max_concurrent_runs}; "
        f"delivery: {args.fanout_runs} runs x 3 steps x {args.subscribers} subscribers"
    )
    load_before = load_average()
    began = time.monotonic()
    result = asyncio.run(run(args))
    load_after = load_average()
    out = {
        **result_head("replicas", info, load_before, load_after),
        "settings": {k: v for k, v in vars(args).items() if k != "output"},
        "wall_seconds": round(time.monotonic() - began, 1),
        **result,
    }
    print(f"load average {load_before[0]:.2f} -> {load_after[0]:.2f}")
    print("replicas  runs/s  ratio  gw ms/run  pg ms/run  busy cores  delivery p50/p99 ms")
    for n, f in out["per_replicas"].items():
        print(
            f"{n:>8}  {f['runs_per_second']:6.1f}  {f['runs_per_second_ratio']:5.2f}  "
            f"{f['gateway_cpu_ms_per_run']:9.1f}  {f['postgres_cpu_ms_per_run']:9.1f}  "
            f"{f['machine_busy_cores']:10.2f}  {f['delivery_p50_ms']:.2f} / "
            f"{f['delivery_p99_ms']:.2f}"
        )
    write_results(args.output, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
