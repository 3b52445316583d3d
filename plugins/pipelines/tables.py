"""The pipelines plugin's tables and their migration (namespace ``pipelines``)."""

from __future__ import annotations

import sqlalchemy as sa

from host.api import Migration
from plugins.pipelines.idempotency import namespace_stored_keys

NAMESPACE = "pipelines"
metadata = sa.MetaData()

runs = sa.Table(
    "pipelines_runs",
    metadata,
    # ``n`` orders runs (pending runs start in this order) and pages listings.
    sa.Column("n", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("pipeline_id", sa.String(200), nullable=False, index=True),
    sa.Column("pipeline_version", sa.String(100), nullable=False),
    sa.Column("definition_key", sa.String(200), nullable=False),
    # What the run started with: version, fingerprint, origin, source (migration 3).
    sa.Column("definition", sa.JSON, nullable=True),
    sa.Column("status", sa.String(20), nullable=False, index=True),
    sa.Column("input", sa.JSON, nullable=False),
    sa.Column("output", sa.JSON, nullable=True),
    sa.Column("error", sa.JSON, nullable=True),
    sa.Column("cursor", sa.Integer, nullable=False, default=0),
    sa.Column("results", sa.JSON, nullable=False),
    sa.Column("resolutions", sa.JSON, nullable=False),
    sa.Column("waiting_for", sa.JSON, nullable=True),
    sa.Column("paused_at", sa.String(200), nullable=True),
    sa.Column("released_step", sa.String(200), nullable=True),
    sa.Column("trigger", sa.JSON, nullable=False),
    sa.Column("idempotency_key", sa.String(300), nullable=True),
    # SHA-256 of the request an API key was first used with (migration 6): a reuse of the
    # key with another request is refused rather than answered with this run.
    sa.Column("idempotency_fingerprint", sa.String(64), nullable=True),
    sa.Column("created_by", sa.String(200), nullable=True),
    # The owner's ``Principal.key`` (host.api.owner_key; ``webhook:<name>`` for a webhook's
    # runs); NULL on runs stored before migration 5, left to read-all holders.
    sa.Column("owner", sa.String(300), nullable=True, index=True),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("started_ms", sa.BigInteger, nullable=True),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
    sa.Column("finished_ms", sa.BigInteger, nullable=True),
    sa.Column("claims", sa.Integer, nullable=False, default=0),
    # Claims in a row that ended without progress (migration 8; NULL counts as 0): counted
    # at each claim, cleared when a step's outcome is stored or the run waits or pauses,
    # given back when a graceful stop hands the run back. Past ``max_crashed_claims`` the
    # run fails with ``run_crashed_repeatedly``.
    sa.Column("stalled_claims", sa.Integer, nullable=True),
    sa.Column("lease_owner", sa.String(200), nullable=True),
    sa.Column("lease_expires_ms", sa.BigInteger, nullable=True),
    sa.UniqueConstraint("pipeline_id", "idempotency_key", name="uq_pipelines_runs_idem"),
)

step_results = sa.Table(
    "pipelines_step_results",
    metadata,
    sa.Column("n", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), nullable=False, index=True),
    sa.Column("step_id", sa.String(200), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("output", sa.JSON, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("started_ms", sa.BigInteger, nullable=False),
    sa.Column("finished_ms", sa.BigInteger, nullable=False),
)

approvals = sa.Table(
    "pipelines_approvals",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("step_id", sa.String(200), primary_key=True),
    sa.Column("pipeline_id", sa.String(200), nullable=False),
    sa.Column("status", sa.String(20), nullable=False, index=True),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("requested_ms", sa.BigInteger, nullable=False),
    sa.Column("expires_ms", sa.BigInteger, nullable=True),
    sa.Column("on_timeout", sa.String(20), nullable=False),
    sa.Column("resolved_ms", sa.BigInteger, nullable=True),
    sa.Column("approver", sa.String(200), nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
)

# Approvals other plugins ask for through the ``ApprovalQueue`` service (an agent's
# permission request): listed and decided beside the runs' approval gates (migration 9).
queue_approvals = sa.Table(
    "pipelines_queue_approvals",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("source", sa.String(100), nullable=False),
    sa.Column("subject", sa.String(200), nullable=False, index=True),
    sa.Column("run_id", sa.String(64), nullable=True),
    sa.Column("status", sa.String(20), nullable=False, index=True),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("details", sa.JSON, nullable=True),
    sa.Column("owner", sa.String(300), nullable=True),
    sa.Column("requested_ms", sa.BigInteger, nullable=False),
    sa.Column("resolved_ms", sa.BigInteger, nullable=True),
    sa.Column("approver", sa.String(200), nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
)

breakpoints = sa.Table(
    "pipelines_breakpoints",
    metadata,
    sa.Column("step_id", sa.String(200), primary_key=True),
    sa.Column("pipeline_id", sa.String(200), nullable=True),
    sa.Column("created_by", sa.String(200), nullable=True),
    sa.Column("owner", sa.String(300), nullable=True),  # migration 5
    sa.Column("created_ms", sa.BigInteger, nullable=False),
)

schedules = sa.Table(
    "pipelines_schedules",
    metadata,
    sa.Column("id", sa.String(100), primary_key=True),
    sa.Column("pipeline_id", sa.String(200), nullable=False),
    sa.Column("cron", sa.String(200), nullable=True),
    sa.Column("timezone", sa.String(100), nullable=False),
    sa.Column("interval_seconds", sa.Float, nullable=True),
    sa.Column("input", sa.JSON, nullable=False),
    sa.Column("overlap", sa.String(20), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=True),
    # Its runs are owned by it; NULL on schedules made before migration 5.
    sa.Column("owner", sa.String(300), nullable=True),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("next_fire_ms", sa.BigInteger, nullable=False),
    sa.Column("last_fire_ms", sa.BigInteger, nullable=True),
    sa.Column("last_outcome", sa.String(40), nullable=True),
    sa.Column("last_run_id", sa.String(64), nullable=True),
    sa.Column("missed", sa.Integer, nullable=False, default=0),
)

# One row per tick that was due: fired, skipped (paused, overlap) or missed (while down).
schedule_fires = sa.Table(
    "pipelines_schedule_fires",
    metadata,
    sa.Column("schedule_id", sa.String(100), primary_key=True),
    sa.Column("tick_ms", sa.BigInteger, primary_key=True),
    # Indexed: every store poll looks for fires left ``firing`` (migration 7).
    sa.Column("outcome", sa.String(40), nullable=False, index=True),
    sa.Column("run_id", sa.String(64), nullable=True),
    sa.Column("recorded_ms", sa.BigInteger, nullable=False),
)

# The source of every pipelines module a run started with, once per content hash: a run
# resumed after a restart is rebuilt from it when the directory now holds another version.
definition_sources = sa.Table(
    "pipelines_definition_sources",
    metadata,
    sa.Column("digest", sa.String(64), primary_key=True),  # sha256 hex of the source
    sa.Column("path", sa.String(1000), nullable=False),  # the file it was read from
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
)

# Per run, the state of every step by its path (``review``, ``review.approve``,
# ``count[2].tick``): attempts (written before each attempt runs) and, once finished, the
# outcome that a resumed run replays instead of running the step again. ``#if`` and
# ``#while`` paths hold the decisions of branch and loop steps.
step_journal = sa.Table(
    "pipelines_step_journal",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("path", sa.String(500), primary_key=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("output", sa.JSON, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("started_ms", sa.BigInteger, nullable=False),
    sa.Column("finished_ms", sa.BigInteger, nullable=True),
)


def _definitions_upgrade(conn: sa.Connection) -> None:
    Migration.ensure_column(conn, runs.c.definition)
    for table in (definition_sources, step_journal):
        table.create(conn, checkfirst=True)


def _owners_upgrade(conn: sa.Connection) -> None:
    for column in (runs.c.owner, schedules.c.owner, breakpoints.c.owner):
        Migration.ensure_column(conn, column)
    for index in runs.indexes:
        if index.columns.contains_column(runs.c.owner):
            index.create(conn, checkfirst=True)


def _fires_by_outcome(conn: sa.Connection) -> None:
    for index in schedule_fires.indexes:
        index.create(conn, checkfirst=True)


MIGRATIONS: tuple[Migration, ...] = (
    Migration.create_tables(
        NAMESPACE,
        1,
        "runs, step results, approvals, breakpoints",
        [runs, step_results, approvals, breakpoints],
    ),
    Migration.create_tables(NAMESPACE, 2, "schedules and their fires", [schedules, schedule_fires]),
    Migration(
        NAMESPACE,
        3,
        "run definitions, stored definition sources, step journal",
        _definitions_upgrade,
    ),
    Migration(
        NAMESPACE,
        4,
        "idempotency keys stored per origin (api, webhook, schedule, legacy)",
        lambda conn: namespace_stored_keys(conn, runs),
    ),
    # Rows stored before it keep owner NULL: visible to read-all holders only.
    Migration(NAMESPACE, 5, "owners of runs, schedules and breakpoints", _owners_upgrade),
    Migration(
        NAMESPACE,
        6,
        "fingerprints of the requests idempotency keys were first used with",
        lambda conn: Migration.ensure_column(conn, runs.c.idempotency_fingerprint),
    ),
    Migration(
        NAMESPACE,
        7,
        "schedule fires indexed by outcome (fires left firing are looked for on each poll)",
        _fires_by_outcome,
    ),
    Migration(
        NAMESPACE,
        8,
        "claims in a row without progress (runs that keep killing their process)",
        lambda conn: Migration.ensure_column(conn, runs.c.stalled_claims),
    ),
    Migration.create_tables(
        NAMESPACE,
        9,
        "approvals asked for by other plugins (an agent's permission requests)",
        [queue_approvals],
    ),
)
