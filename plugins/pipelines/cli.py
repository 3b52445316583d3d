"""``gateway pipelines|run|runs|approvals|schedules|triggers|debug``: commands that talk to
a running gateway over HTTP. URL: ``--url``, ``$GATEWAY_URL``, else the configured bind;
token: ``--token``, ``$GATEWAY_TOKEN``, else the generated admin token in the state dir.
Tables for people; ``--json`` for programs."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
import httpx

# Exit codes of ``gateway run`` (and ``runs show``) by run status.
EXIT_CODES = {
    "completed": 0,
    "failed": 1,
    "cancelled": 2,
    "waiting": 3,
    "paused": 4,
    "pending": 5,
    "running": 5,
}


class Api:
    def __init__(self, url: str | None, token: str | None, as_json: bool) -> None:
        self.url, self.token = _resolve(url, token)
        self.as_json = as_json

    def client(self, timeout: float | None = 30) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def call(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        try:
            with self.client() as client:
                response = client.request(method, path, json=body, **kw)
        except httpx.HTTPError as exc:
            raise click.ClickException(f"cannot reach the gateway at {self.url}: {exc}") from exc
        data = response.json() if response.content else {}
        if response.status_code >= 400:
            error = data.get("error", {}) if isinstance(data, dict) else {}
            raise click.ClickException(
                f"{response.status_code} {error.get('code', 'error')}: {error.get('message', '')}"
            )
        return data

    def show(self, data: Any, rows: list[dict[str, Any]] | None, columns: list[str]) -> None:
        if self.as_json or rows is None:
            click.echo(json.dumps(data, indent=2))
            return
        table = [[_cell(row.get(c)) for c in columns] for row in rows]
        widths = [max([len(c), *(len(r[i]) for r in table)]) for i, c in enumerate(columns)]
        click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
        for r in table:
            click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value)[:60]
    return str(value)


def _resolve(url: str | None, token: str | None) -> tuple[str, str | None]:
    settings = None
    if not url or not token:
        try:
            from host.api import load_settings

            settings = load_settings()
        except Exception:
            settings = None
    if not url:
        bind = settings.server.bind if settings is not None else "127.0.0.1:8787"
        host, _, port = bind.rpartition(":")
        if host in ("0.0.0.0", "::", "[::]", ""):  # noqa: S104 - a wildcard bind: dial loopback
            host = "127.0.0.1"
        scheme = "https" if settings is not None and settings.server.certfile else "http"
        url = f"{scheme}://{host}:{port}"
    if not token and settings is not None:
        path = Path(settings.state_dir) / settings.auth.admin_token_file
        if path.is_file():
            token = path.read_text().strip()
    return url.rstrip("/"), token


def _options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--json", "as_json", is_flag=True, help="print JSON")(fn)
    fn = click.option("--token", envvar="GATEWAY_TOKEN", help="bearer token ($GATEWAY_TOKEN)")(fn)
    return click.option("--url", envvar="GATEWAY_URL", help="gateway URL ($GATEWAY_URL)")(fn)


def _json_arg(raw: str | None, what: str) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{what} is not valid JSON: {exc}") from exc


RUN_COLUMNS = ["id", "pipeline_id", "status", "created_ms", "waiting_for", "error"]


def _follow(api: Api, run_id: str, until_waiting: bool = True) -> None:
    """Print the run's events as they happen (JSONL stream) until it ends (or, with
    ``until_waiting``, until it waits or pauses)."""
    with (
        api.client(timeout=None) as client,
        client.stream(
            "GET", f"/runs/{run_id}/events", headers={"Accept": "application/x-ndjson"}
        ) as response,
    ):
        for line in response.iter_lines():
            if not line:
                continue
            event = json.loads(line)
            if event.get("type") == "heartbeat":
                continue
            if api.as_json:
                click.echo(line)
            else:
                data = {k: v for k, v in event.get("data", {}).items() if k != "run_id"}
                click.echo(
                    f"{event.get('seq', ''):>4} {event['type']:<20} {json.dumps(data)[:100]}"
                )
            if event["type"] in ("run.completed", "run.failed", "run.cancelled"):
                return
            if until_waiting and event["type"] in ("run.waiting", "run.paused"):
                return


def register(cli: click.Group) -> None:
    @cli.group("pipelines")
    def pipelines() -> None:
        """List and describe the pipelines of a running gateway."""

    @pipelines.command("list")
    @_options
    def pipelines_list(url: str | None, token: str | None, as_json: bool) -> None:
        """List pipelines."""
        api = Api(url, token, as_json)
        data = api.call("GET", "/pipelines")
        api.show(data, data["pipelines"], ["id", "version", "steps", "source", "description"])

    @pipelines.command("show")
    @click.argument("pipeline")
    @_options
    def pipelines_show(pipeline: str, url: str | None, token: str | None, as_json: bool) -> None:
        """Describe one pipeline (steps and schemas)."""
        api = Api(url, token, True)
        api.show(api.call("GET", f"/pipelines/{pipeline}"), None, [])

    @cli.command("run")
    @click.argument("pipeline")
    @click.option("--input", "input_json", default="{}", help="the run input, as JSON")
    @click.option("--follow", is_flag=True, help="print events live until the run ends or waits")
    @click.option("--idempotency-key", help="send an Idempotency-Key header")
    @_options
    def run(
        pipeline: str,
        input_json: str,
        follow: bool,
        idempotency_key: str | None,
        url: str | None,
        token: str | None,
        as_json: bool,
    ) -> None:
        """Start a run and wait for it. Exit status: 0 completed, 1 failed, 2 cancelled,
        3 waiting, 4 paused at a breakpoint, 5 still pending or running."""
        api = Api(url, token, as_json)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = {"input": _json_arg(input_json, "--input")}
        if follow:
            started = api.call("POST", f"/pipelines/{pipeline}/start", body, headers=headers)
            if not as_json:
                click.echo(f"run {started['runId']}")
            _follow(api, started["runId"])
            record = api.call("GET", f"/runs/{started['runId']}")
        else:
            body["wait_seconds"] = 300
            record = api.call("POST", f"/pipelines/{pipeline}/run", body, headers=headers)
        if as_json and not follow:
            click.echo(json.dumps(record, indent=2))
        elif not as_json:
            click.echo(f"{record['id']} {record['status']}")
            if record.get("output") is not None:
                click.echo(json.dumps(record["output"], indent=2))
            if record.get("error"):
                click.echo(f"error: {record['error'].get('message')}", err=True)
            if record.get("waiting_for"):
                click.echo(f"waiting for: {json.dumps(record['waiting_for'])}")
        sys.exit(EXIT_CODES.get(record["status"], 1))

    @cli.group("runs")
    def runs() -> None:
        """Inspect and act on runs."""

    @runs.command("list")
    @click.option("--pipeline", help="only this pipeline")
    @click.option("--status", help="only runs in this state")
    @click.option("--limit", type=int, default=50, show_default=True)
    @_options
    def runs_list(
        pipeline: str | None,
        status: str | None,
        limit: int,
        url: str | None,
        token: str | None,
        as_json: bool,
    ) -> None:
        """List runs, newest first."""
        api = Api(url, token, as_json)
        params: dict[str, Any] = {"limit": limit}
        if pipeline:
            params["pipeline"] = pipeline
        if status:
            params["status"] = status
        data = api.call("GET", "/runs", params=params)
        api.show(data, data["runs"], RUN_COLUMNS)

    @runs.command("show")
    @click.argument("run_id")
    @_options
    def runs_show(run_id: str, url: str | None, token: str | None, as_json: bool) -> None:
        """Show a run record."""
        api = Api(url, token, True)
        api.show(api.call("GET", f"/runs/{run_id}"), None, [])

    @runs.command("events")
    @click.argument("run_id")
    @click.option("--follow", is_flag=True, help="keep printing live events")
    @_options
    def runs_events(
        run_id: str, follow: bool, url: str | None, token: str | None, as_json: bool
    ) -> None:
        """Print a run's events."""
        api = Api(url, token, as_json)
        if follow:
            _follow(api, run_id, until_waiting=False)
            return
        data = api.call("GET", f"/runs/{run_id}/events", params={"format": "json", "limit": 1000})
        api.show(data, data["events"], ["seq", "type", "ts_ms", "data"])

    @runs.command("resume")
    @click.argument("run_id")
    @click.option("--input", "input_json", default="null", help="the input, as JSON")
    @_options
    def runs_resume(
        run_id: str, input_json: str, url: str | None, token: str | None, as_json: bool
    ) -> None:
        """Give a waiting run its input."""
        api = Api(url, token, as_json)
        record = api.call(
            "POST", f"/runs/{run_id}/resume", {"input": _json_arg(input_json, "--input")}
        )
        api.show(record, [record], RUN_COLUMNS)

    @runs.command("cancel")
    @click.argument("run_id")
    @click.option("--reason", help="why")
    @_options
    def runs_cancel(
        run_id: str, reason: str | None, url: str | None, token: str | None, as_json: bool
    ) -> None:
        """Cancel a run."""
        api = Api(url, token, as_json)
        record = api.call("POST", f"/runs/{run_id}/cancel", {"reason": reason})
        api.show(record, [record], RUN_COLUMNS)

    @cli.group("approvals")
    def approvals() -> None:
        """List and decide approvals."""

    @approvals.command("list")
    @click.option("--all", "show_all", is_flag=True, help="decided ones too")
    @_options
    def approvals_list(show_all: bool, url: str | None, token: str | None, as_json: bool) -> None:
        """List pending approvals."""
        api = Api(url, token, as_json)
        data = api.call("GET", "/approvals", params={"status": "all" if show_all else "pending"})
        columns = ["id", "source", "run_id", "step_id", "status", "message"]
        api.show(data, data["approvals"], columns)

    for decision in ("approve", "deny"):

        def decide(
            approval_id: str,
            reason: str | None,
            url: str | None,
            token: str | None,
            as_json: bool,
            _decision: str = decision,
        ) -> None:
            api = Api(url, token, as_json)
            record = api.call("POST", f"/approvals/{approval_id}/{_decision}", {"reason": reason})
            api.show(record, [record], ["id", "source", "run_id", "status", "approver"])

        decide.__doc__ = (
            f"{decision.capitalize()} an approval by its id: a run's approval gate (its run "
            "id) or an agent's permission request (apr_...)."
        )
        argument = click.argument("approval_id")
        command = _options(click.option("--reason", help="why")(argument(decide)))
        approvals.command(decision)(command)

    @cli.group("schedules")
    def schedules() -> None:
        """List, add and remove schedules."""

    schedule_columns = ["id", "pipeline_id", "cron", "interval_seconds", "timezone"]
    schedule_columns += ["next_fire_ms", "last_outcome", "owner", "suspended"]

    @schedules.command("list")
    @_options
    def schedules_list(url: str | None, token: str | None, as_json: bool) -> None:
        """List schedules."""
        api = Api(url, token, as_json)
        data = api.call("GET", "/schedules")
        api.show(data, data["schedules"], schedule_columns)

    @schedules.command("add")
    @click.argument("pipeline")
    @click.option("--cron", help="5-field cron expression")
    @click.option("--every", "interval", type=float, help="interval in seconds")
    @click.option("--timezone", default="UTC", show_default=True, help="IANA time zone")
    @click.option("--input", "input_json", default="{}", help="the run input, as JSON")
    @click.option(
        "--overlap",
        type=click.Choice(["skip", "queue", "cancel"]),
        default="skip",
        show_default=True,
    )
    @click.option("--id", "schedule_id", help="schedule id (default: generated)")
    @_options
    def schedules_add(
        pipeline: str,
        cron: str | None,
        interval: float | None,
        timezone: str,
        input_json: str,
        overlap: str,
        schedule_id: str | None,
        url: str | None,
        token: str | None,
        as_json: bool,
    ) -> None:
        """Add a schedule."""
        api = Api(url, token, as_json)
        body = {
            "pipeline_id": pipeline,
            "cron": cron,
            "interval_seconds": interval,
            "timezone": timezone,
            "input": _json_arg(input_json, "--input"),
            "overlap": overlap,
        }
        if schedule_id:
            body["id"] = schedule_id
        record = api.call("POST", "/schedules", body)
        api.show(record, [record], schedule_columns)

    @schedules.command("rm")
    @click.argument("schedule_id")
    @_options
    def schedules_rm(schedule_id: str, url: str | None, token: str | None, as_json: bool) -> None:
        """Remove a schedule."""
        api = Api(url, token, as_json)
        api.show(api.call("DELETE", f"/schedules/{schedule_id}"), None, [])

    @cli.group("triggers")
    def triggers() -> None:
        """List and fire triggers."""

    @triggers.command("list")
    @_options
    def triggers_list(url: str | None, token: str | None, as_json: bool) -> None:
        """List triggers."""
        api = Api(url, token, as_json)
        data = api.call("GET", "/triggers")
        api.show(data, data["triggers"], ["id", "type", "pipeline_id", "description"])

    @triggers.command("fire")
    @click.argument("trigger_id")
    @click.option("--input", "input_json", default=None, help="run input for manual triggers")
    @_options
    def triggers_fire(
        trigger_id: str, input_json: str | None, url: str | None, token: str | None, as_json: bool
    ) -> None:
        """Fire a trigger now."""
        api = Api(url, token, as_json)
        data = api.call(
            "POST", f"/triggers/{trigger_id}/fire", {"input": _json_arg(input_json, "--input")}
        )
        api.show(data, [data], ["trigger_id", "outcome", "runId"])

    @cli.group("debug")
    def debug() -> None:
        """Breakpoints and paused runs."""

    @debug.command("breakpoints")
    @_options
    def debug_breakpoints(url: str | None, token: str | None, as_json: bool) -> None:
        """List breakpoints."""
        api = Api(url, token, as_json)
        data = api.call("GET", "/debug/breakpoints")
        api.show(data, data["breakpoints"], ["step_id", "pipeline_id", "created_by", "created_ms"])

    @debug.command("add")
    @click.argument("step_id")
    @click.option("--pipeline", help="only runs of this pipeline")
    @_options
    def debug_add(
        step_id: str, pipeline: str | None, url: str | None, token: str | None, as_json: bool
    ) -> None:
        """Pause every run before STEP_ID."""
        api = Api(url, token, as_json)
        data = api.call("POST", "/debug/breakpoints", {"step_id": step_id, "pipeline_id": pipeline})
        api.show(data, [data], ["step_id", "pipeline_id", "created_by"])

    @debug.command("rm")
    @click.argument("step_id")
    @_options
    def debug_rm(step_id: str, url: str | None, token: str | None, as_json: bool) -> None:
        """Remove a breakpoint."""
        api = Api(url, token, as_json)
        # A step path's brackets must be sent encoded (``rounds%5B1%5D.ask``).
        api.show(api.call("DELETE", f"/debug/breakpoints/{quote(step_id, safe='')}"), None, [])

    @debug.command("runs")
    @_options
    def debug_runs(url: str | None, token: str | None, as_json: bool) -> None:
        """List runs paused at a breakpoint."""
        api = Api(url, token, as_json)
        data = api.call("GET", "/debug/runs")
        api.show(data, data["runs"], ["id", "pipeline_id", "paused_at", "created_ms"])

    @debug.command("release")
    @click.argument("run_id")
    @_options
    def debug_release(run_id: str, url: str | None, token: str | None, as_json: bool) -> None:
        """Let a paused run continue."""
        api = Api(url, token, as_json)
        record = api.call("POST", f"/debug/runs/{run_id}/release")
        api.show(record, [record], RUN_COLUMNS)
