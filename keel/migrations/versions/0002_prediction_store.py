"""Prediction store: batches, predictions, outcomes, monitoring metrics, drift, quarantine.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "score_batches",
        sa.Column("batch_id", sa.String(120), primary_key=True),
        sa.Column("model_name", sa.String(100), nullable=False),
        sa.Column("model_version", sa.Integer, nullable=False),
        sa.Column("as_of", _ts(), nullable=False, index=True),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("quarantined", sa.Integer, nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
    )
    op.create_table(
        "predictions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "batch_id", sa.String(120), sa.ForeignKey("score_batches.batch_id"), nullable=False
        ),
        sa.Column("entity_key", sa.String(200), nullable=False),
        sa.Column("as_of", _ts(), nullable=False),
        sa.Column("model_name", sa.String(100), nullable=False),
        sa.Column("model_version", sa.Integer, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("decision", sa.Integer, nullable=False),
        sa.Column("reasons", sa.JSON, nullable=False),
        sa.Column("scored_at", _ts(), nullable=False),
        sa.UniqueConstraint("batch_id", "entity_key", name="uq_prediction"),
    )
    op.create_index("ix_predictions_batch_id", "predictions", ["batch_id"])
    op.create_index("ix_predictions_entity_key", "predictions", ["entity_key"])
    op.create_table(
        "outcomes",
        sa.Column("entity_key", sa.String(200), primary_key=True),
        sa.Column("label", sa.Float, nullable=False),
        sa.Column("observed_at", _ts(), nullable=False),
        sa.Column("recorded_at", _ts(), nullable=False),
    )
    for table, extra in (
        (
            "monitoring_metrics",
            [sa.Column("metric", sa.String(60), nullable=False), sa.Column("value", sa.Float)],
        ),
        (
            "drift_results",
            [
                sa.Column("feature", sa.String(200), nullable=False),
                sa.Column("statistic", sa.String(20), nullable=False),
                sa.Column("value", sa.Float, nullable=False),
                sa.Column("threshold", sa.Float, nullable=False),
                sa.Column("drifted", sa.Boolean, nullable=False),
            ],
        ),
    ):
        op.create_table(
            table,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("as_of", _ts(), nullable=False, index=True),
            sa.Column("window_start", _ts(), nullable=False),
            sa.Column("window_end", _ts(), nullable=False),
            sa.Column("model_name", sa.String(100), nullable=False),
            sa.Column("model_version", sa.Integer, nullable=False),
            *extra,
        )
    op.create_table(
        "quarantine",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("batch_id", sa.String(120), nullable=False, index=True),
        sa.Column("entity_key", sa.String(200), nullable=False),
        sa.Column("reasons", sa.JSON, nullable=False),
        sa.Column("record", sa.JSON, nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.UniqueConstraint("batch_id", "entity_key", name="uq_quarantine"),
    )


def downgrade() -> None:
    for table in (
        "quarantine",
        "drift_results",
        "monitoring_metrics",
        "outcomes",
        "predictions",
        "score_batches",
    ):
        op.drop_table(table)
