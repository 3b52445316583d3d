"""Pipelines the pipelines tests load from a directory (written into tmp_path), and the
helpers that write that directory and point the settings at it, and sign webhooks."""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_pipelines(tmp_path: Path, name: str, source: str) -> Path:
    """``tmp_path/pipelines/<name>.py`` holding ``source``; returns the directory."""
    path = tmp_path / "pipelines"
    path.mkdir(exist_ok=True)
    (path / f"{name}.py").write_text(source)
    return path


def pipelines_settings(make_settings: Callable[..., Any], directory: Path, **section: Any) -> Any:
    """Settings loading ``directory``; the engine polls fast unless told otherwise."""
    section.setdefault("poll_seconds", 0.05)
    return make_settings(plugins={"pipelines": {"directory": str(directory), **section}})


def shared_state_config(tmp_path: Path, name: str, source: str, **section: Any) -> dict[str, Any]:
    """The config of ``gateway serve`` processes that share ``tmp_path/shared-state`` and
    load ``source`` as ``<name>.py``, with a short lease and a fast poll (kills, restarts
    and several processes on one store)."""
    directory = write_pipelines(tmp_path, name, source)
    pipelines = {"directory": str(directory), "lease_seconds": 1, "poll_seconds": 0.1}
    return {
        "state_dir": str(tmp_path / "shared-state"),
        "plugins": {"pipelines": {**pipelines, **section}},
    }


def signed(
    body: bytes, delivery: str, secret: str = "s3cret", timestamp: int | None = None
) -> dict[str, str]:
    """Webhook headers for ``body`` by the documented scheme: ``X-Gateway-Signature`` is
    ``sha256=`` and the hex HMAC-SHA256 of ``"<timestamp>.<delivery>.<body>"``."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    message = f"{stamp}.{delivery}.".encode() + body
    digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return {
        "X-Gateway-Signature": f"sha256={digest}",
        "X-Gateway-Timestamp": stamp,
        "X-Gateway-Delivery": delivery,
        "Content-Type": "application/json",
    }


def process_probe(ctx: Any) -> dict[str, Any]:
    """A step function of an importable module: a step process imports it by name."""
    return {"pid": os.getpid(), "module": __name__, "run_id": ctx.run_id}


# A step factory for test pipeline sources (they need ``from pathlib import Path``):
# ``noted(name)`` appends "<step key> <attempt>" to the file named by the run input.
NOTED_STEP = """
def noted(name):
    def step(ctx):
        with Path(ctx.input["log"]).open("a") as fh:
            fh.write(f"{ctx.step_key} {ctx.attempt}\\n")
        return {"step": name, "iteration": ctx.iteration}
    return step
"""


PIPELINES_SOURCE = """
from __future__ import annotations

import asyncio
import pathlib

from pydantic import BaseModel, Field

from plugins.pipelines.definition import (
    Pipeline, approval, branch, code, llm, loop, parallel, wait,
)


class Numbers(BaseModel):
    n: int = Field(..., ge=0)


class Reply(BaseModel):
    text: str = Field(..., min_length=2)


THREE = Pipeline(
    id="three",
    description="three code steps",
    input_model=Numbers,
    steps=[
        code("one", lambda c: {"v": c.input["n"] + 1}),
        code("two", lambda c: {"v": c.results["one"]["v"] * 2}),
        code("three", lambda c: {"v": c.results["two"]["v"] + 1}),
    ],
)

_tries: dict[str, int] = {}


def flaky(ctx):
    _tries[ctx.run_id] = _tries.get(ctx.run_id, 0) + 1
    if _tries[ctx.run_id] < 3:
        raise RuntimeError(f"attempt {_tries[ctx.run_id]} failed")
    return {"tries": _tries[ctx.run_id]}


def boom(ctx):
    raise ValueError("broken on purpose")


async def slow(ctx):
    await asyncio.sleep(5)


OPTIONS = Pipeline(
    id="options",
    steps=[
        code("flaky", flaky, retries=2, backoff_seconds=0.01),
        code("skipped", boom, when=lambda c: False),
        code("tolerated", boom, continue_on_error=True),
        code("last", lambda c: {"ok": True}),
    ],
)

FAILING = Pipeline(id="failing", steps=[code("boom", boom), code("never", lambda c: 1)])
TIMEOUT = Pipeline(id="timeout", steps=[code("slow", slow, timeout_seconds=0.05)])

COMPOSITE = Pipeline(
    id="composite",
    steps=[
        branch(
            "pick",
            lambda c: c.input.get("big", False),
            then=[code("big", lambda c: "big")],
            otherwise=[code("small", lambda c: "small")],
        ),
        parallel(
            "both",
            {"a": [code("pa", lambda c: 1)], "b": [code("pb", lambda c: 2)]},
        ),
        loop("count", [code("tick", lambda c: c.iteration)], max=3),
    ],
)

INPUT = Pipeline(
    id="input",
    version="1",
    steps=[
        wait("reply", schema=Reply),
        code("answer", lambda c: {"v": 1, "text": c.results["reply"]["text"]}),
    ],
)

GATED = Pipeline(
    id="gated",
    steps=[
        code("draft", lambda c: {"text": "draft"}),
        approval("review", "ok?"),
        code("publish", lambda c: {"done": True}),
    ],
)

TIMED = Pipeline(
    id="timed",
    steps=[
        approval("auto", "ok?", timeout_seconds=0.2, on_timeout="approve"),
        code("after", lambda c: {"decision": c.results["auto"]["decision"]}),
    ],
)

EXPIRING = Pipeline(
    id="expiring",
    steps=[approval("gate", "ok?", timeout_seconds=0.2), code("never", lambda c: 1)],
)

LLM = Pipeline(id="llm-step", steps=[llm("ask", "echo", prompt="hello")])


def wait_for_gate(ctx):
    gate = pathlib.Path(ctx.input["gate"])
    counter = pathlib.Path(ctx.input["counter"])
    with counter.open("a") as fh:
        fh.write(ctx.step.id + "\\n")
    return {"gate": gate.name}


async def blocked(ctx):
    gate = pathlib.Path(ctx.input["gate"])
    with pathlib.Path(ctx.input["counter"]).open("a") as fh:
        fh.write(ctx.step.id + "\\n")
    if "keys" in ctx.input:
        with pathlib.Path(ctx.input["keys"]).open("a") as fh:
            fh.write(f"{ctx.step_key} {ctx.attempt}\\n")
    while not gate.exists():
        await asyncio.sleep(0.05)
    return {"passed": True}


DURABLE = Pipeline(
    id="durable",
    steps=[
        code("first", wait_for_gate),
        code("second", blocked),
        code("third", lambda c: {"done": True}),
    ],
)

DURABLE_NESTED = Pipeline(
    id="durable-nested",
    steps=[
        branch(
            "inner",
            lambda c: True,
            then=[code("first", wait_for_gate), code("second", blocked)],
        ),
        code("third", lambda c: {"done": True}),
    ],
)
"""
