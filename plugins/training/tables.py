"""The training plugin's tables and their migration (namespace ``training``)."""

from __future__ import annotations

import sqlalchemy as sa

from host.api import Migration

NAMESPACE = "training"
metadata = sa.MetaData()

rollouts = sa.Table(
    "training_rollouts",
    metadata,
    # ``n`` orders rollouts and pages listings and exports.
    sa.Column("n", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(40), nullable=False, unique=True),
    # runs | responses | chat; ``source_key`` is the run id, or the owner and session key
    # of a conversation (one rollout per conversation, its turns appended).
    sa.Column("source", sa.String(20), nullable=False),
    sa.Column("source_key", sa.String(700), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=True, index=True),
    sa.Column("pipeline_id", sa.String(200), nullable=True, index=True),
    sa.Column("response_id", sa.String(100), nullable=True, index=True),
    sa.Column("session_key", sa.String(300), nullable=True),
    sa.Column("model", sa.String(200), nullable=True, index=True),
    sa.Column("outcome", sa.String(20), nullable=False, index=True),
    sa.Column("owner", sa.String(300), nullable=True, index=True),
    sa.Column("created_by", sa.String(200), nullable=True),
    # The trajectory in the chat fine-tuning shape (messages, tools) and the details it
    # was built from (steps of a run, turns of a conversation).
    sa.Column("messages", sa.JSON, nullable=False),
    sa.Column("tools", sa.JSON, nullable=True),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Column("turns", sa.Integer, nullable=False, default=1),
    sa.Column("redactions", sa.Integer, nullable=False, default=0),
    sa.Column("reward", sa.Float, nullable=True),
    sa.Column("feedback", sa.JSON, nullable=True),
    sa.Column("created_ms", sa.BigInteger, nullable=False, index=True),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("source", "source_key", name="uq_training_rollouts_source"),
)

# The collection settings changed through PATCH /gateway/training/config: one row.
settings = sa.Table(
    "training_settings",
    metadata,
    sa.Column("key", sa.String(50), primary_key=True),
    sa.Column("value", sa.JSON, nullable=False),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=True),
)

exports = sa.Table(
    "training_exports",
    metadata,
    sa.Column("n", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(40), nullable=False, unique=True),
    sa.Column("status", sa.String(20), nullable=False),  # completed | failed
    sa.Column("file", sa.String(1000), nullable=True),
    sa.Column("filters", sa.JSON, nullable=False),
    sa.Column("rollouts", sa.Integer, nullable=False, default=0),
    sa.Column("skipped", sa.Integer, nullable=False, default=0),
    sa.Column("batches", sa.Integer, nullable=False, default=0),
    sa.Column("bytes", sa.BigInteger, nullable=False, default=0),
    sa.Column("sha256", sa.String(64), nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("owner", sa.String(300), nullable=True, index=True),
    sa.Column("created_by", sa.String(200), nullable=True),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("finished_ms", sa.BigInteger, nullable=True),
)

MIGRATIONS = (
    Migration.create_tables(
        NAMESPACE, 1, "rollouts, collection settings, exports", [rollouts, settings, exports]
    ),
)
