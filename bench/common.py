"""What the benchmarks share: server processes on free loopback ports, /proc readings,
the machine description, the wrk runner, medians and the results file.

Every benchmark starts its servers as real processes (one worker each, state in a temp
dir, no access log), reads their CPU time and memory from ``/proc``, and writes its
figures with the machine and the load average to ``bench/results/<name>.json``.
"""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
TOKEN_ENV = "BENCH_GATEWAY_TOKEN"
PACKAGES = ("quart", "hypercorn", "quart-schema", "h11", "h2", "prometheus-client")

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


def post_lua(body: str) -> str:
    """wrk script: POST ``body`` as JSON, and report percentiles from done()."""
    return (
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n' + WRK_LUA
    )


# -- /proc -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process, from /proc (None where there is no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int | None:
    """Resident set size of a process (VmRSS in /proc/<pid>/status), or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (children, their children, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


# -- servers -----------------------------------------------------------------------------


def gateway_toml(state_dir: Path, port: int, token_extra: str = "") -> str:
    """A one-worker gateway config with a bench token whose rate limit is never reached
    (``token_extra``: more keys of that token's table)."""
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
{token_extra}
[auth.tokens.bench.rate_limit]
per_minute = 1000000  # the ceiling; far above what one worker serves here
"""


# The OpenAI benchmarks' gateway with access checks, budgets and routing on: the bench
# token may call two models and has budgets it never reaches; the model has two weighted
# deployments (the same upstream) and a fallback.
TEAMS_TOKEN = (
    'models = ["bench", "bench-*"]\n'
    "budgets = { requests_per_minute = 10000000, tokens_per_day = 1000000000000 }\n"
)


def teams_models(api_base: str) -> str:
    """``[models]`` of the teams configuration, every deployment at ``api_base``."""
    return (
        f'[models.bench]\nprovider = "openai"\nupstream_model = "bench-model"\n'
        'fallbacks = ["bench-fallback"]\n'
        f'[[models.bench.deployments]]\nbase_url = "{api_base}"\nweight = 2\n'
        f'[[models.bench.deployments]]\nbase_url = "{api_base}"\n'
        f'[models.bench-fallback]\nprovider = "openai"\nbase_url = "{api_base}"\n'
        'upstream_model = "bench-model"\n'
    )


def one_model(api_base: str) -> str:
    """``[models]`` with the one model ``bench`` at ``api_base``."""
    return (
        f'[models.bench]\nprovider = "openai"\nbase_url = "{api_base}"\n'
        'upstream_model = "bench-model"\n'
    )


def serve_args(config: Path) -> list[str]:
    """``gateway serve`` as shipped, without the access log."""
    return ["-m", "host.cli", "serve", "--config", str(config), "--no-access-log"]


class Servers:
    """Server processes, one worker each, in their own temp working directory.

    ``cpu_tree``: count the CPU time of a server's descendants too (servers that fork
    a worker)."""

    def __init__(self, tmp: Path, token: str, cpu_tree: bool = False) -> None:
        self.tmp = tmp
        self.auth = {"Authorization": f"Bearer {token}"}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}
        self.cpu_tree = cpu_tree
        self.env = {**os.environ, TOKEN_ENV: token, "PYTHONUNBUFFERED": "1"}
        self.env.pop("GATEWAY_CONFIG", None)

    def gateway_config(self, name: str, extra: str = "", token_extra: str = "") -> Path:
        """A gateway.toml with its own port and state dir (plus ``extra`` TOML, and
        ``token_extra`` keys of the bench token)."""
        port = self.ports[name] = free_port()
        path = self.tmp / f"{name}.toml"
        text = gateway_toml(self.tmp / f"{name}-state", port, token_extra)
        path.write_text(text + (f"\n{extra}" if extra else ""), encoding="utf-8")
        return path

    def start(self, name: str, args: list[str]) -> None:
        """Start ``python args...`` (this interpreter)."""
        self.start_exe(name, [sys.executable, *args])

    def start_exe(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.ports.setdefault(name, 0)
        log = (self.tmp / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(
            argv,
            cwd=self.tmp,  # no stray ./gateway.toml is picked up
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def url(self, name: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}{path}"

    def pid(self, name: str) -> int:
        return self.procs[name].pid

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
        root = self.procs[name].pid
        total = cpu_seconds(root)
        if total is None or not self.cpu_tree:
            return total
        for pid in descendants(root):
            total += cpu_seconds(pid) or 0.0
        return total

    def rss(self, name: str) -> int | None:
        return rss_bytes(self.procs[name].pid)

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


# -- plain HTTP helpers ------------------------------------------------------------------


def request(
    method: str,
    url: str,
    headers: dict[str, str] | None = None,
    body: bytes | str | None = None,
    timeout: float = 30,
) -> tuple[int, bytes]:
    """One HTTP request with urllib; returns (status, body) for error statuses too."""
    data = body.encode() if isinstance(body, str) else body
    hdrs = dict(headers or {})
    if data is not None:
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def post(url: str, body: str, headers: dict[str, str], timeout: float = 30) -> tuple[int, bytes]:
    return request("POST", url, headers, body, timeout)


def expect_status(url: str, headers: dict[str, str], status: int, method: str = "GET") -> None:
    """Sanity check that a route really is behind auth (or really public)."""
    got, _ = request(method, url, headers, timeout=5)
    if got != status:
        raise SystemExit(f"{method} {url} answered {got}, expected {status}")


# -- wrk ---------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    server: str  # which server process answers (its CPU time is read per measurement)
    path: str
    auth: bool = False
    main: bool = True  # part of the main comparison, or informational
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


def run_wrk(
    target: Target, seconds: int, connections: int, script: Path, timeout: int = 5
) -> Sample:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", f"{timeout}s"]
    cmd += ["-s", str(script)]
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


def with_cpu(servers: Servers, server: str, run: Callable[[], Sample]) -> Sample:
    """Run one measurement and set its server CPU µs per request (from /proc)."""
    cpu0 = servers.cpu(server)
    sample = run()
    cpu1 = servers.cpu(server)
    if cpu0 is not None and cpu1 is not None and sample.requests:
        sample.cpu_us_per_request = round((cpu1 - cpu0) / sample.requests * 1e6, 1)
    return sample


# -- figures -----------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """The q-quantile by nearest rank below (q=0.5: median-ish, q=0.99: p99)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarize(
    samples: list[Sample], keys: Iterable[str] = ("p50_ms", "p90_ms", "p99_ms")
) -> dict[str, Any]:
    """Medians over rounds of req/s, the latency ``keys`` and CPU per request."""
    cpu = [s.cpu_us_per_request for s in samples if s.cpu_us_per_request is not None]
    out: dict[str, Any] = {"rps": round(statistics.median(s.rps for s in samples), 1)}
    for key in keys:
        out[key] = round(statistics.median(getattr(s, key) for s in samples), 3)
    out["cpu_us_per_request"] = round(statistics.median(cpu), 1) if cpu else None
    out["errors"] = sum(s.errors for s in samples)
    out["rounds"] = [asdict(s) for s in samples]
    return out


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


# -- machine and results -----------------------------------------------------------------


def machine(extra_packages: Iterable[str] = ()) -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    packages: dict[str, str | None] = {}
    for name in (*PACKAGES, *extra_packages):
        try:
            packages[name] = version(name)
        except Exception:
            packages[name] = None
    mem_total = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total = int(line.split()[1]) * 1024
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_bytes": mem_total,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": packages,
    }


def print_machine(info: dict[str, Any]) -> None:
    print(f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}")
    print("packages: " + ", ".join(f"{k} {v}" for k, v in info["packages"].items()))


def result_head(
    name: str,
    info: dict[str, Any],
    load_before: Sequence[float],
    load_after: Sequence[float],
) -> dict[str, Any]:
    """The keys every results file starts with."""
    return {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": info,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
    }


def write_results(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"results: {path}")
