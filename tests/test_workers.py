"""``gateway serve --workers N``: several worker processes on one port and one state
directory. State (the pause) is shared through the store; SIGTERM to the parent, or a
Ctrl-C to the whole process group, drains every worker and exits 0 with no worker left
behind; a signal during start-up is handled, not ignored; a worker that dies is
restarted (and counted), and workers that keep failing to start stop the service."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from host.settings import deep_merge
from host.storage.migrations import HOST_MIGRATIONS
from tests.conftest import LiveServer, base_config, free_port, wait_healthy
from tests.test_serve_e2e import (
    TIMEOUT,
    assert_clean_log,
    exit_code,
    h1_client,
    h2_client,
    rest_of,
    sse_blocks,
    until,
)


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _worker_pids(server: LiveServer) -> list[int]:
    pids = []
    for pid in _children(server.proc.pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            pids.append(pid)
    return pids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def _wait_workers_running(server: LiveServer, n: int) -> list[int]:
    await until(lambda: server.log().count("Running on") >= n)
    pids = _worker_pids(server)
    assert len(pids) == n, pids
    return pids


async def test_two_workers_share_one_state_directory_and_stop_together(live_server, store_url):
    server = live_server(args=["--workers", "2"])
    workers = await _wait_workers_running(server, 2)
    assert all(_alive(pid) for pid in workers)

    async with h1_client(server) as first:
        assert (await first.post("/gateway/pause")).status_code == 200
    # Fresh connections land on either worker: every one sees the pause (it is in the store).
    states = []
    for _ in range(12):
        async with h1_client(server) as fresh:
            states.append((await fresh.get("/gateway/status")).json()["state"])
        async with h2_client(server) as fresh2:
            again = await fresh2.post("/gateway/pause")
            assert again.status_code == 409
            assert again.json()["error"]["code"] == "invalid_transition"
    assert set(states) == {"paused"}
    async with h1_client(server) as client:
        status = (await client.get("/gateway/status")).json()
        page = (await client.get("/gateway/events", params={"after": 0, "limit": 10})).json()
    assert status["store"]["schema_versions"]["host"] == HOST_MIGRATIONS[-1].version
    assert [e["type"] for e in page["events"]] == ["gateway.paused"]

    server.proc.send_signal(signal.SIGTERM)
    assert exit_code(server, 30) == 0
    assert not [pid for pid in workers if _alive(pid)]
    assert_clean_log(server)
    assert server.log().count("Running on") == 2


async def test_two_workers_drain_open_streams_on_sigterm(live_server):
    server = live_server(
        args=["--workers", "2"], config={"server": {"graceful_timeout_seconds": 20}}
    )
    await _wait_workers_running(server, 2)
    clients = [h1_client(server) for _ in range(4)]
    try:
        responses = []
        for c in clients:
            responses.append(await c.send(c.build_request("GET", "/gateway/events"), stream=True))
        blocks = [sse_blocks(r) for r in responses]
        for b in blocks:
            await asyncio.wait_for(anext(b), TIMEOUT)  # the preamble: the stream is open
        server.proc.send_signal(signal.SIGTERM)
        rests = [await rest_of(b) for b in blocks]
    finally:
        for c in clients:
            await c.aclose()
    assert all([b["event"] for b in rest] == ["stream.closing"] for rest in rests)
    assert exit_code(server, 20) == 0
    assert_clean_log(server)


def _start_in_own_group(tmp_path: Path, args: list[str]) -> LiveServer:
    """Like ``live_server``, but in a process group of its own, as a terminal would start
    it, so a Ctrl-C can go to the whole group without reaching the test runner."""
    state = tmp_path / "group-state"
    port = free_port()
    data = deep_merge(
        base_config(state),
        {
            "server": {"bind": f"127.0.0.1:{port}", "graceful_timeout_seconds": 20},
            "events": {"poll_seconds": 0.2},
        },
    )
    config_path = tmp_path / "group.toml"
    config_path.write_text(tomli_w.dumps(data))
    log_path = tmp_path / "group.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "host.cli", "serve", "--config", str(config_path), *args],
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        cwd=tmp_path,
        start_new_session=True,
    )
    server = LiveServer(proc, f"http://127.0.0.1:{port}", config_path, state, log_path)
    try:
        wait_healthy(server)
    except BaseException:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        raise
    return server


@pytest.fixture
def group_server(tmp_path: Path) -> Iterator[Any]:
    started: list[LiveServer] = []

    def start(args: list[str]) -> LiveServer:
        server = _start_in_own_group(tmp_path, args)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait(10)


@pytest.mark.parametrize("workers", [1, 2])
async def test_ctrl_c_to_the_process_group_drains_and_exits_0(group_server, workers):
    server = group_server(["--workers", str(workers)])
    pids = await _wait_workers_running(server, workers) if workers > 1 else []
    async with h2_client(server) as h2:
        async with h2.stream("GET", "/gateway/events") as response:
            blocks = sse_blocks(response)
            await asyncio.wait_for(anext(blocks), TIMEOUT)
            # What a terminal does on Ctrl-C: SIGINT to every process of the group, so
            # each worker gets it directly and from the parent.
            os.killpg(server.proc.pid, signal.SIGINT)
            rest = await rest_of(blocks)
    assert [b["event"] for b in rest] == ["stream.closing"]
    assert exit_code(server, 20) == 0
    assert not [pid for pid in pids if _alive(pid)]
    assert_clean_log(server)
    assert "KeyboardInterrupt" not in server.log()


async def test_sigterm_while_workers_are_still_starting_stops_them_cleanly(live_server):
    server = live_server(args=["--workers", "2"], wait=False)
    # The worker processes exist, but neither is serving yet.
    await until(lambda: len(_worker_pids(server)) == 2 or server.proc.poll() is not None)
    workers = _worker_pids(server)
    assert "Running on" not in server.log()
    server.proc.send_signal(signal.SIGTERM)
    assert exit_code(server, 30) == 0
    assert not [pid for pid in workers if _alive(pid)]
    assert_clean_log(server)


async def test_a_killed_worker_is_restarted_counted_and_the_service_keeps_answering(
    live_server,
):
    server = live_server(args=["--workers", "2"])
    workers = await _wait_workers_running(server, 2)
    os.kill(workers[0], signal.SIGKILL)
    # The other worker answers meanwhile (the listening socket is shared), and the parent
    # starts a new worker in place of the dead one.
    answered = []
    deadline = time.monotonic() + 60

    def replaced_and_serving() -> bool:
        new = set(_worker_pids(server)) - set(workers)
        return bool(new) and server.log().count("Running on") >= 3

    async with h1_client(server) as client:
        while not replaced_and_serving():
            assert time.monotonic() < deadline and server.proc.poll() is None, server.log()
            async with h1_client(server) as fresh:
                answered.append((await fresh.get("/health")).status_code)
            await asyncio.sleep(0.05)
        replaced = [pid for pid in _worker_pids(server) if pid not in workers]
        assert len(replaced) == 1 and _alive(workers[1]) and not _alive(workers[0])
        assert set(answered) == {200}
        # Every worker reports the service's restart count.
        for _ in range(6):
            async with h1_client(server) as fresh:
                metrics = (await fresh.get("/metrics")).text
            assert "gateway_worker_restarts_total 1.0" in metrics
        assert (await client.get("/gateway/status")).status_code == 200
    log = server.log()
    assert f"gateway-worker-0 (pid {workers[0]}) exited unexpectedly (killed by SIGKILL)" in log
    assert f"gateway-worker-0 restarted as pid {replaced[0]}" in log
    # A signal still stops everything cleanly.
    server.proc.send_signal(signal.SIGTERM)
    assert exit_code(server, 30) == 0
    assert not [pid for pid in [*workers, *replaced] if _alive(pid)]
    assert "Traceback" not in server.log()


@pytest.mark.timeout(240)
async def test_workers_that_keep_failing_to_start_stop_the_service_with_exit_1(
    live_server, tmp_path
):
    # A store no worker can open: each start fails at once, so restarting cannot help.
    # (A corrupt SQLite file; PostgreSQL's missing database is the test after the next.)
    state = tmp_path / "srv0" / "srv-state"
    state.mkdir(parents=True)
    (state / "gateway.db").write_bytes(b"not a database" * 512)
    server = live_server(args=["--workers", "2"], wait=False)
    assert exit_code(server, 200) == 1
    log = server.log()
    # Five failures, each but the last few restarted: with two workers, how many were
    # waiting for their restart when the fifth failure stopped the service depends on
    # which of them failed last.
    assert log.count("exited unexpectedly") == 5
    assert 3 <= log.count("restarted as pid") <= 4
    assert "workers failed 5 times in a row before serving or within 10 s of it" in log
    assert "stopping the gateway" in log
    assert not _worker_pids(server)


async def test_workers_exit_when_their_parent_is_killed(live_server):
    server = live_server(args=["--workers", "2"])
    pids = await _wait_workers_running(server, 2)
    server.proc.kill()  # SIGKILL: the parent cannot forward anything
    server.proc.wait(TIMEOUT)
    await until(lambda: not any(_alive(pid) for pid in pids))
    assert "parent process" in server.log() and "is gone" in server.log()


async def test_a_single_worker_that_cannot_open_its_store_exits_1_saying_why(live_server, tmp_path):
    # Before: the lifespan error escaped `gateway serve` as an uncaught exception.
    # SQLite: a corrupt database file (PostgreSQL: the next test).
    state = tmp_path / "srv0" / "srv-state"
    state.mkdir(parents=True)
    (state / "gateway.db").write_bytes(b"not a database" * 512)
    server = live_server(wait=False)
    assert exit_code(server, 60) == 1
    last = server.log().strip().splitlines()[-1]
    assert last == "gateway: start-up failed: (sqlite3.DatabaseError) file is not a database"


async def test_a_worker_whose_postgresql_database_is_missing_exits_1_saying_why(
    live_server, postgres_server
):
    missing = postgres_server.url("gateway_no_such_database")
    server = live_server(config={"storage": {"url": missing}}, wait=False)
    assert exit_code(server, 60) == 1
    last = server.log().strip().splitlines()[-1]
    assert last.startswith("gateway: start-up failed: ")
    assert 'database "gateway_no_such_database" does not exist' in last, server.log()
    assert postgres_server.password not in server.log()
