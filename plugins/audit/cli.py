"""``gateway audit verify|export``: read the audit log straight from the store (the
gateway may run or not), so a check does not depend on the process being checked."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO, TypeVar

import click

T = TypeVar("T")

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="config file (default: $GATEWAY_CONFIG, else ./gateway.toml if present)",
)


def _with_store(config_path: str | None, work: Callable[[Any], Awaitable[T]]) -> T:
    from host.api import Store, load_settings
    from plugins.audit.tables import MIGRATIONS

    try:
        settings = load_settings(config_path)
    except Exception as exc:
        raise click.ClickException(str(exc)) from exc

    async def run() -> T:
        store = Store.for_settings(settings)
        await store.open(MIGRATIONS)
        try:
            return await work(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except click.ClickException:
        raise
    except Exception as exc:
        problem = f"{type(exc).__name__}: {exc}"
        raise click.ClickException(f"cannot read the audit log: {problem}") from exc


def register(cli: click.Group) -> None:
    @cli.group("audit")
    def audit() -> None:
        """The tamper-evident audit log: verify its hash chain, export it."""

    @audit.command("verify")
    @config_option
    @click.option("--json", "as_json", is_flag=True, help="print JSON")
    def verify_cmd(config_path: str | None, as_json: bool) -> None:
        """Check the hash chain of every record; exit 1 and name the first broken link
        if a record was altered or removed."""
        from plugins.audit.chain import verify

        report = _with_store(config_path, verify)
        if as_json:
            click.echo(json.dumps(report.as_dict(), indent=2))
        elif report.ok:
            click.echo(
                f"OK: {report.records} records verified (seq {report.first_seq or 0} to "
                f"{report.last_seq or 0}); head {report.head_hash}"
            )
        if not report.ok:
            assert report.broken is not None
            if not as_json:
                click.echo(
                    f"BROKEN at record {report.broken.seq} ({report.broken.problem}): "
                    f"{report.broken.message}"
                )
            sys.exit(1)

    @audit.command("export")
    @config_option
    @click.option("--output", type=click.Path(dir_okay=False), help="file (default stdout)")
    @click.option("--source", help="only this source (request, auth, safety, ...)")
    @click.option("--action", help="only this action")
    @click.option("--actor", help="only this actor (a Principal.key)")
    @click.option("--reason-code", help="only this reason code")
    @click.option("--since-ms", type=click.IntRange(0), help="at or after (Unix ms)")
    @click.option("--until-ms", type=click.IntRange(0), help="before (Unix ms)")
    def export_cmd(
        config_path: str | None,
        output: str | None,
        source: str | None,
        action: str | None,
        actor: str | None,
        reason_code: str | None,
        since_ms: int | None,
        until_ms: int | None,
    ) -> None:
        """Write the records, oldest first, as JSON lines (with their hashes)."""
        from plugins.audit.models import AuditFilter
        from plugins.audit.queries import export

        wanted = AuditFilter(
            source=source,
            action=action,
            actor=actor,
            reason_code=reason_code,
            since_ms=since_ms,
            until_ms=until_ms,
        )

        async def write(store: Any, out: TextIO) -> int:
            n = 0
            async for record in export(store, wanted):
                out.write(json.dumps(record.as_dict(), separators=(",", ":")) + "\n")
                n += 1
            return n

        if output is None:
            _with_store(config_path, lambda store: write(store, sys.stdout))
            return
        path = Path(output)
        with path.open("w", encoding="utf-8") as out:
            n = _with_store(config_path, lambda store: write(store, out))
        click.echo(f"exported {n} records to {path}", err=True)
