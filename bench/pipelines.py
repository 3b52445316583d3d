"""Pipelines: runs per second, step-completion → SSE fan-out latency, memory per subscriber.

One run starts ``python -m host.cli serve --no-access-log`` as shipped (one worker, state
in a temp dir, a token whose rate limit is never reached) with ``[plugins.pipelines]
directory`` pointing at a module this script writes, holding three bench pipelines:

* ``bench-code3``: three ``code`` steps doing trivial work (sync functions: each runs in
  a worker thread, the default ``thread`` isolation); ``bench-code3-loop`` and
  ``bench-code3-process``: the same steps with ``isolation = "loop"`` (on the event loop,
  as every sync step ran before) and ``"process"`` (in step processes);
* ``bench-gated``: three ``code`` steps, each of which connects to a loopback port of this
  script and returns when the script writes a line to it; its output carries
  ``time.time_ns()`` taken as it returns;
* ``bench-held``: one ``wait`` step, so the run (and its event stream) stays open.

Then, in this order:

1. memory per open SSE subscriber: the gateway's RSS (``/proc/<pid>/status``) with 0,
   100 and 1000 subscribers on ``GET /runs/{id}/events`` of a ``bench-held`` run, each
   having received the replayed events; the differences divided by the count;
2. step completion → event at 100 SSE subscribers: ``bench-gated`` runs with 100
   subscribers each; per step, once every subscriber has the step's ``step.started``, the
   script releases the step and records when each subscriber receives ``step.completed``;
   latency from the step function's return (the ns timestamp in its output) and from the
   release; p50/p99 over every subscriber of every step of every run;
3. runs per second: ``wrk -t1 -c32`` POSTs ``/pipelines/bench-code3/start`` for N
   seconds; the completed runs come from the store (``finished_ms`` inside the load
   window), the start latency from wrk; then the backlog drains and is timed; the
   gateway's CPU per run over load and drain. Informational, alternating with it: the
   same on ``/pipelines/bench-code3/run`` (each client waits for its run to finish).
   Medians of the rounds;
4. step isolation: the same ``/start`` measurement on ``bench-code3``,
   ``bench-code3-loop`` and ``bench-code3-process``, rounds alternating between them;
   reported as runs/s each and the ratio thread / loop (what running sync steps off the
   event loop costs in throughput) and process / loop.

Clients are asyncio protocols on raw sockets (one process, timestamps taken on receipt,
no parsing in the hot path). Results go to ``bench/results/pipelines.json``.

Run: ``.venv/bin/python bench/pipelines.py`` (about 5 to 7 minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import json
import re
import secrets
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from common import (  # noqa: E402
    RESULTS_DIR,
    Servers,
    Target,
    expect_status,
    fmt,
    load_average,
    machine,
    pct,
    post,
    post_lua,
    print_machine,
    request,
    result_head,
    run_wrk,
    serve_args,
    write_results,
)

RESULTS = RESULTS_DIR / "pipelines.json"
GW = "gateway"
# The step isolations compared (``--skip isolation`` leaves them out): the pipeline of each.
ISOLATIONS = {"thread": "bench-code3", "loop": "bench-code3-loop", "process": "bench-code3-process"}

PIPELINES_MODULE = '''\
"""Benchmark pipelines, written by bench/pipelines.py."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from plugins.pipelines.definition import Pipeline, code, wait


def step_a(ctx: Any) -> dict[str, int]:
    return {"a": 1}


def step_b(ctx: Any) -> dict[str, int]:
    return {"b": ctx.results["a"]["a"] + 1}


def step_c(ctx: Any) -> dict[str, int]:
    return {"c": ctx.results["b"]["b"] + 1}


async def gate(ctx: Any) -> dict[str, int]:
    """Returns when the benchmark writes a line to the connection; reports when."""
    reader, writer = await asyncio.open_connection("127.0.0.1", int(ctx.input["gate_port"]))
    writer.write(f"{ctx.run_id} {ctx.step.id}\\n".encode())
    await writer.drain()
    await reader.readline()
    writer.close()
    return {"done_ns": time.time_ns()}


PIPELINES = [
    Pipeline(
        id="bench-code3",
        description="three code steps, trivial work",
        steps=[code("a", step_a), code("b", step_b), code("c", step_c)],
    ),
    Pipeline(
        id="bench-code3-loop",
        description="bench-code3 with its sync steps on the event loop",
        isolation="loop",
        steps=[code("a", step_a), code("b", step_b), code("c", step_c)],
    ),
    Pipeline(
        id="bench-code3-process",
        description="bench-code3 with its steps in step processes",
        isolation="process",
        steps=[code("a", step_a), code("b", step_b), code("c", step_c)],
    ),
    Pipeline(
        id="bench-gated",
        description="three code steps, each returning when the benchmark says so",
        steps=[code("g1", gate), code("g2", gate), code("g3", gate)],
    ),
    Pipeline(
        id="bench-held",
        description="waits for input, so its event stream stays open",
        steps=[wait("hold", prompt="hold")],
    ),
]
'''


def pipelines_config(directory: Path, max_concurrent: int, synchronous: str) -> str:
    return (
        f'[storage]\nsynchronous = "{synchronous}"\n\n'
        f'[plugins.pipelines]\ndirectory = "{directory}"\nmax_concurrent_runs = {max_concurrent}\n'
    )


# -- SSE subscribers ---------------------------------------------------------------------

MARKERS = (b"event: step.started", b"event: step.completed", b"event: run.waiting")


class Subscriber(asyncio.Protocol):
    """One SSE connection. ``data_received`` only timestamps and counts a few markers;
    the bytes are kept (``keep``) for parsing after the round."""

    def __init__(self, request: bytes, keep: bool) -> None:
        self.request = request
        self.keep = keep
        self.chunks: list[bytes] = []
        self.tail = b""
        self.counts = dict.fromkeys(MARKERS, 0)
        self.completed_ns: list[int] = []  # receipt time of each step.completed, in order
        self.nbytes = 0
        self.head = b""  # the start of the response
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        if not self.nbytes:
            self.head = data[:64]
        self.nbytes += len(data)
        window = self.tail + data
        for marker in MARKERS:
            new = window.count(marker) - self.tail.count(marker)
            if new:
                self.counts[marker] += new
                if marker == b"event: step.completed":
                    self.completed_ns.extend([now] * new)
        self.tail = window[-32:]
        if self.keep:
            self.chunks.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        """(type, event) of every complete SSE event received (kept subscribers only)."""
        text = b"".join(self.chunks).decode("utf-8", "replace")
        out = []
        for block in text.split("\n\n"):
            etype, data = None, None
            for line in block.split("\n"):
                line = line.strip("\r")
                if line.startswith("event: "):
                    etype = line[7:]
                elif line.startswith("data: "):
                    data = line[6:]
            if etype and data:
                out.append((etype, json.loads(data)))
        return out


async def open_subscribers(
    port: int, path: str, auth: dict[str, str], count: int, keep: int, batch: int = 50
) -> list[Subscriber]:
    """Open ``count`` subscribers ``batch`` at a time (Hypercorn's listen backlog is 100);
    each batch is connected and has its response head before the next is opened."""
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Accept: text/event-stream"]
    lines += [f"{k}: {v}" for k, v in auth.items()]
    req = ("\r\n".join(lines) + "\r\n\r\n").encode()
    loop = asyncio.get_running_loop()
    subs: list[Subscriber] = []
    while len(subs) < count:
        first, n = len(subs), min(batch, count - len(subs))
        made = await asyncio.gather(
            *(
                loop.create_connection(
                    functools.partial(Subscriber, req, first + i < keep), "127.0.0.1", port
                )
                for i in range(n)
            )
        )
        group = [proto for _transport, proto in made]
        subs += group
        await until(functools.partial(answered, group), 30, "SSE response heads")
        for s in group:
            if not s.head.startswith(b"HTTP/1.1 200"):
                raise SystemExit(f"GET {path} did not answer 200: {s.head!r}")
    return subs


def answered(subs: list[Subscriber]) -> bool:
    return all(s.nbytes for s in subs)


def seen(subs: list[Subscriber], marker: bytes, count: int) -> Callable[[], bool]:
    """Whether every subscriber has received ``count`` events carrying ``marker``."""
    return lambda: all(s.counts[marker] >= count for s in subs)


async def close_all(subs: list[Subscriber]) -> None:
    for s in subs:
        s.close()
    if subs:
        await asyncio.wait_for(asyncio.gather(*(s.lost for s in subs)), 30)


async def until(cond: Callable[[], bool], timeout: float, what: str, step: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(step)


# -- the gate the bench-gated steps wait on -----------------------------------------------


class Gate:
    """A loopback server: each gated step connects, names itself, and waits for a line."""

    def __init__(self) -> None:
        self.waiting: dict[tuple[str, str], asyncio.StreamWriter] = {}
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        run_id, step = (await reader.readline()).decode().split()
        self.waiting[(run_id, step)] = writer

    async def release(self, run_id: str, step: str) -> int:
        """Write the line that lets the step return; returns the time it was written."""
        writer = self.waiting.pop((run_id, step))
        now = time.time_ns()
        writer.write(b"go\n")
        await writer.drain()
        writer.close()
        return now

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


# -- phases ------------------------------------------------------------------------------


@dataclass
class Gateway:
    servers: Servers
    db: Path

    @property
    def port(self) -> int:
        return self.servers.ports[GW]

    def url(self, path: str) -> str:
        return self.servers.url(GW, path)

    def start(self, pipeline: str, run_input: dict[str, Any]) -> str:
        status, raw = post(
            self.url(f"/pipelines/{pipeline}/start"),
            json.dumps({"input": run_input}),
            self.servers.auth,
        )
        if status != 202:
            raise SystemExit(f"start {pipeline}: {status} {raw[:300]!r}")
        return str(json.loads(raw)["runId"])

    def run(self, run_id: str) -> dict[str, Any]:
        status, raw = request("GET", self.url(f"/runs/{run_id}"), self.servers.auth)
        if status != 200:
            raise SystemExit(f"GET /runs/{run_id}: {status} {raw[:300]!r}")
        return dict(json.loads(raw))

    def rss(self) -> int:
        value = self.servers.rss(GW)
        if value is None:
            raise SystemExit("cannot read the gateway's RSS from /proc")
        return value

    def open_streams(self) -> int:
        status, raw = request("GET", self.url("/gateway/status"), self.servers.auth)
        return int(json.loads(raw)["streams"]["open"]) if status == 200 else -1

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()


def wait_status(gw: Gateway, run_id: str, statuses: tuple[str, ...], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (status := gw.run(run_id)["status"]) not in statuses:
        if time.monotonic() > deadline:
            raise SystemExit(f"run {run_id} is {status}, not {statuses} after {timeout} s")
        time.sleep(0.05)


async def settled_rss(gw: Gateway, seconds: float = 1.5) -> int:
    """RSS once the process has settled: three readings over ``seconds``, the last."""
    readings = []
    for _ in range(3):
        await asyncio.sleep(seconds / 3)
        readings.append(gw.rss())
    return readings[-1]


async def memory_phase(gw: Gateway, counts: list[int]) -> dict[str, Any]:
    run_id = gw.start("bench-held", {})
    wait_status(gw, run_id, ("waiting",))
    path = f"/runs/{run_id}/events"
    waiting = b"event: run.waiting"

    async def open_n(n: int) -> list[Subscriber]:
        subs = await open_subscribers(gw.port, path, gw.servers.auth, n, keep=1)
        await until(lambda: all(s.counts[waiting] for s in subs), 60, "replayed events")
        return subs

    # Warm the SSE path (imports, caches, the first tail) before the baseline.
    await close_all(await open_n(50))
    steps: list[dict[str, Any]] = [{"subscribers": 0, "rss_bytes": await settled_rss(gw)}]
    subs: list[Subscriber] = []
    for target in counts:
        subs += await open_n(target - len(subs))
        rss = await settled_rss(gw)
        steps.append(
            {"subscribers": len(subs), "rss_bytes": rss, "open_streams": gw.open_streams()}
        )
        print(
            f"  {len(subs):>5} subscribers: RSS {rss / 2**20:7.1f} MiB "
            f"(gateway reports {steps[-1]['open_streams']} open streams)",
            flush=True,
        )
    await close_all(subs)
    after = await settled_rss(gw, 3.0)
    request("POST", gw.url(f"/runs/{run_id}/cancel"), gw.servers.auth, "{}")
    base = steps[0]["rss_bytes"]
    print(f"  after closing them: RSS {after / 2**20:7.1f} MiB (baseline {base / 2**20:.1f})")
    per: dict[str, float] = {}
    for prev, cur in itertools.pairwise(steps):
        key = f"{prev['subscribers']}_to_{cur['subscribers']}"
        per[key] = (cur["rss_bytes"] - prev["rss_bytes"]) / (
            cur["subscribers"] - prev["subscribers"]
        )
    top = steps[-1]
    return {
        "run_id": run_id,
        "steps": steps,
        "rss_after_close_bytes": after,
        "bytes_per_subscriber": {k: round(v) for k, v in per.items()},
        "bytes_per_subscriber_overall": round((top["rss_bytes"] - base) / top["subscribers"]),
    }


@dataclass
class StepRound:
    run_id: str
    step: str
    trigger_ns: int
    done_ns: int
    ts_ms: int
    receipts_ns: list[int] = field(default_factory=list)


async def fanout_phase(gw: Gateway, runs: int, subscribers: int) -> dict[str, Any]:
    gate = Gate()
    await gate.start()
    rounds: list[StepRound] = []
    try:
        for r in range(runs):
            run_id = gw.start("bench-gated", {"gate_port": gate.port})
            subs = await open_subscribers(
                gw.port, f"/runs/{run_id}/events", gw.servers.auth, subscribers, keep=1
            )
            started = b"event: step.started"
            done = b"event: step.completed"
            for k, step in enumerate(("g1", "g2", "g3"), start=1):
                key = (run_id, step)
                await until(functools.partial(gate.waiting.__contains__, key), 30, step)
                await until(seen(subs, started, k), 30, "step.started")
                await asyncio.sleep(0.1)  # let the gateway go idle
                trigger = await gate.release(run_id, step)
                await until(seen(subs, done, k), 30, "step.completed")
                rounds.append(
                    StepRound(run_id, step, trigger, 0, 0, [s.completed_ns[k - 1] for s in subs])
                )
            await close_all(subs)
            # The step's own completion time and the event's ts_ms, from one subscriber.
            completed = {e["data"]["step"]: e for t, e in subs[0].events() if t == "step.completed"}
            for sr in rounds[-3:]:
                event = completed[sr.step]
                sr.done_ns = int(event["data"]["output"]["done_ns"])
                sr.ts_ms = int(event["ts_ms"])
            lat = [(x - sr.done_ns) / 1e6 for sr in rounds[-3:] for x in sr.receipts_ns]
            print(
                f"  run {r + 1}: step return -> {subscribers} subscribers "
                f"p50 {pct(lat, 0.5):6.2f} ms  p99 {pct(lat, 0.99):6.2f} ms",
                flush=True,
            )
    finally:
        await gate.close()
    from_done = [(x - sr.done_ns) / 1e6 for sr in rounds for x in sr.receipts_ns]
    from_trigger = [(x - sr.trigger_ns) / 1e6 for sr in rounds for x in sr.receipts_ns]
    first = [(min(sr.receipts_ns) - sr.done_ns) / 1e6 for sr in rounds]
    last = [(max(sr.receipts_ns) - sr.done_ns) / 1e6 for sr in rounds]
    trigger_to_done = [(sr.done_ns - sr.trigger_ns) / 1e6 for sr in rounds]
    ts_lag = [sr.ts_ms - sr.done_ns / 1e6 for sr in rounds]

    def dist(values: list[float]) -> dict[str, float]:
        return {
            "p50_ms": round(pct(values, 0.5), 3),
            "p99_ms": round(pct(values, 0.99), 3),
            "max_ms": round(max(values), 3),
        }

    return {
        "runs": runs,
        "steps": len(rounds),
        "subscribers": subscribers,
        "samples": len(from_done),
        "step_return_to_receipt": dist(from_done),
        "release_to_receipt": dist(from_trigger),
        "release_to_step_return": dist(trigger_to_done),
        "first_subscriber_after_step_return": dist(first),
        "last_subscriber_after_step_return": dist(last),
        "event_ts_ms_minus_step_return_ms": dist(ts_lag),
        "per_step_p50_ms": [
            round(statistics.median((x - sr.done_ns) / 1e6 for x in sr.receipts_ns), 3)
            for sr in rounds
        ],
    }


@dataclass
class RunsRound:
    seconds: float
    starts: int
    start_rps: float
    start_p50_ms: float
    start_p99_ms: float
    start_errors: int
    completed_in_window: int
    runs_per_second: float
    backlog_at_end: int
    drain_seconds: float
    drain_runs_per_second: float
    failed: int
    run_duration_p50_ms: float
    cpu_ms_per_run: float | None


def backlog(gw: Gateway, pipeline: str = "bench-code3") -> int:
    rows = gw.query(
        "SELECT count(*) FROM pipelines_runs WHERE pipeline_id = ? "
        "AND status IN ('pending', 'running')",
        pipeline,
    )
    return int(rows[0][0])


def wait_drained(gw: Gateway, stall: float = 60, pipeline: str = "bench-code3") -> float:
    """Wait until no run of ``pipeline`` is pending or running; returns how long it took.
    If the backlog stops shrinking for ``stall`` seconds, the stuck runs are shown and the
    store is copied to ``bench/results/pipelines-stuck.db`` for a post-mortem."""
    began = last_change = time.monotonic()
    last = backlog(gw, pipeline)
    while last:
        time.sleep(0.05)
        now, left = time.monotonic(), backlog(gw, pipeline)
        if left != last:
            last, last_change = left, now
        elif now - last_change > stall:
            rows = gw.query(
                "SELECT id, status, cursor, claims, lease_owner, lease_expires_ms, updated_ms "
                "FROM pipelines_runs WHERE pipeline_id = ? "
                "AND status IN ('pending', 'running') ORDER BY n LIMIT 10",
                pipeline,
            )
            copy = RESULTS_DIR / "pipelines-stuck.db"
            copy.parent.mkdir(parents=True, exist_ok=True)
            src = sqlite3.connect(f"file:{gw.db}?mode=ro", uri=True)
            with sqlite3.connect(copy) as dst:
                src.backup(dst)
            src.close()
            raise SystemExit(
                f"the backlog stopped draining at {left} runs for {stall} s (now_ms "
                f"{int(time.time() * 1000)}); first of them (id, status, cursor, claims, "
                f"lease_owner, lease_expires_ms, updated_ms): {rows}; store copied to {copy}; "
                f"gateway log tail:\n{gw.servers.log(GW)}"
            )
    return time.monotonic() - began


def runs_round(
    gw: Gateway,
    seconds: int,
    connections: int,
    script: Path,
    route: str = "start",
    pipeline: str = "bench-code3",
) -> RunsRound:
    """One measurement: ``connections`` wrk clients POST ``/pipelines/<pipeline>/<route>``
    for ``seconds`` (``start``: answered at once, the runs queue; ``run``: answered when
    the run has finished, so each client has one run in flight), then the backlog drains."""
    path = f"/pipelines/{pipeline}/{route}"
    target = Target(route, GW, path, url=gw.url(path), headers=dict(gw.servers.auth))
    wait_drained(gw, pipeline=pipeline)
    cpu0 = gw.servers.cpu(GW)
    t0 = time.time()
    # /run answers when the run ends: allow for a long queue.
    sample = run_wrk(target, seconds, connections, script, timeout=30 if route == "run" else 5)
    t1 = time.time()
    left = backlog(gw, pipeline)
    drain = wait_drained(gw, pipeline=pipeline)
    cpu1 = gw.servers.cpu(GW)
    lo, hi = int(t0 * 1000), int(t1 * 1000)
    rows = gw.query(
        "SELECT status, count(*) FROM pipelines_runs WHERE pipeline_id = ? "
        "AND created_ms >= ? AND created_ms <= ? GROUP BY status",
        pipeline,
        lo,
        hi,
    )
    by_status = dict(rows)
    done_in_window = gw.query(
        "SELECT count(*) FROM pipelines_runs WHERE pipeline_id = ? "
        "AND status = 'completed' AND finished_ms >= ? AND finished_ms <= ?",
        pipeline,
        lo,
        hi,
    )[0][0]
    durations = [
        float(r[0])
        for r in gw.query(
            "SELECT finished_ms - started_ms FROM pipelines_runs WHERE pipeline_id = ? "
            "AND created_ms >= ? AND created_ms <= ? AND status = 'completed'",
            pipeline,
            lo,
            hi,
        )
    ]
    created = sum(by_status.values())
    window = t1 - t0
    return RunsRound(
        seconds=round(window, 3),
        starts=sample.requests,
        start_rps=round(sample.rps, 1),
        start_p50_ms=sample.p50_ms,
        start_p99_ms=sample.p99_ms,
        start_errors=sample.errors,
        completed_in_window=int(done_in_window),
        runs_per_second=round(done_in_window / window, 1),
        backlog_at_end=left,
        drain_seconds=round(drain, 2),
        drain_runs_per_second=round(left / drain, 1) if drain > 0 and left else 0.0,
        failed=int(by_status.get("failed", 0)),
        run_duration_p50_ms=pct(durations, 0.5) if durations else 0.0,
        cpu_ms_per_run=(
            round((cpu1 - cpu0) / created * 1000, 3)
            if cpu0 is not None and cpu1 is not None and created
            else None
        ),
    )


def runs_summary(rounds: list[RunsRound]) -> dict[str, Any]:
    """Medians over the rounds, and every round."""

    def med(key: str) -> float:
        values = [getattr(r, key) for r in rounds if getattr(r, key) is not None]
        return round(statistics.median(values), 3) if values else 0.0

    keys: tuple[str, ...] = ("runs_per_second", "start_rps", "start_p50_ms", "start_p99_ms")
    keys += ("drain_runs_per_second", "run_duration_p50_ms", "cpu_ms_per_run")
    return {**{k: med(k) for k in keys}, "rounds": [vars(r) for r in rounds]}


def profile_round(
    gw: Gateway, seconds: int, connections: int, script: Path, out: Path, native: bool
) -> dict[str, Any]:
    """py-spy (raw, every thread, idle frames too) on the gateway during one extra round,
    its load and its drain; returns the top functions."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    argv = [spy, "record", "--pid", str(gw.servers.pid(GW)), "--rate", "200"]
    argv += ["--format", "raw", "--threads", "--idle", "--output", str(out)]
    # --native needs to pause the process for each sample; without it, sample non-blocking.
    argv.append("--native" if native else "--nonblocking")
    out.unlink(missing_ok=True)
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1)  # py-spy attaches
    runs_round(gw, seconds, connections, script)
    proc.send_signal(signal.SIGINT)  # py-spy writes its output and exits
    _, err = proc.communicate(timeout=120)
    if not out.exists():
        return {"error": err.decode(errors="replace")[-500:]}
    return summarize_profile(out)


def summarize_profile(path: Path, top: int = 12) -> dict[str, Any]:
    """From py-spy's raw output (``--threads --idle``): per thread, the share of samples
    by leaf function, and for the event-loop thread the share by inclusive function."""
    threads: dict[str, dict[str, int]] = {}
    inclusive: dict[str, int] = {}
    totals: dict[str, int] = {}

    def name(frame: str) -> str:
        func, _, where = frame.partition(" (")
        return f"{func} ({where.rsplit(':', 1)[0]})" if where else func

    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        thread = frames[0]
        frames = frames[1:]
        main = any("run_forever" in f for f in frames)
        key = "event loop" if main else ("aiosqlite" if "aiosqlite" in stack else thread)
        totals[key] = totals.get(key, 0) + n
        leaf = name(frames[-1]) if frames else "?"
        threads.setdefault(key, {})
        threads[key][leaf] = threads[key].get(leaf, 0) + n
        if main:
            for fn in {name(f) for f in frames}:
                inclusive[fn] = inclusive.get(fn, 0) + n

    def ranked(counts: dict[str, int], total: int) -> dict[str, float]:
        best = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        return {k: round(v / total, 3) for k, v in best}

    loop_total = totals.get("event loop", 0)
    return {
        "samples_by_thread": totals,
        "leaf_share_by_thread": {
            k: ranked(v, totals[k]) for k, v in threads.items() if k in ("event loop", "aiosqlite")
        },
        "event_loop_inclusive_share": ranked(inclusive, loop_total) if loop_total else {},
    }


# -- the run -----------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="one runs/s measurement")
    parser.add_argument("--rounds", type=int, default=3, help="runs/s rounds")
    parser.add_argument("--warmup", type=int, default=2, help="runs/s warm-up seconds")
    parser.add_argument("--connections", type=int, default=32, help="concurrent /start clients")
    parser.add_argument("--fanout-runs", type=int, default=5, help="gated runs, 3 steps each")
    parser.add_argument("--subscribers", type=int, default=100, help="SSE fan-out subscribers")
    parser.add_argument(
        "--memory-subscribers",
        type=int,
        nargs="+",
        default=[100, 1000],
        help="subscriber counts for the memory phase (ascending)",
    )
    parser.add_argument(
        "--max-concurrent-runs",
        type=int,
        default=4,
        help="[plugins.pipelines] max_concurrent_runs (the shipped default is 4)",
    )
    parser.add_argument(
        "--synchronous",
        choices=["full", "normal"],
        default="full",
        help="[storage] synchronous (the shipped default is full: an fsync per commit)",
    )
    parser.add_argument(
        "--profile", type=Path, help="py-spy the gateway during one extra runs/s round"
    )
    parser.add_argument(
        "--serialized-writes",
        action="store_true",
        help="run the gateway with bench/serialized_writes_experiment.py (not as shipped)",
    )
    parser.add_argument(
        "--no-run-route", action="store_true", help="skip the informational /run rounds"
    )
    parser.add_argument("--native", action="store_true", help="py-spy --native (C frames)")
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["memory", "fanout", "runs", "isolation"]
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not {"runs", "isolation"} <= set(args.skip) and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")

    info = machine(extra_packages=["sqlalchemy", "aiosqlite"])
    print_machine(info)
    print(
        f"runs/s: wrk -t1 -c{args.connections}, {args.rounds} rounds x {args.seconds} s after "
        f"{args.warmup} s warm-up, max_concurrent_runs = {args.max_concurrent_runs}; fan-out: "
        f"{args.fanout_runs} runs x 3 steps x {args.subscribers} subscribers; memory: "
        f"0, {', '.join(map(str, args.memory_subscribers))} subscribers"
    )
    load_before = load_average()
    token = secrets.token_urlsafe(32)
    result: dict[str, Any] = {}
    rounds: list[RunsRound] = []
    run_rounds: list[RunsRound] = []
    isolation_rounds: dict[str, list[RunsRound]] = {name: [] for name in ISOLATIONS}
    tracebacks: list[str] = []
    with tempfile.TemporaryDirectory(prefix="gw-pipelines-bench-") as tmpdir:
        tmp = Path(tmpdir)
        directory = tmp / "pipelines"
        directory.mkdir()
        (directory / "bench_pipelines.py").write_text(PIPELINES_MODULE, encoding="utf-8")
        servers = Servers(tmp, token)
        try:
            config = servers.gateway_config(
                GW, pipelines_config(directory, args.max_concurrent_runs, args.synchronous)
            )
            if args.serialized_writes:
                experiment = BENCH_DIR / "serialized_writes_experiment.py"
                servers.start(GW, [str(experiment), "--config", str(config)])
            else:
                servers.start(GW, serve_args(config))
            servers.wait(GW, "/health", False)
            gw = Gateway(servers, tmp / f"{GW}-state" / "gateway.db")
            expect_status(gw.url("/pipelines/bench-code3/start"), {}, 401, method="POST")
            _, raw = request("GET", gw.url("/pipelines"), servers.auth)
            listed = {p["id"] for p in json.loads(raw)["pipelines"]}
            if not {*ISOLATIONS.values(), "bench-gated", "bench-held"} <= listed:
                raise SystemExit(f"bench pipelines not loaded: {raw[:500]!r}")
            check = gw.start("bench-code3", {})
            wait_status(gw, check, ("completed",))
            if gw.run(check)["output"] != {"c": 3}:
                raise SystemExit(f"unexpected output: {gw.run(check)}")
            script = tmp / "start.lua"
            script.write_text(post_lua(json.dumps({"input": {}})), encoding="utf-8")

            if "memory" not in args.skip:
                print("memory per open SSE subscriber (one bench-held run):", flush=True)
                result["memory"] = asyncio.run(memory_phase(gw, args.memory_subscribers))
            if "fanout" not in args.skip:
                print(
                    f"step completion -> event at {args.subscribers} SSE subscribers:", flush=True
                )
                result["fanout"] = asyncio.run(fanout_phase(gw, args.fanout_runs, args.subscribers))
            if "runs" not in args.skip:
                print(
                    f"runs per second, {args.connections} clients on /start (and, "
                    "informational, on /run: each client waits for its run):",
                    flush=True,
                )
                run_script = tmp / "run.lua"
                run_script.write_text(
                    post_lua(json.dumps({"input": {}, "wait_seconds": 60})), encoding="utf-8"
                )
                if args.warmup > 0:
                    runs_round(gw, args.warmup, args.connections, script)
                for i in range(args.rounds):
                    # Alternate /start and /run so drift in the machine's load hits both.
                    order = ["start", "run"] if i % 2 == 0 else ["run", "start"]
                    for route in order if not args.no_run_route else ["start"]:
                        r = runs_round(
                            gw,
                            args.seconds,
                            args.connections,
                            script if route == "start" else run_script,
                            route,
                        )
                        (rounds if route == "start" else run_rounds).append(r)
                        print(
                            f"  round {i + 1} /{route:<5} {r.runs_per_second:6.1f} runs/s "
                            f"completed  {r.start_rps:6.1f} req/s (p50 {r.start_p50_ms:7.2f} ms, "
                            f"p99 {r.start_p99_ms:7.2f} ms)  backlog {r.backlog_at_end} drained "
                            f"in {r.drain_seconds:.1f} s ({r.drain_runs_per_second:.1f} runs/s)"
                            f"  {fmt(r.cpu_ms_per_run, '.2f')} ms CPU/run",
                            flush=True,
                        )
            if "isolation" not in args.skip:
                print(
                    f"step isolation: runs per second, {args.connections} clients on /start of "
                    f"{', '.join(ISOLATIONS.values())}, rounds alternating:",
                    flush=True,
                )
                names = list(ISOLATIONS)
                for name in names:  # each variant warmed (the process pool started)
                    runs_round(gw, 1, args.connections, script, pipeline=ISOLATIONS[name])
                for i in range(args.rounds):
                    for name in names[i % len(names) :] + names[: i % len(names)]:
                        r = runs_round(
                            gw, args.seconds, args.connections, script, pipeline=ISOLATIONS[name]
                        )
                        isolation_rounds[name].append(r)
                        print(
                            f"  round {i + 1} {name:<7} {r.runs_per_second:6.1f} runs/s "
                            f"completed, drained at {r.drain_runs_per_second:.1f} runs/s, "
                            f"{fmt(r.cpu_ms_per_run, '.2f')} ms CPU/run",
                            flush=True,
                        )
            if "runs" not in args.skip and args.profile:
                result["profile"] = profile_round(
                    gw,
                    args.seconds,
                    args.connections,
                    script,
                    args.profile.resolve(),
                    args.native,
                )
                print(f"  py-spy raw profile: {args.profile}")
        finally:
            servers.stop()
            log = (tmp / f"{GW}.log").read_text(errors="replace")
            # The last line of each traceback: the exception.
            for block in log.split("Traceback (most recent call last):")[1:]:
                lines = [x for x in block.splitlines() if x and not x.startswith(" ")]
                last = lines[0] if lines else "?"
                tracebacks.append(re.sub(r"[0-9a-f]{32}", "<run id>", last))
    load_after = load_average()

    out: dict[str, Any] = {
        **result_head("pipelines", info, load_before, load_after),
        "settings": {
            "connections": args.connections,
            "rounds": args.rounds,
            "seconds": args.seconds,
            "warmup_seconds": args.warmup,
            "max_concurrent_runs": args.max_concurrent_runs,
            "storage_synchronous": args.synchronous,
            "gateway": (
                "bench/serialized_writes_experiment.py"
                if args.serialized_writes
                else "python -m host.cli serve --no-access-log"
            ),
            "fanout_runs": args.fanout_runs,
            "subscribers": args.subscribers,
            "memory_subscribers": args.memory_subscribers,
            "workers": 1,
        },
    }
    errors = 0
    print()
    if rounds:
        errors += sum(r.start_errors + r.failed for r in rounds + run_rounds)
        out["runs"] = runs_summary(rounds)
        s = out["runs"]
        print(
            f"runs/s (completed, {args.connections} clients on /start, max_concurrent_runs "
            f"{args.max_concurrent_runs}): {s['runs_per_second']:.1f}; starts accepted "
            f"{s['start_rps']:.1f}/s, start latency p50 {s['start_p50_ms']:.2f} ms, p99 "
            f"{s['start_p99_ms']:.2f} ms; backlog drains at {s['drain_runs_per_second']:.1f} "
            f"runs/s; {s['cpu_ms_per_run']:.2f} ms gateway CPU per run; run p50 "
            f"{s['run_duration_p50_ms']:.0f} ms from claim to completion"
        )
    if run_rounds:
        out["runs_via_run_route"] = s = runs_summary(run_rounds)
        print(
            f"(informational) {args.connections} clients on /run, each waiting for its run: "
            f"{s['runs_per_second']:.1f} runs/s completed, request p50 {s['start_p50_ms']:.1f} "
            f"ms, p99 {s['start_p99_ms']:.1f} ms; {s['cpu_ms_per_run']:.2f} ms gateway CPU per run"
        )
    if all(isolation_rounds.values()):
        errors += sum(r.start_errors + r.failed for rs in isolation_rounds.values() for r in rs)
        iso = {name: runs_summary(rs) for name, rs in isolation_rounds.items()}

        def ratio(name: str, key: str) -> float | None:
            base = iso["loop"][key]
            return round(iso[name][key] / base, 3) if base else None

        out["isolation"] = iso
        for name in ("thread", "process"):
            for key, label in (("runs_per_second", ""), ("drain_runs_per_second", "_drain")):
                out["isolation"][f"{name}_over_loop{label}"] = ratio(name, key)
        print(
            "step isolation, median runs/s completed under load / draining (cpu ms/run): "
            + ", ".join(
                f"{name} {iso[name]['runs_per_second']:.1f} / "
                f"{iso[name]['drain_runs_per_second']:.1f} ({iso[name]['cpu_ms_per_run']:.2f})"
                for name in ISOLATIONS
            )
            + "; ratio to loop: thread "
            + f"{fmt(ratio('thread', 'runs_per_second'), '.3f')} / "
            + f"{fmt(ratio('thread', 'drain_runs_per_second'), '.3f')}, process "
            + f"{fmt(ratio('process', 'runs_per_second'), '.3f')} / "
            + fmt(ratio("process", "drain_runs_per_second"), ".3f")
        )
    if "fanout" in result:
        f = result["fanout"]
        a, b = f["step_return_to_receipt"], f["release_to_receipt"]
        print(
            f"step completion -> event at {f['subscribers']} subscribers ({f['samples']} "
            f"deliveries): from the step's return p50 {a['p50_ms']:.2f} ms, p99 "
            f"{a['p99_ms']:.2f} ms; from the release p50 {b['p50_ms']:.2f} ms, p99 "
            f"{b['p99_ms']:.2f} ms; first subscriber p50 "
            f"{f['first_subscriber_after_step_return']['p50_ms']:.2f} ms, last p50 "
            f"{f['last_subscriber_after_step_return']['p50_ms']:.2f} ms"
        )
        out["fanout"] = f
    if "memory" in result:
        m = result["memory"]
        per = ", ".join(f"{k}: {v / 1024:.1f} KiB" for k, v in m["bytes_per_subscriber"].items())
        print(
            f"memory per open SSE subscriber: {m['bytes_per_subscriber_overall'] / 1024:.1f} KiB "
            f"overall ({per})"
        )
        out["memory"] = m
    if "profile" in result:
        out["profile"] = result["profile"]
    print(
        f"machine: {info['cpu']}, {info['cores']} cores; load average (1 min) before/after: "
        f"{load_before[0]:.2f} / {load_after[0]:.2f}"
    )
    out["errors"] = errors
    out["gateway_tracebacks"] = {t: tracebacks.count(t) for t in sorted(set(tracebacks))}
    if tracebacks:
        print(
            f"warning: the gateway logged {len(tracebacks)} tracebacks: {out['gateway_tracebacks']}"
        )
    if errors:
        print(f"warning: {errors} failed starts or failed runs")
    write_results(args.output, out)
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
