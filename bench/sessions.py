"""Sessions and memory: appends per second (one session, many sessions) and memory search
latency over 100,000 entries.

One run starts ``python -m host.cli serve --no-access-log`` as shipped (one worker, state
in a temp dir, SQLite by default or ``--store-url postgresql+asyncpg://...``, a token
whose rate limit is never reached), then:

1. appends to one session: ``wrk -t1 -c32`` POSTs ``/gateway/sessions/bench-one/append``
   (every request appends to the same session, so every append waits for the previous
   one's lock on the session row); rounds of N seconds, medians;
2. appends to many sessions: the same, each request to another session key
   (``bench-many-<n>``, a counter in the wrk script), alternating with (1) round by round;
3. after the load, a check that the store holds every append wrk counted (a lost
   update would show as fewer messages than 201 answers) and that one session's
   ``seq`` runs 1..N without a gap;
4. memory search: 100,000 entries written straight into the store in batches of 5,000
   (the plugin's tables, through SQLAlchemy Core: the full-text index is kept by the
   store as for any write), their words drawn from a Zipf-distributed vocabulary of
   5,000 made-up words; then ``GET /gateway/memory/bench-memory?query=<2 words>&limit=10``
   sequentially (one client), queries drawn from the same distribution, p50/p90/p99 of
   the client's latency.

Results go to ``bench/results/sessions.json`` (``sessions-postgresql.json`` on
PostgreSQL). Run: ``.venv/bin/python bench/sessions.py`` (about 4 minutes with the
defaults; ``--postgres`` starts a PostgreSQL server of its own, as the tests do).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import random
import secrets
import statistics
import sys
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent))
from common import (  # noqa: E402
    RESULTS_DIR,
    WRK_LUA,
    Servers,
    Target,
    expect_status,
    load_average,
    machine,
    pct,
    print_machine,
    request,
    result_head,
    run_wrk,
    serve_args,
    summarize,
    with_cpu,
    write_results,
)

GW = "gateway"
MESSAGE = {"role": "user", "content": "a benchmark message of about sixty characters, give or take"}
MEMORY_KEY = "bench-memory"


def one_session_lua() -> str:
    return (
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(json.dumps(MESSAGE))}\n"
        'wrk.headers["Content-Type"] = "application/json"\n' + WRK_LUA
    )


def many_sessions_lua(run: str) -> str:
    """Each request to the next session key: ``bench-many-<run>-<n>``."""
    return (
        'wrk.headers["Content-Type"] = "application/json"\n'
        "local n = 0\n"
        "request = function()\n"
        "  n = n + 1\n"
        f'  local path = "/gateway/sessions/bench-many-{run}-" .. n .. "/append"\n'
        f'  return wrk.format("POST", path, nil, {json.dumps(json.dumps(MESSAGE))})\n'
        "end\n" + WRK_LUA
    )


# -- the memory corpus -------------------------------------------------------------------

SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "te", "vi", "zo", "pe", "da", "fu", "go", "hi"]


def vocabulary(size: int, rng: random.Random) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def zipf_weights(size: int) -> list[float]:
    return [1.0 / (rank + 1) for rank in range(size)]


async def load_memory(url: str, entries: int, words: list[str], weights: list[float]) -> float:
    """Write ``entries`` memory entries into one session, straight into the store."""
    import sqlalchemy as sa

    from host.api import Store
    from plugins.sessions.tables import MIGRATIONS, memory, sessions

    rng = random.Random(7)
    store = Store(url)
    await store.open(MIGRATIONS)
    started = time.perf_counter()
    now = int(time.time() * 1000)
    session_id = uuid.uuid4().hex
    try:
        async with store.write() as conn:
            await conn.execute(
                sa.insert(sessions).values(
                    id=session_id,
                    owner="token:bench",
                    key=MEMORY_KEY,
                    source="api",
                    user=None,
                    head_id=None,
                    next_seq=1,
                    message_count=0,
                    metadata={},
                    document=None,
                    document_updated_ms=None,
                    created_ms=now,
                    updated_ms=now,
                )
            )
        types = ["identity", "goal", "decision", "todo", "preference", "fact", "event"]
        batch = 5000
        for start in range(0, entries, batch):
            rows = []
            for n in range(start, min(entries, start + batch)):
                summary = " ".join(rng.choices(words, weights, k=rng.randint(6, 14)))
                facts = [" ".join(rng.choices(words, weights, k=5))]
                rows.append(
                    {
                        "session_id": session_id,
                        "entry_id": f"e{n}",
                        "summary": summary,
                        "tags": [],
                        "tags_text": "",
                        "facts": facts,
                        "memory_type": types[n % len(types)],
                        "importance": round(rng.random(), 3),
                        "workspace_id": None,
                        "channel_id": None,
                        "actor_id": None,
                        "relations": [],
                        "source_event_key": None,
                        "search_text": "\n".join([summary, *facts]),
                        "created_ms": now - n * 1000,
                        "updated_ms": now - n * 1000,
                        "last_accessed_ms": None,
                        "access_count": 0,
                        "deleted_ms": None,
                    }
                )
            async with store.write() as conn:
                await conn.execute(sa.insert(memory), rows)
    finally:
        await store.close()
    return time.perf_counter() - started


def search_latencies(
    servers: Servers, queries: list[str], limit: int
) -> tuple[list[float], list[int]]:
    latencies: list[float] = []
    found: list[int] = []
    for query in queries:
        path = f"/gateway/memory/{MEMORY_KEY}?" + urllib.parse.urlencode(
            {"query": query, "limit": limit}
        )
        started = time.perf_counter()
        status, body = request("GET", servers.url(GW, path), servers.auth)
        latencies.append((time.perf_counter() - started) * 1000)
        if status != 200:
            raise SystemExit(f"search answered {status}: {body[:300]!r}")
        found.append(len(json.loads(body)["entries"]))
    return latencies, found


def store_count(servers: Servers, key: str) -> tuple[int, list[int]]:
    status, body = request(
        "GET", servers.url(GW, f"/gateway/sessions/{key}?limit=1000"), servers.auth
    )
    if status != 200:
        raise SystemExit(f"session {key}: {status} {body[:300]!r}")
    detail = json.loads(body)
    return int(detail["message_count"]), [int(m["seq"]) for m in detail["entries"]]


def listed_messages(servers: Servers, prefix: str) -> int:
    total, offset = 0, 0
    while True:
        path = f"/gateway/sessions?limit=500&offset={offset}"
        _, body = request("GET", servers.url(GW, path), servers.auth)
        page = json.loads(body)
        total += sum(
            s["message_count"] for s in page["sessions"] if s["session_key"].startswith(prefix)
        )
        if page["next_offset"] is None:
            return total
        offset = page["next_offset"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--store-url", default=None, help="PostgreSQL URL (default SQLite)")
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="start a PostgreSQL server of its own for the run (tests/pg.py)",
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=["appends", "search"])
    args = parser.parse_args()
    info = machine(["sqlalchemy", "aiosqlite", "asyncpg"])
    print_machine(info)
    load_before = load_average()
    token = secrets.token_urlsafe(32)
    result: dict[str, Any] = {}
    postgres = None
    if args.postgres:
        from tests import pg

        postgres = pg.start_server()
        args.store_url = postgres.url(postgres.create_database())
    try:
        run(args, token, result)
    finally:
        if postgres is not None:
            postgres.stop()
    head = result_head("sessions", info, load_before, load_average())
    name = "sessions-postgresql" if args.store_url else "sessions"
    write_results(RESULTS_DIR / f"{name}.json", {**head, **result})


def run(args: argparse.Namespace, token: str, result: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory(prefix="gw-sessions-bench-") as tmpdir:
        tmp = Path(tmpdir)
        servers = Servers(tmp, token)
        extra = f'[storage]\nurl = "{args.store_url}"\n' if args.store_url else ""
        config = servers.gateway_config(GW, extra)
        url = args.store_url or f"sqlite+aiosqlite:///{tmp / f'{GW}-state' / 'gateway.db'}"
        result["store"] = "postgresql" if args.store_url else "sqlite"
        try:
            servers.start(GW, serve_args(config))
            servers.wait(GW, "/health", False)
            append_url = servers.url(GW, "/gateway/sessions/bench-one/append")
            expect_status(append_url, {}, 401, method="POST")
            if "appends" not in args.skip:
                result["appends"] = appends_phase(servers, tmp, args)
            if "search" not in args.skip:
                result["search"] = search_phase(servers, url, args)
        finally:
            servers.stop()


def appends_phase(servers: Servers, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    print(f"appends per second, wrk -t1 -c{args.connections}:", flush=True)
    one_script = tmp / "one.lua"
    one_script.write_text(one_session_lua(), encoding="utf-8")
    path = "/gateway/sessions/bench-one/append"
    one = Target("one session", GW, path, True, url=servers.url(GW, path), headers=servers.auth)
    rounds: dict[str, list[Any]] = {"one": [], "many": []}
    for n in range(args.rounds):
        sample = with_cpu(
            servers, GW, lambda: run_wrk(one, args.seconds, args.connections, one_script)
        )
        rounds["one"].append(sample)
        many_script = tmp / f"many-{n}.lua"
        many_script.write_text(many_sessions_lua(str(n)), encoding="utf-8")
        url = servers.url(GW, "/gateway/sessions/x/append")  # the script names the path
        many = Target("many sessions", GW, "", True, url=url, headers=servers.auth)
        sample = with_cpu(
            servers,
            GW,
            functools.partial(run_wrk, many, args.seconds, args.connections, many_script),
        )
        rounds["many"].append(sample)
        print(
            f"  round {n + 1}: one session {rounds['one'][-1].rps:.0f}/s, "
            f"many sessions {rounds['many'][-1].rps:.0f}/s",
            flush=True,
        )
    out = {name: summarize(samples) for name, samples in rounds.items()}
    answered = sum(s.requests - s.errors for s in rounds["one"])
    stored, seqs = store_count(servers, "bench-one")
    # wrk does not count the requests in flight when it stops: the store may hold more.
    out["one"]["stored_messages"] = stored
    out["one"]["answered_201"] = answered
    out["one"]["no_lost_append"] = stored >= answered and seqs == list(
        range(1, min(stored, 1000) + 1)
    )
    out["many"]["stored_messages"] = listed_messages(servers, "bench-many-")
    out["many"]["answered_201"] = sum(s.requests - s.errors for s in rounds["many"])
    for name in ("one", "many"):
        figures = out[name]
        print(
            f"  {name}: {figures['rps']:.0f} appends/s, p50 {figures['p50_ms']:.1f} ms, "
            f"p99 {figures['p99_ms']:.1f} ms, {figures['cpu_us_per_request']} µs CPU/append, "
            f"stored {figures['stored_messages']} >= answered {figures['answered_201']}, "
            f"errors {figures['errors']}",
            flush=True,
        )
    return out


def search_phase(servers: Servers, url: str, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(11)
    words = vocabulary(5000, rng)
    weights = zipf_weights(len(words))
    print(f"loading {args.entries} memory entries into the store...", flush=True)
    seconds = asyncio.run(load_memory(url, args.entries, words, weights))
    print(f"  loaded in {seconds:.1f} s ({args.entries / seconds:.0f} entries/s)", flush=True)
    queries = [" ".join(rng.choices(words, weights, k=2)) for _ in range(args.queries)]
    search_latencies(servers, queries[:20], 10)  # warm-up: caches, the first plan
    latencies, found = search_latencies(servers, queries, 10)
    out = {
        "entries": args.entries,
        "load_seconds": round(seconds, 1),
        "queries": len(queries),
        "p50_ms": round(pct(latencies, 0.5), 2),
        "p90_ms": round(pct(latencies, 0.9), 2),
        "p99_ms": round(pct(latencies, 0.99), 2),
        "mean_ms": round(statistics.fmean(latencies), 2),
        "empty_results": sum(1 for n in found if n == 0),
    }
    print(
        f"  search over {args.entries} entries, {len(queries)} two-word queries, one client: "
        f"p50 {out['p50_ms']} ms, p90 {out['p90_ms']} ms, p99 {out['p99_ms']} ms "
        f"({out['empty_results']} found nothing)",
        flush=True,
    )
    return out


if __name__ == "__main__":
    main()
