"""Approvals bound to the exact tool call (``[tools.approval]``, the
``gateway_tool_approval`` hook of ``host.api.call_tool``): a held call creates an approval
in the shared queue (``GET /approvals``), approving runs exactly that call once, and a
replay, changed arguments, a changed policy, an expired approval, a denial or another
caller's approval run nothing and say why. Audited with the digest and the outcome. A
pipeline's ``tool` step parks its run until the decision. On both stores."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from quart import Blueprint, request

from host.api import (
    GatewayError,
    Tool,
    ToolError,
    args_digest,
    call_tool,
    context,
    current_principal,
    owner_key,
)
from plugins.tools.contract import ToolApprovalProgress, wait_for_tool_approval
from tests.audit_helpers import audit_rows, until
from tests.conftest import ADMIN, READER, assert_error, bearer, db_execute, db_rows, running_app
from tests.pipelines_fixtures import write_pipelines
from tests.plugins_for_tests.kit import Plugin

pytestmark = pytest.mark.usefixtures("store_url")

OWNER_TOKEN = "test-approval-owner-token-0123456789"
OTHER_TOKEN = "test-approval-other-token-0123456789"
OWNER = bearer(OWNER_TOKEN)
OTHER = bearer(OTHER_TOKEN)

SOURCE = """
from plugins.pipelines.definition import Pipeline, tool

RECORD = Pipeline(id="record", steps=[tool("rec", "record", lambda c: c.input)])
"""


def recorder_plugin(log: Path) -> Plugin:
    """A ``record`` tool that appends each execution to ``log``, and ``POST /t/call`` that
    calls a tool through ``call_tool`` as the requesting principal."""

    def record(note: str) -> dict[str, str]:
        with log.open("a") as fh:
            fh.write(note + "\n")
        return {"recorded": note}

    schema = {
        "type": "object",
        "properties": {"note": {"type": "string"}},
        "required": ["note"],
        "additionalProperties": False,
    }
    bp = Blueprint("tool_caller", __name__)

    @bp.post("/t/call")
    async def call() -> Any:
        body = await request.get_json()
        principal = current_principal()
        caller: dict[str, Any] = {"kind": "test", "owner": owner_key(principal)}
        caller["gates"] = sorted(principal.gates)
        if body.get("approval_id") is not None:
            caller["approval_id"] = body["approval_id"]
        try:
            result = await call_tool(context(), body["tool"], body["args"], caller=caller)
        except ToolError as exc:
            raise GatewayError(409, exc.code, exc.message, details=exc.details) from None
        return {"result": result}

    return Plugin(
        gateway_register_tools=lambda register: register(
            "record", Tool("Record a note.", schema, record, blocking=True)
        ),
        gateway_register_blueprints=lambda register: register(bp),
    )


def executions(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def settings_for(make_settings: Any, tmp_path: Path, **approval: Any) -> Any:
    directory = write_pipelines(tmp_path, "approvals", SOURCE)
    return make_settings(
        plugins={
            "pipelines": {"directory": str(directory), "poll_seconds": 0.05},
        },
        tools={"approval": {"always": ["record"], **approval}},
        auth={
            "tokens": {
                "owner": {"token": OWNER_TOKEN, "gates": ["allow_pipeline_run"]},
                "other": {"token": OTHER_TOKEN, "gates": []},
            }
        },
    )


async def call(client: Any, args: dict[str, Any], approval_id: str | None = None, **kw: Any) -> Any:
    body = {"tool": "record", "args": args, "approval_id": approval_id}
    return await client.post("/t/call", json=body, headers=kw.get("headers", OWNER))


async def held(client: Any, args: dict[str, Any], headers: dict[str, str] = OWNER) -> str:
    """Call, expect ``approval_required``; the approval's id."""
    response = await call(client, args, headers=headers)
    assert response.status_code == 409, await response.get_data(as_text=True)
    error = assert_error(await response.get_json(), "approval_required")
    approval_id: str = error["details"]["approval_id"]
    assert approval_id.startswith("apr_")
    return approval_id


async def refused(client: Any, args: dict[str, Any], approval_id: str, code: str, **kw: Any) -> str:
    response = await call(client, args, approval_id, **kw)
    assert response.status_code == 409, await response.get_data(as_text=True)
    error = assert_error(await response.get_json(), code)
    assert error["details"]["approval_id"] == approval_id
    message: str = error["message"]
    return message


async def decide(client: Any, approval_id: str, decision: str = "approve") -> None:
    response = await client.post(
        f"/approvals/{approval_id}/{decision}", json={"reason": "checked"}, headers=ADMIN
    )
    assert response.status_code == 200, await response.get_data(as_text=True)


async def test_an_approved_call_runs_once_and_a_replay_runs_nothing(
    make_settings, tmp_path, store_url
):
    log = tmp_path / "executions.log"
    plugins = [("recorder", recorder_plugin(log))]
    settings = settings_for(make_settings, tmp_path)
    async with running_app(settings, extra_plugins=plugins) as (_app, client):
        args = {"note": "deploy ünïcode"}
        approval_id = await held(client, args)
        assert executions(log) == []
        # In the shared queue, with what it is bound to, for its owner and for approvers.
        own = await (await client.get("/approvals", headers=OWNER)).get_json()
        [listed] = [a for a in own["approvals"] if a["id"] == approval_id]
        assert listed["source"] == "tool_call" and listed["subject"] == "record"
        assert listed["details"]["args"] == args
        assert listed["details"]["args_digest"] == args_digest(args)
        assert listed["details"]["caller"] == {"kind": "test", "owner": "token:owner"}
        stranger = await (await client.get("/approvals", headers=OTHER)).get_json()
        assert approval_id not in [a["id"] for a in stranger["approvals"]]
        # Pending: nothing runs yet.
        await refused(client, args, approval_id, "approval_pending")
        await decide(client, approval_id)
        ran = await call(client, args, approval_id)
        assert ran.status_code == 200
        assert (await ran.get_json())["result"] == {"recorded": args["note"]}
        assert executions(log) == [args["note"]]
        message = await refused(client, args, approval_id, "approval_replayed")
        assert "once" in message
        assert executions(log) == [args["note"]]
    rows = await db_rows(
        store_url, f"SELECT outcome, args_digest FROM tools_approvals WHERE id = '{approval_id}'"
    )
    assert rows == [("executed", args_digest(args))]


async def test_the_digest_is_sha256_of_canonical_json():
    import hashlib

    args = {"b": [1, {"y": 2, "x": "é"}], "a": None}
    canonical = '{"a":null,"b":[1,{"x":"é","y":2}]}'
    assert args_digest(args) == hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    with pytest.raises(ToolError) as info:
        args_digest({"a": float("nan")})
    assert info.value.code == "invalid_tool_args"


async def test_changed_arguments_another_caller_and_a_denial_run_nothing(make_settings, tmp_path):
    log = tmp_path / "executions.log"
    plugins = [("recorder", recorder_plugin(log))]
    async with running_app(settings_for(make_settings, tmp_path), extra_plugins=plugins) as (
        _app,
        client,
    ):
        approval_id = await held(client, {"note": "rm -rf /tmp/a"})
        await decide(client, approval_id)
        message = await refused(
            client, {"note": "rm -rf /"}, approval_id, "approval_arguments_changed"
        )
        assert args_digest({"note": "rm -rf /tmp/a"}) in message
        # Another principal holding the id: refused, and the approval is still good.
        await refused(
            client,
            {"note": "rm -rf /tmp/a"},
            approval_id,
            "approval_caller_mismatch",
            headers=OTHER,
        )
        unknown = await refused(client, {"note": "x"}, "apr_nope", "approval_not_found")
        assert "apr_nope" in unknown
        ran = await call(client, {"note": "rm -rf /tmp/a"}, approval_id)
        assert ran.status_code == 200
        assert executions(log) == ["rm -rf /tmp/a"]

        denied_id = await held(client, {"note": "drop table"})
        await decide(client, denied_id, "deny")
        message = await refused(client, {"note": "drop table"}, denied_id, "approval_denied")
        assert "denied by admin: checked" in message
        assert executions(log) == ["rm -rf /tmp/a"]


async def test_a_policy_change_voids_the_approvals_it_concerns(make_settings, tmp_path):
    log = tmp_path / "executions.log"
    plugins = [("recorder", recorder_plugin(log))]
    async with running_app(settings_for(make_settings, tmp_path), extra_plugins=plugins) as (
        _app,
        client,
    ):
        approval_id = await held(client, {"note": "a"})
        await decide(client, approval_id)
        rule = {"tool": "rec*", "arg": "note", "pattern": "^secret"}
        patched = await client.patch(
            "/gateway/config",
            json={"tools": {"approval": {"rules": [rule]}}},
            headers=ADMIN,
        )
        assert patched.status_code == 200, await patched.get_data(as_text=True)
        await refused(client, {"note": "a"}, approval_id, "approval_policy_changed")
        assert executions(log) == []
        # Asked again under the new policy, it runs.
        again = await held(client, {"note": "a"})
        await decide(client, again)
        assert (await call(client, {"note": "a"}, again)).status_code == 200
        assert executions(log) == ["a"]


async def test_an_expired_approval_runs_nothing(make_settings, tmp_path, store_url):
    log = tmp_path / "executions.log"
    plugins = [("recorder", recorder_plugin(log))]
    async with running_app(settings_for(make_settings, tmp_path), extra_plugins=plugins) as (
        _app,
        client,
    ):
        approved = await held(client, {"note": "late"})
        undecided = await held(client, {"note": "never decided"})
        await decide(client, approved)
        # Their expiry moved into the past, as an hour passing would.
        await db_execute(store_url, "UPDATE tools_approvals SET expires_ms = 1")
        await refused(client, {"note": "late"}, approved, "approval_expired")
        await refused(client, {"note": "never decided"}, undecided, "approval_expired")
        # The undecided one leaves the queue as timed out.
        listed = await (await client.get("/approvals?status=all", headers=ADMIN)).get_json()
        statuses = {a["id"]: a["status"] for a in listed["approvals"]}
        assert statuses[undecided] == "timed_out" and statuses[approved] == "approved"
    assert executions(log) == []


async def test_rules_hold_calls_by_argument_pattern_and_missing_gate(make_settings, tmp_path):
    log = tmp_path / "executions.log"
    plugins = [("recorder", recorder_plugin(log))]
    rules = [
        {"tool": "record", "arg": "note", "pattern": "^prod-"},
        {"tool": "rec*", "without_gate": "allow_unreviewed_notes"},
    ]
    settings = settings_for(make_settings, tmp_path, always=[], rules=rules)
    async with running_app(settings, extra_plugins=plugins) as (_app, client):
        # The admin holds every gate: only the argument rule holds its calls.
        free = await call(client, {"note": "dev-1"}, headers=ADMIN)
        assert free.status_code == 200
        held_id = await held(client, {"note": "prod-1"}, headers=ADMIN)
        listed = await (await client.get("/approvals", headers=ADMIN)).get_json()
        [record] = [a for a in listed["approvals"] if a["id"] == held_id]
        assert record["details"]["reasons"] == ["tool matches 'record' and args.note ~ '^prod-'"]
        # The owner lacks the gate: every call of its is held.
        await held(client, {"note": "dev-2"})
    assert executions(log) == ["dev-1"]


async def test_two_gateways_racing_to_spend_one_approval_run_the_call_once(make_settings, tmp_path):
    log = tmp_path / "executions.log"
    settings = settings_for(make_settings, tmp_path)
    async with (
        running_app(settings, extra_plugins=[("recorder", recorder_plugin(log))]) as (_a, one),
        running_app(settings, extra_plugins=[("recorder", recorder_plugin(log))]) as (_b, two),
    ):
        for round_ in range(3):
            args = {"note": f"race {round_}"}
            approval_id = await held(one, args)
            await decide(two, approval_id)
            answers = await asyncio.gather(
                *(call(c, args, approval_id) for c in (one, two, one, two))
            )
            statuses = sorted(a.status_code for a in answers)
            assert statuses == [200, 409, 409, 409]
            for answer in answers:
                if answer.status_code == 409:
                    assert_error(await answer.get_json(), "approval_replayed")
    assert executions(log) == ["race 0", "race 1", "race 2"]


async def test_the_audit_records_carry_the_digest_the_decision_and_the_outcome(
    make_settings, tmp_path, store_url
):
    log = tmp_path / "executions.log"
    plugins = [("recorder", recorder_plugin(log))]
    async with running_app(settings_for(make_settings, tmp_path), extra_plugins=plugins) as (
        _app,
        client,
    ):
        args = {"note": "audited"}
        approval_id = await held(client, args)
        await decide(client, approval_id)
        assert (await call(client, args, approval_id)).status_code == 200
        await refused(client, args, approval_id, "approval_replayed")

        async def recorded() -> list[tuple[Any, ...]]:
            rows = await db_rows(
                store_url,
                "SELECT action, actor, target, outcome, reason_code, detail FROM audit_records"
                " WHERE action LIKE 'tool.approval.%' ORDER BY seq",
            )
            return rows if len(rows) >= 4 else []

        rows = await until(recorded, "the approval's audit records")
    digest = args_digest(args)
    summary = [(r[0], r[1], r[2], r[3], r[4]) for r in rows]
    assert summary == [
        ("tool.approval.request", "token:owner", approval_id, "pending", "approval_required"),
        ("tool.approval.use", "token:owner", approval_id, "allowed", None),
        ("tool.approval.outcome", "token:owner", approval_id, "succeeded", None),
        ("tool.approval.use", "token:owner", approval_id, "refused", "approval_replayed"),
    ]
    details = [r[5] if isinstance(r[5], dict) else json.loads(r[5]) for r in rows]
    assert all(d["args_digest"] == digest and d["tool"] == "record" for d in details)
    assert details[1]["decision"] == "approved" and details[1]["approver"] == "admin"
    assert details[2]["result"] == "executed"
    # The decision itself: the approve request, by its approver.
    decisions = await audit_rows(store_url, "route = '/approvals/<approval_id>/approve'")
    assert [(r["actor"], r["target"], r["outcome"]) for r in decisions] == [
        ("token:admin", approval_id, "success")
    ]


async def test_wait_for_tool_approval_reports_progress_and_returns_the_decision(
    make_settings, tmp_path
):
    log = tmp_path / "executions.log"
    plugins = [("recorder", recorder_plugin(log))]
    async with running_app(settings_for(make_settings, tmp_path), extra_plugins=plugins) as (
        app,
        client,
    ):
        approval_id = await held(client, {"note": "waited"})
        ticks: list[ToolApprovalProgress] = []
        ticked = asyncio.Event()

        def progress(p: ToolApprovalProgress) -> None:
            ticks.append(p)
            ticked.set()

        ctx = context(app)
        pending = await wait_for_tool_approval(ctx, approval_id, timeout=0.05)
        assert pending.status == "pending" and not pending.approved
        waiter = asyncio.create_task(
            wait_for_tool_approval(
                ctx, approval_id, timeout=60, on_progress=progress, progress_seconds=0.05
            )
        )
        await asyncio.wait_for(ticked.wait(), 30)
        await decide(client, approval_id)
        decision = await asyncio.wait_for(waiter, 30)
        assert decision.approved and decision.approver == "admin"
        assert ticks[0].approval_id == approval_id and ticks[0].tool == "record"
        with pytest.raises(ToolError) as info:
            await wait_for_tool_approval(ctx, "apr_nope", timeout=1)
        assert info.value.code == "approval_not_found"


async def test_the_approval_policy_is_checked_at_config_check(make_settings):
    bad = {
        "always": "record",
        "expiry_seconds": 0,
        "rules": [{"arg": "note"}, {"pattern": "(?<=x)"}, {"tool": "x", "colour": "red"}],
        "colour": 1,
    }
    async with running_app(make_settings()) as (_app, client):
        patched = await client.patch(
            "/gateway/config", json={"tools": {"approval": bad}}, headers=ADMIN
        )
        assert patched.status_code == 400
        message = assert_error(await patched.get_json(), "config_invalid")["message"]
    for expected in (
        "tools.approval.always: must be a list of tool name globs",
        "tools.approval.expiry_seconds: must be a number from 1 to 2.592e+06",
        "tools.approval.rules[0].arg: needs a pattern",
        "tools.approval.rules[1].pattern: not an RE2 pattern",
        "tools.approval.rules[2].colour: unknown setting",
        "tools.approval.colour: unknown setting",
    ):
        assert expected in message


async def test_a_pipeline_tool_step_waits_survives_a_restart_and_runs_once_approved(
    make_settings, tmp_path, store_url
):
    log = tmp_path / "executions.log"
    settings = settings_for(make_settings, tmp_path)
    async with running_app(settings, extra_plugins=[("recorder", recorder_plugin(log))]) as (
        _app,
        client,
    ):
        started = await client.post(
            "/pipelines/record/start", json={"input": {"note": "from a run"}}, headers=OWNER
        )
        assert started.status_code == 202
        run_id = (await started.get_json())["runId"]

        async def waiting() -> dict[str, Any] | None:
            record = await (await client.get(f"/runs/{run_id}", headers=OWNER)).get_json()
            return record if record["status"] == "waiting" else None

        record = await until(waiting, "the run to wait")
        assert record["waiting_for"]["type"] == "tool_approval"
        approval_id = record["waiting_for"]["approval_id"]
        own = await (await client.get("/approvals", headers=OWNER)).get_json()
        [listed] = [a for a in own["approvals"] if a["id"] == approval_id]
        assert listed["run_id"] == run_id and listed["details"]["caller"]["run_id"] == run_id
    assert executions(log) == []
    # A new process on the same store decides it; the run goes on there.
    async with running_app(settings, extra_plugins=[("recorder", recorder_plugin(log))]) as (
        _app,
        client,
    ):
        await decide(client, approval_id)

        async def finished() -> dict[str, Any] | None:
            record = await (await client.get(f"/runs/{run_id}", headers=ADMIN)).get_json()
            return record if record["status"] in ("completed", "failed") else None

        done = await until(finished, "the run to finish")
        assert done["status"] == "completed", done
        assert done["output"] == {"recorded": "from a run"}
    assert executions(log) == ["from a run"]
    rows = await db_rows(
        store_url, f"SELECT outcome FROM tools_approvals WHERE id = '{approval_id}'"
    )
    assert rows == [("executed",)]


async def test_a_denied_tool_step_fails_the_run_and_runs_nothing(make_settings, tmp_path):
    log = tmp_path / "executions.log"
    settings = settings_for(make_settings, tmp_path)
    async with running_app(settings, extra_plugins=[("recorder", recorder_plugin(log))]) as (
        _app,
        client,
    ):
        started = await client.post(
            "/pipelines/record/start", json={"input": {"note": "denied"}}, headers=ADMIN
        )
        run_id = (await started.get_json())["runId"]

        async def approval() -> str | None:
            record = await (await client.get(f"/runs/{run_id}", headers=ADMIN)).get_json()
            waiting = record.get("waiting_for") or {}
            found: str | None = waiting.get("approval_id")
            return found

        approval_id = await until(approval, "the run's tool approval")
        await decide(client, approval_id, "deny")

        async def failed() -> dict[str, Any] | None:
            record = await (await client.get(f"/runs/{run_id}", headers=ADMIN)).get_json()
            return record if record["status"] == "failed" else None

        done = await until(failed, "the run to fail")
        assert "was not approved (denied by admin): checked" in json.dumps(done["error"])
    assert executions(log) == []


async def test_the_reader_without_the_approve_gate_cannot_decide(make_settings, tmp_path):
    log = tmp_path / "executions.log"
    plugins = [("recorder", recorder_plugin(log))]
    async with running_app(settings_for(make_settings, tmp_path), extra_plugins=plugins) as (
        _app,
        client,
    ):
        approval_id = await held(client, {"note": "self-approve"})
        denied = await client.post(f"/approvals/{approval_id}/approve", json={}, headers=OWNER)
        assert denied.status_code == 403
        assert_error(await denied.get_json(), "policy_gate_denied")
        reader = await client.post(f"/approvals/{approval_id}/approve", json={}, headers=READER)
        assert reader.status_code == 403
        await refused(client, {"note": "self-approve"}, approval_id, "approval_pending")
    assert executions(log) == []


async def test_gateway_tool_approval_is_asked_after_the_argument_check_and_can_stop_a_call(
    make_settings, tmp_path
):
    log = tmp_path / "executions.log"
    asked: list[tuple[str, dict[str, Any], str | None]] = []

    async def hold(name: str, args: dict[str, Any], caller: dict[str, Any], tool: Tool) -> None:
        asked.append((name, args, caller.get("owner")))
        if args.get("note") == "stop":
            raise ToolError("held_by_test", "a test plugin holds this call")

    plugins = [
        ("recorder", recorder_plugin(log)),
        ("holder", Plugin(gateway_tool_approval=hold)),
    ]
    settings = settings_for(make_settings, tmp_path, always=[])
    async with running_app(settings, extra_plugins=plugins) as (_app, client):
        assert (await call(client, {"note": "go"})).status_code == 200
        stopped = await call(client, {"note": "stop"})
        assert stopped.status_code == 409
        assert_error(await stopped.get_json(), "held_by_test")
        # Bad arguments fail before the hook: nothing is held for a call that cannot run.
        bad = await call(client, {"note": 3})
        assert_error(await bad.get_json(), "invalid_tool_args")
    assert asked == [
        ("record", {"note": "go"}, "token:owner"),
        ("record", {"note": "stop"}, "token:owner"),
    ]
    assert executions(log) == ["go"]


MCP_SERVER = str(Path(__file__).with_name("mcp_test_server.py"))
MCP_SOURCE = """
from plugins.pipelines.definition import Pipeline, tool

ADD = Pipeline(id="add", steps=[tool("sum", "local.add", lambda c: c.input, retries=0)])
"""


async def test_an_mcp_server_marked_approval_always_holds_every_call_of_its_tools(
    make_settings, tmp_path
):
    directory = write_pipelines(tmp_path, "mcp", MCP_SOURCE)
    server = {"command": [sys.executable, MCP_SERVER, "stdio"], "approval": "always"}
    settings = make_settings(
        plugins={"pipelines": {"directory": str(directory), "poll_seconds": 0.05}},
        mcp={"servers": {"local": server}},
    )
    async with running_app(settings) as (_app, client):

        async def listed() -> bool:
            tools = await (await client.get("/gateway/tools", headers=ADMIN)).get_json()
            return "local.add" in {t["name"] for t in tools["tools"]}

        await until(listed, "the MCP server's tools")
        started = await client.post(
            "/pipelines/add/start", json={"input": {"a": 2, "b": 3}}, headers=ADMIN
        )
        run_id = (await started.get_json())["runId"]

        async def parked() -> dict[str, Any] | None:
            record = await (await client.get(f"/runs/{run_id}", headers=ADMIN)).get_json()
            return record if record["status"] == "waiting" else None

        record = await until(parked, "the run to wait for the MCP tool's approval")
        assert record["waiting_for"]["tool"] == "local.add"
        approval_id = record["waiting_for"]["approval_id"]
        queued = await (await client.get("/approvals", headers=ADMIN)).get_json()
        [approval] = [a for a in queued["approvals"] if a["id"] == approval_id]
        assert approval["details"]["reasons"] == ["the tool is marked approval = always"]
        await decide(client, approval_id)

        async def finished() -> dict[str, Any] | None:
            record = await (await client.get(f"/runs/{run_id}", headers=ADMIN)).get_json()
            return record if record["status"] in ("completed", "failed") else None

        done = await until(finished, "the run to finish")
        assert done["status"] == "completed" and done["output"] == {"result": 5}


def test_config_check_names_a_bad_mcp_approval_value(make_settings):
    from plugins.mcp.config import problems

    settings = make_settings(mcp={"servers": {"x": {"url": "http://a/mcp", "approval": "ask"}}})
    assert problems(settings) == ["mcp.servers.x.approval: must be one of never, always"]


async def test_a_held_call_without_the_approvals_queue_is_refused_and_runs_nothing(
    make_settings, tmp_path
):
    log = tmp_path / "executions.log"
    settings = make_settings(
        plugins={"pipelines": {"enabled": False}},
        tools={"approval": {"always": ["record"]}},
        auth={"tokens": {"owner": {"token": OWNER_TOKEN, "gates": []}}},
    )
    async with running_app(settings, extra_plugins=[("recorder", recorder_plugin(log))]) as (
        _app,
        client,
    ):
        response = await call(client, {"note": "nobody to ask"})
        assert response.status_code == 409
        error = assert_error(await response.get_json(), "approval_unavailable")
        assert "pipelines" in error["message"]
    assert executions(log) == []


async def test_cancelling_a_parked_run_withdraws_its_tool_approval(make_settings, tmp_path):
    log = tmp_path / "executions.log"
    settings = settings_for(make_settings, tmp_path)
    async with running_app(settings, extra_plugins=[("recorder", recorder_plugin(log))]) as (
        _app,
        client,
    ):
        started = await client.post(
            "/pipelines/record/start", json={"input": {"note": "cancelled"}}, headers=ADMIN
        )
        run_id = (await started.get_json())["runId"]

        async def approval() -> str | None:
            record = await (await client.get(f"/runs/{run_id}", headers=ADMIN)).get_json()
            found: str | None = (record.get("waiting_for") or {}).get("approval_id")
            return found

        approval_id = await until(approval, "the run's tool approval")
        cancelled = await client.post(f"/runs/{run_id}/cancel", json={}, headers=ADMIN)
        assert cancelled.status_code == 200, await cancelled.get_data(as_text=True)
        listed = await (await client.get("/approvals?status=all", headers=ADMIN)).get_json()
        [record] = [a for a in listed["approvals"] if a["id"] == approval_id]
        assert record["status"] == "cancelled" and record["reason"] == "the run was cancelled"
        late = await client.post(f"/approvals/{approval_id}/approve", json={}, headers=ADMIN)
        assert late.status_code == 409
        assert_error(await late.get_json(), "approval_not_pending")
    assert executions(log) == []
