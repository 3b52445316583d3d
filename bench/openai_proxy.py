"""OpenAI proxy overhead: the upstream directly, the gateway, and the LiteLLM proxy.

One run starts, on free loopback ports, each one worker with no access log:

* ``direct``: ``bench/upstream_app.py``, a raw-asyncio OpenAI-compatible upstream (a fixed
  completion; streams of 20 chunks 5 ms apart, the first at once);
* ``gateway``: ``python -m host.cli serve --no-access-log`` as shipped, with
  ``[models.bench] provider = "openai"`` pointing at the upstream and a token whose rate
  limit is never reached;
* ``litellm``: the LiteLLM proxy (``litellm --config ... --num_workers 1``), from a
  separate virtualenv ``bench/.venv-litellm`` that this script creates on first use
  (``pip install 'litellm[proxy]'``), model ``bench`` -> ``openai/bench-model`` at the same
  upstream, telemetry, callbacks and spend logs off. If it cannot be installed or
  started the script says so and measures the other two.

Measured for each target, in alternating rounds (A B C, then C B A, ...) so drift in the
machine's load hits all alike, medians reported:

* non-streaming ``POST /v1/chat/completions`` under load: ``wrk -t1 -c16`` with a Lua
  script (requests/s, p50, p99, server CPU per request from ``/proc``);
* the same at one connection (the latency a proxy adds without queueing);
* streaming time to first token: a raw-socket keep-alive client sends ``stream: true``
  requests one at a time and times from the request's first byte to the first
  ``data:`` event carrying content; p50 and p99.

Results go to ``bench/results/openai_proxy.json``.
Run: ``.venv/bin/python bench/openai_proxy.py`` (about 3 minutes, plus the one-time
LiteLLM install).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from common import (  # noqa: E402
    RESULTS_DIR,
    TEAMS_TOKEN,
    TOKEN_ENV,
    Sample,
    Servers,
    Target,
    fmt,
    free_port,
    load_average,
    machine,
    one_model,
    pct,
    post,
    post_lua,
    print_machine,
    result_head,
    run_wrk,
    serve_args,
    summarize,
    teams_models,
    with_cpu,
    write_results,
)
from upstream_app import CONTENT  # noqa: E402

RESULTS = RESULTS_DIR / "openai_proxy.json"
LITELLM_VENV = BENCH_DIR / ".venv-litellm"
PATH = "/v1/chat/completions"
TARGET_THROUGHPUT_RATIO = 20.0  # gateway req/s >= 20 x LiteLLM's (issue 15)
TARGET_ADDED_P50_MS = 2.0  # gateway p50 - direct p50 (issue 4; below the stack's floor)
TARGET_ADDED_TTFT_MS = 1.0  # gateway TTFT p50 - direct TTFT p50 (issue 4; idem)
TARGET_FLOOR_SHARE = 0.90  # gateway req/s >= 90 % of the floor's (issue 15)
TARGET_TTFT_OVER_FLOOR_MS = 0.3  # gateway TTFT p50 - floor TTFT p50 (issue 15)
LOAD_KEYS = ("p50_ms", "p99_ms")  # latency figures reported per load measurement
PROMPT = [{"role": "user", "content": "Say something short."}]


@dataclass
class Proxy:
    """One target: its name, the server process answering, and the model it is asked for."""

    key: str
    label: str
    server: str
    model: str
    url: str = ""
    headers: dict[str, str] | None = None

    def target(self) -> Target:
        return Target(self.label, self.server, PATH, url=self.url, headers=dict(self.headers or {}))

    def body(self, stream: bool) -> str:
        obj: dict[str, Any] = {"model": self.model, "messages": PROMPT}
        if stream:
            obj["stream"] = True
        return json.dumps(obj, separators=(",", ":"))


# -- LiteLLM -----------------------------------------------------------------------------


def ensure_litellm(venv: Path) -> tuple[Path | None, str]:
    """The ``litellm`` executable of the bench virtualenv, installing it on first use.
    Returns (None, reason) when it cannot be had."""
    exe = venv / "bin" / "litellm"
    if exe.exists():
        return exe, ""
    print(f"installing the LiteLLM proxy into {venv} (one time, a few minutes) ...", flush=True)
    log = venv.parent / "litellm-install.log"
    try:
        venv.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            subprocess.run(
                [sys.executable, "-m", "venv", str(venv)], check=True, stdout=out, stderr=out
            )
            pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
            subprocess.run(
                [*pip, "litellm[proxy]"], check=True, stdout=out, stderr=out, timeout=1200
            )
    except (OSError, subprocess.SubprocessError) as exc:
        tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
        return None, f"pip install 'litellm[proxy]' failed ({exc}); see {log}:\n{tail}"
    if not exe.exists():
        return None, f"{exe} missing after the install; see {log}"
    return exe, ""


def litellm_version(venv: Path) -> str | None:
    try:
        out = subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-c",
                "from importlib.metadata import version as v; "
                "print(v('litellm'), v('uvicorn'), v('fastapi'), v('httpx'), v('aiohttp'))",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    names = ["litellm", "uvicorn", "fastapi", "httpx", "aiohttp"]
    return ", ".join(f"{n} {v}" for n, v in zip(names, out, strict=False)) or None


LITELLM_CONFIG = """\
model_list:
  - model_name: bench
    litellm_params:
      model: openai/bench-model
      api_base: {api_base}
      api_key: dummy
litellm_settings:
  telemetry: false
  set_verbose: false
  json_logs: false
  turn_off_message_logging: true
  success_callback: []
  failure_callback: []
  callbacks: []
general_settings:
  disable_spend_logs: true
  disable_error_logs: true
"""

LITELLM_ENV = {
    "LITELLM_LOG": "ERROR",  # also lowers uvicorn's log level: no access log
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the cost map at start-up
    "LITELLM_TELEMETRY": "False",
    "DISABLE_ADMIN_UI": "True",
    "NO_DOCS": "True",
}


# -- servers -----------------------------------------------------------------------------


def check_target(proxy: Proxy) -> None:
    """One completion and one stream through the target, checked for the upstream's text."""
    status, raw = post(proxy.url, proxy.body(False), proxy.headers or {})
    if status != 200:
        raise SystemExit(f"{proxy.label}: POST {PATH} answered {status}: {raw[:300]!r}")
    content = json.loads(raw)["choices"][0]["message"]["content"]
    if content != CONTENT:
        raise SystemExit(f"{proxy.label}: unexpected completion {content!r}")
    result = asyncio.run(stream_once_fresh(proxy))
    if not result.ok:
        raise SystemExit(f"{proxy.label}: the stream failed: {result.error}")


# -- streaming time to first token -------------------------------------------------------


@dataclass
class StreamResult:
    ok: bool
    ttft_s: float = 0.0
    total_s: float = 0.0
    content_chunks: int = 0
    error: str = ""


class StreamClient:
    """HTTP/1.1 keep-alive client for SSE responses, over a raw asyncio connection."""

    def __init__(self, proxy: Proxy) -> None:
        parts = urlsplit(proxy.url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        body = proxy.body(True).encode()
        lines = [
            f"POST {parts.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Content-Type: application/json",
            "Accept: text/event-stream",
            f"Content-Length: {len(body)}",
        ]
        lines += [f"{k}: {v}" for k, v in (proxy.headers or {}).items()]
        self.request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None

    async def once(self) -> StreamResult:
        for attempt in (1, 2):
            reused = self.writer is not None
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            reader, writer = self.reader, self.writer
            assert reader is not None and writer is not None
            try:
                return await asyncio.wait_for(self._exchange(reader, writer), 30)
            except (OSError, asyncio.IncompleteReadError) as exc:
                await self.close()
                # A kept-alive connection the server closed while idle (uvicorn closes
                # them after 5 s): try once more on a new one, as HTTP clients do.
                if not (reused and attempt == 1):
                    return StreamResult(False, error=f"{type(exc).__name__}: {exc}")
            except (TimeoutError, ValueError) as exc:
                await self.close()
                return StreamResult(False, error=f"{type(exc).__name__}: {exc}")
        raise AssertionError("unreachable")

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> StreamResult:
        start = time.perf_counter()
        writer.write(self.request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        chunked = b"transfer-encoding: chunked" in lower
        close = b"connection: close" in lower
        first: float | None = None
        chunks = 0
        done = False
        pending = b""

        def scan(data: bytes) -> None:
            nonlocal pending, first, chunks, done
            pending += data.replace(b"\r\n", b"\n")
            while b"\n\n" in pending:
                event, pending = pending.split(b"\n\n", 1)
                for line in event.split(b"\n"):
                    if not line.startswith(b"data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        done = True
                        continue
                    obj = json.loads(payload)
                    for choice in obj.get("choices") or []:
                        if (choice.get("delta") or {}).get("content"):
                            chunks += 1
                            if first is None:
                                first = time.perf_counter()

        if chunked:
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                scan((await reader.readexactly(size + 2))[:-2])
        else:
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in lower.split(b"\r\n")
                    if line.startswith(b"content-length:")
                ),
                None,
            )
            if length is None:
                scan(await reader.read())
                close = True
            else:
                scan(await reader.readexactly(length))
        end = time.perf_counter()
        if close:
            await self.close()
        if status != 200 or first is None or not done:
            return StreamResult(
                False, error=f"status {status}, content chunks {chunks}, [DONE] seen: {done}"
            )
        return StreamResult(True, first - start, end - start, chunks)


async def stream_once_fresh(proxy: Proxy) -> StreamResult:
    client = StreamClient(proxy)
    try:
        return await client.once()
    finally:
        await client.close()


async def stream_batch(client: StreamClient, count: int) -> list[StreamResult]:
    return [await client.once() for _ in range(count)]


# -- the run -----------------------------------------------------------------------------


def stream_summary(results: list[StreamResult], per_round: list[float]) -> dict[str, Any]:
    good = [r for r in results if r.ok]
    ttft = [r.ttft_s * 1000 for r in good]
    total = [r.total_s * 1000 for r in good]
    return {
        "requests": len(results),
        "failed": len(results) - len(good),
        "errors": sorted({r.error for r in results if not r.ok})[:5],
        "ttft_p50_ms": round(pct(ttft, 0.5), 3) if ttft else None,
        "ttft_p99_ms": round(pct(ttft, 0.99), 3) if ttft else None,
        "ttft_p50_ms_per_round": [round(x, 3) for x in per_round],
        "stream_total_p50_ms": round(pct(total, 0.5), 3) if total else None,
        "content_chunks": good[0].content_chunks if good else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="one loaded measurement")
    parser.add_argument("--single-seconds", type=int, default=2, help="one 1-connection run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds per target")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--streams", type=int, default=200, help="TTFT requests per target")
    parser.add_argument("--chunks", type=int, default=20, help="chunks per upstream stream")
    parser.add_argument("--delay-ms", type=float, default=5.0, help="between upstream chunks")
    parser.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM proxy")
    parser.add_argument("--litellm-venv", type=Path, default=LITELLM_VENV)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")

    litellm_exe: Path | None = None
    litellm_note = "skipped (--no-litellm)"
    if not args.no_litellm:
        litellm_exe, litellm_note = ensure_litellm(args.litellm_venv)
        if litellm_exe is None:
            print(f"\n*** LiteLLM is NOT measured: {litellm_note}\n", flush=True)

    info = machine(extra_packages=["aiohttp"])
    info["litellm"] = litellm_version(args.litellm_venv) if litellm_exe else None
    print_machine(info)
    if info["litellm"]:
        print(f"litellm venv: {info['litellm']}")
    print(
        f"load: wrk -t1 -c{args.connections} and -c1, {args.rounds} rounds x {args.seconds} s "
        f"(+{args.single_seconds} s at 1 connection) after {args.warmup} s warm-up; "
        f"TTFT: {args.streams} sequential streams per target; upstream streams "
        f"{args.chunks} chunks {args.delay_ms:g} ms apart"
    )
    load_before = load_average()

    token = secrets.token_urlsafe(32)
    litellm_key = "sk-" + secrets.token_hex(32)  # LiteLLM refuses to start without one
    samples: dict[str, list[Sample]] = {}
    singles: dict[str, list[Sample]] = {}
    streams: dict[str, list[StreamResult]] = {}
    stream_rounds: dict[str, list[float]] = {}
    litellm_started = False
    with tempfile.TemporaryDirectory(prefix="gw-proxy-bench-") as tmpdir:
        tmp = Path(tmpdir)
        servers = Servers(tmp, token, cpu_tree=True)
        try:
            up_port = free_port()
            servers.ports["upstream"] = up_port
            servers.start(
                "upstream",
                [
                    str(BENCH_DIR / "upstream_app.py"),
                    "--port",
                    str(up_port),
                    "--chunks",
                    str(args.chunks),
                    "--delay-ms",
                    str(args.delay_ms),
                ],
            )
            api_base = f"http://127.0.0.1:{up_port}/v1"

            # Access, budgets and routing on (common.teams_models, TEAMS_TOKEN).
            models = teams_models(api_base)
            token_extra = TEAMS_TOKEN

            def gateway_config(name: str) -> Path:
                return servers.gateway_config(name, models, token_extra)

            servers.start("gateway", serve_args(gateway_config("gateway")))
            # The same gateway with one model and no access list or budgets, for what
            # those cost.
            plain_models = one_model(api_base)
            servers.start("plain", serve_args(servers.gateway_config("plain", plain_models)))
            floor_port = servers.ports["floor"] = free_port()
            servers.start(
                "floor",
                [
                    str(BENCH_DIR / "bare_proxy_app.py"),
                    "--bind",
                    f"127.0.0.1:{floor_port}",
                    "--upstream",
                    api_base,
                ],
            )
            # The least a proxy that checks what it forwards does (bare_proxy_app.py).
            checks_port = servers.ports["checks"] = free_port()
            servers.start(
                "checks",
                [
                    str(BENCH_DIR / "bare_proxy_app.py"),
                    "--bind",
                    f"127.0.0.1:{checks_port}",
                    "--upstream",
                    api_base,
                    "--checks-token-env",
                    TOKEN_ENV,
                ],
            )
            if litellm_exe is not None:
                ll_port = free_port()
                servers.ports["litellm"] = ll_port
                ll_config = tmp / "litellm.yaml"
                ll_config.write_text(LITELLM_CONFIG.format(api_base=api_base), encoding="utf-8")
                servers.start_exe(
                    "litellm",
                    [
                        str(litellm_exe),
                        "--config",
                        str(ll_config),
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(ll_port),
                        "--num_workers",
                        "1",
                    ],
                    {**LITELLM_ENV, "LITELLM_MASTER_KEY": litellm_key},
                )

            proxies = [
                Proxy("direct", "upstream (direct)", "upstream", "bench-model"),
                Proxy("gateway", "gateway", "gateway", "bench", headers=dict(servers.auth)),
                Proxy("plain", "gateway, 1 model", "plain", "bench", headers=dict(servers.auth)),
            ]
            servers.wait("upstream", "/health", False)
            servers.wait("gateway", "/health", False)
            servers.wait("plain", "/health", False)
            if litellm_exe is not None:
                try:
                    servers.wait("litellm", "/health/liveliness", False, timeout=180)
                    proxies.append(
                        Proxy(
                            "litellm",
                            "LiteLLM proxy",
                            "litellm",
                            "bench",
                            headers={"Authorization": f"Bearer {litellm_key}"},
                        )
                    )
                    litellm_started = True
                    litellm_note = ""
                except SystemExit as exc:
                    litellm_note = f"the LiteLLM proxy did not start: {exc}"
                    print(f"\n*** LiteLLM is NOT measured: {litellm_note}\n", flush=True)
            servers.wait("floor", "/health", False)
            proxies.append(Proxy("floor", "(floor: bare proxy)", "floor", "bench-model"))
            servers.wait("checks", "/health", False)
            proxies.append(
                Proxy("checks", "(floor + checks)", "checks", "bench", headers=dict(servers.auth))
            )
            for p in proxies:
                p.url = servers.url(p.server, PATH)
            gw = proxies[1]
            status, _ = post(gw.url, gw.body(False), {})
            if status != 401:
                raise SystemExit(f"the gateway answered {status} without its token, not 401")
            for p in proxies:
                check_target(p)

            scripts = {}
            for p in proxies:
                scripts[p.key] = tmp / f"{p.key}.lua"
                scripts[p.key].write_text(post_lua(p.body(False)), encoding="utf-8")

            def measure(p: Proxy, seconds: int, connections: int) -> Sample:
                return with_cpu(
                    servers,
                    p.server,
                    lambda: run_wrk(p.target(), seconds, connections, scripts[p.key]),
                )

            for p in proxies:
                if args.warmup > 0:
                    measure(p, args.warmup, args.connections)
                samples[p.key], singles[p.key] = [], []
                streams[p.key], stream_rounds[p.key] = [], []

            async def stream_rounds_all() -> None:
                clients = {p.key: StreamClient(p) for p in proxies}
                try:
                    for p in proxies:  # warm the connections and the stream paths
                        await stream_batch(clients[p.key], 5)
                    per_round = -(-args.streams // args.rounds)
                    for i in range(args.rounds):
                        order = proxies if i % 2 == 0 else list(reversed(proxies))
                        for p in order:
                            count = min(per_round, args.streams - len(streams[p.key]))
                            batch = await stream_batch(clients[p.key], count)
                            streams[p.key] += batch
                            ok = [r.ttft_s * 1000 for r in batch if r.ok]
                            stream_rounds[p.key].append(statistics.median(ok) if ok else 0.0)
                            print(
                                f"  round {i + 1}  {p.label:<18} TTFT p50 "
                                f"{fmt(statistics.median(ok) if ok else None, '6.2f')} ms  "
                                f"({len(ok)}/{len(batch)} streams ok)",
                                flush=True,
                            )
                finally:
                    for c in clients.values():
                        await c.close()

            for i in range(args.rounds):
                # A B C, then C B A, ...: drift in the machine's load hits all alike.
                order = proxies if i % 2 == 0 else list(reversed(proxies))
                for p in order:
                    s = measure(p, args.seconds, args.connections)
                    samples[p.key].append(s)
                    one = measure(p, args.single_seconds, 1)
                    singles[p.key].append(one)
                    print(
                        f"  round {i + 1}  {p.label:<18} {s.rps:>7.0f} req/s  p50 "
                        f"{s.p50_ms:6.2f} ms  p99 {s.p99_ms:6.2f} ms  "
                        f"{fmt(s.cpu_us_per_request, '5.0f')} us CPU/req  | 1 conn: "
                        f"p50 {one.p50_ms:5.2f} ms  p99 {one.p99_ms:5.2f} ms"
                        + (f"  ERRORS {s.errors + one.errors}" if s.errors + one.errors else ""),
                        flush=True,
                    )
            asyncio.run(stream_rounds_all())
        finally:
            servers.stop()
            if litellm_exe is not None and not litellm_started:
                print(servers.log("litellm")[-2000:])
    load_after = load_average()

    rows: dict[str, dict[str, Any]] = {}
    for p in proxies:
        rows[p.key] = {
            "label": p.label,
            "load": summarize(samples[p.key], LOAD_KEYS),
            "single_connection": summarize(singles[p.key], LOAD_KEYS),
            "stream": stream_summary(streams[p.key], stream_rounds[p.key]),
        }
    direct, gateway = rows["direct"], rows["gateway"]
    litellm = rows.get("litellm")

    head = (
        f"{'target':<18} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'CPU us/req':>10} "
        f"{'1-conn p50':>10} {'TTFT p50':>9} {'TTFT p99':>9}"
    )
    print()
    print(f"non-streaming at {args.connections} connections; TTFT of sequential streams")
    print(head)
    print("-" * len(head))
    for p in proxies:
        r = rows[p.key]
        print(
            f"{p.label:<18} {r['load']['rps']:>7.0f} {r['load']['p50_ms']:>7.2f} "
            f"{r['load']['p99_ms']:>7.2f} {fmt(r['load']['cpu_us_per_request'], '.0f'):>10} "
            f"{r['single_connection']['p50_ms']:>10.2f} "
            f"{fmt(r['stream']['ttft_p50_ms'], '.2f'):>9} "
            f"{fmt(r['stream']['ttft_p99_ms'], '.2f'):>9}"
        )
    print()

    ratio = gateway["load"]["rps"] / litellm["load"]["rps"] if litellm else None
    # Server CPU per request is much less sensitive than req/s to other work on the machine.
    gw_cpu = gateway["load"]["cpu_us_per_request"]
    ll_cpu = litellm["load"]["cpu_us_per_request"] if litellm else None
    cpu_ratio = ll_cpu / gw_cpu if ll_cpu and gw_cpu else None
    added_p50 = gateway["load"]["p50_ms"] - direct["load"]["p50_ms"]
    added_p50_single = (
        gateway["single_connection"]["p50_ms"] - direct["single_connection"]["p50_ms"]
    )
    added_ttft = (
        gateway["stream"]["ttft_p50_ms"] - direct["stream"]["ttft_p50_ms"]
        if gateway["stream"]["ttft_p50_ms"] is not None
        and direct["stream"]["ttft_p50_ms"] is not None
        else None
    )

    def verdict(ok: bool | None) -> str:
        return "-" if ok is None else ("met" if ok else "NOT met")

    ratio_ok = None if ratio is None else ratio >= TARGET_THROUGHPUT_RATIO
    p50_ok = added_p50 <= TARGET_ADDED_P50_MS
    ttft_ok = None if added_ttft is None else added_ttft <= TARGET_ADDED_TTFT_MS
    if ratio is not None:
        print(
            f"gateway / LiteLLM throughput: {ratio:.1f}x "
            f"(target >= {TARGET_THROUGHPUT_RATIO:g}x: {verdict(ratio_ok)}); by server CPU "
            f"per request, LiteLLM / gateway: "
            + (f"{cpu_ratio:.1f}x" if cpu_ratio is not None else "-")
        )
    else:
        print(f"gateway / LiteLLM throughput: not measured ({litellm_note.splitlines()[0]})")
    print(
        f"gateway p50 - direct p50 at {args.connections} connections: {added_p50:+.2f} ms "
        f"(target <= {TARGET_ADDED_P50_MS:g} ms: {verdict(p50_ok)}); "
        f"at 1 connection: {added_p50_single:+.2f} ms"
    )
    if added_ttft is not None:
        print(
            f"gateway TTFT p50 - direct TTFT p50: {added_ttft:+.2f} ms "
            f"(target <= {TARGET_ADDED_TTFT_MS:g} ms: {verdict(ttft_ok)})"
        )
    floor = rows.get("floor")
    if floor and floor["load"]["rps"]:
        share = gateway["load"]["rps"] / floor["load"]["rps"]
        over = (gateway["stream"]["ttft_p50_ms"] or 0) - (floor["stream"]["ttft_p50_ms"] or 0)
        cpu_share = (floor["load"]["cpu_us_per_request"] or 0) / (gw_cpu or 1)
        print(
            f"gateway / floor throughput: {share:.1%} (target >= {TARGET_FLOOR_SHARE:.0%}: "
            f"{verdict(share >= TARGET_FLOOR_SHARE)}); by server CPU per request {cpu_share:.1%}"
        )
        print(
            f"gateway TTFT p50 - floor TTFT p50: {over:+.2f} ms (target <= "
            f"{TARGET_TTFT_OVER_FLOOR_MS:g} ms: {verdict(over <= TARGET_TTFT_OVER_FLOOR_MS)})"
        )
        info["floor_share"], info["ttft_over_floor_ms"] = share, over
    checks = rows.get("checks")
    if floor and checks and checks["load"]["cpu_us_per_request"] and gw_cpu:
        floor_cpu = floor["load"]["cpu_us_per_request"] or 0
        checks_cpu = checks["load"]["cpu_us_per_request"]
        print(
            f"(floor + checks, the least a checking proxy does: {floor_cpu / checks_cpu:.1%} "
            f"of the floor's throughput by CPU per request, {checks_cpu - floor_cpu:+.0f} us; "
            f"the gateway {gw_cpu - checks_cpu:+.0f} us over it)"
        )
        info["checks_share_by_cpu"] = floor_cpu / checks_cpu
    if floor:
        floor_ttft = (floor["stream"]["ttft_p50_ms"] or 0) - (direct["stream"]["ttft_p50_ms"] or 0)
        print(
            f"(floor, a bare Quart-on-Hypercorn proxy: p50 - direct "
            f"{floor['load']['p50_ms'] - direct['load']['p50_ms']:+.2f} ms at "
            f"{args.connections} connections, "
            f"{floor['single_connection']['p50_ms'] - direct['single_connection']['p50_ms']:+.2f}"
            f" ms at 1; TTFT - direct {floor_ttft:+.2f} ms)"
        )
    if litellm:
        ll_p50 = litellm["load"]["p50_ms"] - direct["load"]["p50_ms"]
        ll_single = litellm["single_connection"]["p50_ms"] - direct["single_connection"]["p50_ms"]
        ll_ttft = (litellm["stream"]["ttft_p50_ms"] or 0) - (direct["stream"]["ttft_p50_ms"] or 0)
        print(
            f"(LiteLLM: p50 - direct {ll_p50:+.2f} ms at {args.connections} connections, "
            f"{ll_single:+.2f} ms at 1; TTFT - direct {ll_ttft:+.2f} ms)"
        )
    print(
        f"machine: {info['cpu']}, {info['cores']} cores; load average (1 min) before/after: "
        f"{load_before[0]:.2f} / {load_after[0]:.2f}"
    )
    errors = sum(
        r["load"]["errors"] + r["single_connection"]["errors"] + r["stream"]["failed"]
        for r in rows.values()
    )
    if errors:
        print(f"warning: {errors} failed or non-2xx responses during the run")

    result = {
        **result_head("openai_proxy", info, load_before, load_after),
        "settings": {
            "connections": args.connections,
            "rounds": args.rounds,
            "seconds": args.seconds,
            "single_connection_seconds": args.single_seconds,
            "warmup_seconds": args.warmup,
            "streams_per_target": args.streams,
            "upstream_chunks": args.chunks,
            "upstream_chunk_delay_ms": args.delay_ms,
            "workers": 1,
        },
        "litellm_measured": litellm is not None,
        "litellm_note": litellm_note,
        "targets": rows,
        "gateway_over_litellm_throughput": round(ratio, 2) if ratio is not None else None,
        "litellm_over_gateway_cpu_per_request": (
            round(cpu_ratio, 2) if cpu_ratio is not None else None
        ),
        "gateway_added_p50_ms": round(added_p50, 3),
        "gateway_added_p50_ms_single_connection": round(added_p50_single, 3),
        "gateway_added_ttft_p50_ms": round(added_ttft, 3) if added_ttft is not None else None,
        "targets_met": {
            "throughput_ratio": ratio_ok,
            "added_p50": p50_ok,
            "added_ttft": ttft_ok,
        },
        "errors": errors,
    }
    write_results(args.output, result)
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
