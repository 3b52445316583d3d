"""Host overhead: the gateway's authenticated light route against a bare Quart route.

One run starts these servers on free loopback ports, each one Hypercorn worker with no
access log:

* ``bare``: ``bench/bare_app.py``, a bare Quart app with one JSON route;
* ``gw``: ``bench/gateway_app.py``, the gateway (all built-in and installed plugins) plus
  a benchmark plugin whose protected ``GET /bench/ping`` returns the same dict, so auth,
  rate limiting, metrics and error handling are all in the path;
* informational rows (skip with ``--no-info``): ``bare_app.py --quart-schema``, and
  ``python -m host.cli serve`` as shipped for ``GET /gateway/status`` (authenticated,
  reads the store) and ``GET /health`` (public);

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
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results" / "host_overhead.json"
TARGET_RATIO = 0.85
TOKEN_ENV = "BENCH_GATEWAY_TOKEN"

sys.path.insert(0, str(BENCH_DIR))
from payload import ROUTE  # noqa: E402

# wrk prints one JSON line from its done() callback; latencies are in microseconds.
WRK_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests": %d, "duration_us": %d, "bytes": %d, "p50_us": %d, '
    .. '"p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f, "connect_errors": %d, '
    .. '"read_errors": %d, "write_errors": %d, "status_errors": %d, "timeouts": %d}\\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


@dataclass
class Target:
    name: str
    server: str  # which server process answers (its CPU time is read per measurement)
    path: str
    auth: bool = False
    main: bool = True  # part of the bare-vs-gateway comparison, or informational
    note: str = ""
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Sample:
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    errors: int
    cpu_us_per_request: float | None = None


# -- servers -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gateway_toml(state_dir: Path, port: int) -> str:
    return f"""\
state_dir = "{state_dir}"

[server]
bind = "127.0.0.1:{port}"
workers = 1
access_log = false

[auth]
mode = "token"

[auth.tokens.bench]
token = {{ env = "{TOKEN_ENV}" }}
gates = ["*"]

[auth.tokens.bench.rate_limit]
per_minute = 10000000
"""


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process, from /proc (None where there is no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Servers:
    """Server processes, one Hypercorn worker each, in their own temp working directory."""

    def __init__(self, tmp: Path, token: str) -> None:
        self.tmp = tmp
        self.auth = {"Authorization": f"Bearer {token}"}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}
        self.env = {**os.environ, TOKEN_ENV: token, "PYTHONUNBUFFERED": "1"}
        self.env.pop("GATEWAY_CONFIG", None)

    def gateway_config(self, name: str) -> Path:
        """A gateway.toml with its own port and state dir; returns its path."""
        port = self.ports[name] = free_port()
        path = self.tmp / f"{name}.toml"
        path.write_text(gateway_toml(self.tmp / f"{name}-state", port), encoding="utf-8")
        return path

    def start(self, name: str, args: list[str]) -> None:
        self.ports.setdefault(name, 0)
        log = (self.tmp / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(
            [sys.executable, *args],
            cwd=self.tmp,  # no stray ./gateway.toml is picked up
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def url(self, name: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}{path}"

    def wait(self, name: str, path: str, auth: bool, timeout: float = 45) -> None:
        deadline = time.monotonic() + timeout
        proc = self.procs[name]
        headers = self.auth if auth else {}
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited early:\n{self.log(name)}")
            try:
                req = urllib.request.Request(self.url(name, path), headers=headers)
                with urllib.request.urlopen(req, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"{name} did not answer {path} in {timeout} s:\n{self.log(name)}")

    def cpu(self, name: str) -> float | None:
        return cpu_seconds(self.procs[name].pid)

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def start_servers(servers: Servers, profile: Path | None, info: bool) -> list[Target]:
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
        servers.start(
            "serve", ["-m", "host.cli", "serve", "--config", str(config), "--no-access-log"]
        )
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


def expect_status(url: str, headers: dict[str, str], status: int) -> None:
    """Sanity check that the route really is behind auth (or really public)."""
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            got = resp.status
    except urllib.error.HTTPError as exc:
        got = exc.code
    if got != status:
        raise SystemExit(f"GET {url} answered {got}, expected {status}")


def body_size(url: str, headers: dict[str, str]) -> int:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
        return len(r.read())


# -- load generators ---------------------------------------------------------------------


def run_wrk(target: Target, seconds: int, connections: int, script: Path) -> Sample:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s", str(script)]
    for key, value in target.headers.items():
        cmd += ["-H", f"{key}: {value}"]
    cmd.append(target.url)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    match = re.search(r"^BENCHJSON (\{.*\})$", out, re.MULTILINE)
    if not match:
        raise SystemExit(f"could not parse wrk output:\n{out}")
    data = json.loads(match.group(1))
    errors = sum(
        data[k]
        for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    return Sample(
        rps=data["requests"] / (data["duration_us"] / 1e6),
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        requests=data["requests"],
        errors=errors,
    )


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


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    packages: dict[str, str | None] = {}
    for name in ("quart", "hypercorn", "quart-schema", "h11", "h2", "prometheus-client"):
        try:
            packages[name] = version(name)
        except Exception:
            packages[name] = None
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": packages,
    }


def summarize(samples: list[Sample]) -> dict[str, Any]:
    cpu = [s.cpu_us_per_request for s in samples if s.cpu_us_per_request is not None]
    return {
        "rps": round(statistics.median(s.rps for s in samples), 1),
        "p50_ms": round(statistics.median(s.p50_ms for s in samples), 3),
        "p90_ms": round(statistics.median(s.p90_ms for s in samples), 3),
        "p99_ms": round(statistics.median(s.p99_ms for s in samples), 3),
        "cpu_us_per_request": round(statistics.median(cpu), 1) if cpu else None,
        "errors": sum(s.errors for s in samples),
        "rounds": [asdict(s) for s in samples],
    }


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
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    client = args.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "python"
    if client == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")

    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}")
    print("packages: " + ", ".join(f"{k} {v}" for k, v in info["packages"].items()))
    print(
        f"client: {client}, {args.connections} connections, {args.rounds} rounds x "
        f"{args.seconds} s per target after {args.warmup} s warm-up; 1 Hypercorn worker each"
    )
    differences = config_differences()
    if differences:
        print(f"warning: bare_app.py's Hypercorn config differs from the gateway's: {differences}")
    load_before = os.getloadavg()

    token = secrets.token_urlsafe(32)
    with tempfile.TemporaryDirectory(prefix="gw-bench-") as tmpdir:
        tmp = Path(tmpdir)
        script = tmp / "report.lua"
        script.write_text(WRK_LUA, encoding="utf-8")
        servers = Servers(tmp, token)
        profile = args.profile.resolve() if args.profile else None
        try:
            targets = start_servers(servers, profile, not args.no_info)
            gateway = targets[1]
            expect_status(gateway.url, {}, 401)  # the route really is behind auth
            sizes = {t.name: body_size(t.url, t.headers) for t in targets}

            def measure(target: Target, seconds: int) -> Sample:
                cpu0 = servers.cpu(target.server)
                if client == "wrk":
                    sample = run_wrk(target, seconds, args.connections, script)
                else:
                    sample = run_python(target, seconds, args.connections)
                cpu1 = servers.cpu(target.server)
                if cpu0 is not None and cpu1 is not None and sample.requests:
                    sample.cpu_us_per_request = round((cpu1 - cpu0) / sample.requests * 1e6, 1)
                return sample

            for target in targets:
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
    load_after = os.getloadavg()

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
        "benchmark": "host_overhead",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": info,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
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
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"results: {args.output}")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
