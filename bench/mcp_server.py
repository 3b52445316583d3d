"""MCP benchmark, in one run:

1. Tool-call latency through the gateway's ``/mcp`` (``gateway serve``, one worker, a
   bearer token with a ``tools = [...]`` allow-list) to a built-in tool
   (``gateway_pipelines``).
2. Through the gateway to an MCP server (``remote.echo``: the test server of
   ``tests/mcp_test_server.py`` over streamable HTTP on loopback, which the gateway is a
   client of) against calling that server directly (``echo``), with the same SDK client.
3. The cost per call of the allow-list check (``AllowList.allows`` as ``/mcp`` asks it
   on every list and call: a cached answer, and the first answer for a name).

Calls are sequential on one session per target (the latency of one caller, not a
throughput), the targets interleaved round by round so the machine's noise hits them
alike; p50 and p99 over every call. No approval-policy check exists in this branch yet
(the tools layer's approvals are another branch): not measured.

    .venv/bin/python bench/mcp_server.py [--calls 300] [--rounds 5] [--extra-toml TOML]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))
sys.path.insert(0, str(BENCH_DIR))
from common import (  # noqa: E402
    RESULTS_DIR,
    TOKEN_ENV,
    free_port,
    gateway_toml,
    load_average,
    machine,
    pct,
    print_machine,
    result_head,
    serve_args,
    write_results,
)
from mcp import Client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared._httpx_utils import create_mcp_http_client  # noqa: E402

from host.api import AllowList  # noqa: E402

TOKEN = "bench-mcp-token-0123456789"
KEY = "bench-key-0123456789"
SERVER = BENCH_DIR.parent / "tests" / "mcp_test_server.py"


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 45) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


async def connected(url: str, headers: dict[str, str]) -> Any:
    http = create_mcp_http_client(headers=headers)
    return Client(streamable_http_client(url, http_client=http), mode="legacy")


async def measure(client: Any, tool: str, args: dict[str, Any], calls: int) -> list[float]:
    out = []
    for _ in range(calls):
        start = time.perf_counter()
        result = await client.call_tool(tool, args)
        out.append((time.perf_counter() - start) * 1000)
        if result.is_error:
            raise RuntimeError(f"{tool}: {result.content}")
    return out


async def latency(gateway_url: str, server_url: str, calls: int, rounds: int) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    targets: dict[str, tuple[str, dict[str, str], str, dict[str, Any]]] = {
        "gateway /mcp -> built-in gateway_pipelines": (gateway_url, auth, "gateway_pipelines", {}),
        "gateway /mcp -> MCP server (remote.echo)": (
            gateway_url,
            auth,
            "remote.echo",
            {"text": "hi"},
        ),
        "MCP server directly (echo)": (server_url, {"X-Api-Key": KEY}, "echo", {"text": "hi"}),
    }
    samples: dict[str, list[float]] = {name: [] for name in targets}
    async with contextlib.AsyncExitStack() as stack:
        clients = {}
        for name, (url, headers, _tool, _args) in targets.items():
            clients[name] = await stack.enter_async_context(await connected(url, headers))
        for name, (_u, _h, tool, args) in targets.items():  # warm-up
            await measure(clients[name], tool, args, 20)
        for index in range(rounds):
            order = list(targets) if index % 2 == 0 else list(reversed(targets))
            for name in order:
                _u, _h, tool, args = targets[name]
                samples[name] += await measure(clients[name], tool, args, calls)
    return {
        name: {
            "calls": len(values),
            "p50_ms": round(pct(values, 0.50), 3),
            "p99_ms": round(pct(values, 0.99), 3),
            "mean_ms": round(sum(values) / len(values), 3),
        }
        for name, values in samples.items()
    }


def allow_list_cost() -> dict[str, float]:
    patterns = ["gateway_*", "docs.*", "search.*", "pipeline.publish", "pipeline.report-*"]
    patterns += [f"team{i}.*" for i in range(5)]
    warm = AllowList(patterns)
    warm.allows("pipeline.report-nightly")

    everything = AllowList(None)

    def per_call(fn: Callable[[], Any], number: int) -> float:
        return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e9

    return {
        "patterns": len(patterns),
        "cached_ns": round(per_call(lambda: warm.allows("pipeline.report-nightly"), 200_000), 1),
        "first_answer_ns": round(
            per_call(lambda: AllowList(patterns).allows("pipeline.report-nightly"), 20_000), 1
        ),
        "unrestricted_ns": round(per_call(lambda: everything.allows("x"), 200_000), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300, help="calls per target per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--extra-toml",
        default="",
        help='appended to the gateway\'s config, e.g. "[plugins.audit]\\nenabled = false"',
    )
    args = parser.parse_args()
    info = machine(["mcp", "quart", "hypercorn", "uvicorn"])
    print_machine(info)
    load_before = load_average()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        try:
            server_port = free_port()
            server = subprocess.Popen(
                [sys.executable, str(SERVER), "http", str(server_port), KEY],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            procs.append(server)
            wait_port(server_port, server)
            server_url = f"http://127.0.0.1:{server_port}/mcp"
            port = free_port()
            config = tmp / "gateway.toml"
            toml = gateway_toml(
                tmp / "state", port, 'tools = ["gateway_*", "remote.*", "pipeline.*"]\n'
            )
            toml += f"""
[mcp.servers.remote]
url = "{server_url}"
headers = {{ X-Api-Key = "{KEY}" }}
"""
            toml += args.extra_toml.replace("\\n", "\n")
            config.write_text(toml)
            env = {**os.environ, TOKEN_ENV: TOKEN}
            log = (tmp / "gateway.log").open("wb")
            gateway = subprocess.Popen(
                [sys.executable, *serve_args(config)],
                cwd=BENCH_DIR.parent,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            procs.append(gateway)
            wait_port(port, gateway)
            gateway_url = f"http://127.0.0.1:{port}/mcp"
            time.sleep(1)  # the gateway connects to the MCP server after it listens
            rows = asyncio.run(latency(gateway_url, server_url, args.calls, args.rounds))
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(30)
    allow = allow_list_cost()
    load_after = load_average()
    print(f"load average before {load_before}, after {load_after}")
    print(f"{'target':48} {'calls':>6} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for name, row in rows.items():
        print(
            f"{name:48} {row['calls']:>6} {row['p50_ms']:>8.3f} {row['p99_ms']:>8.3f}"
            f" {row['mean_ms']:>8.3f}"
        )
    direct = rows["MCP server directly (echo)"]
    via = rows["gateway /mcp -> MCP server (remote.echo)"]
    print(
        f"through the gateway to the MCP server: +{via['p50_ms'] - direct['p50_ms']:.3f} ms p50,"
        f" +{via['p99_ms'] - direct['p99_ms']:.3f} ms p99 over calling it directly"
    )
    print(
        f"allow-list check ({allow['patterns']} patterns): {allow['cached_ns']} ns cached,"
        f" {allow['first_answer_ns']} ns for a name's first answer,"
        f" {allow['unrestricted_ns']} ns unrestricted"
    )
    result = result_head("mcp_server", info, load_before, load_after)
    result.update(
        {"latency": rows, "allow_list": allow, "calls": args.calls, "rounds": args.rounds}
    )
    write_results(RESULTS_DIR / "mcp_server.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
