"""The history tables: per-arm results, served-list quality, checks and decisions.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _step_columns() -> list[sa.Column]:  # type: ignore[type-arg]
    return [
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("experiment", sa.String(128), nullable=False),
        sa.Column("at_ns", sa.BigInteger, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    ]


def upgrade() -> None:
    """Create the four tables."""
    op.create_table(
        "arm_results",
        *_step_columns(),
        sa.Column("arm", sa.String(128), nullable=False),
        sa.Column("users", sa.Integer, nullable=False),
        sa.Column("converted", sa.Integer, nullable=False),
        sa.Column("conversion", sa.Float, nullable=False),
        sa.Column("conversion_low", sa.Float),
        sa.Column("conversion_high", sa.Float),
        sa.Column("lists", sa.BigInteger, nullable=False),
        sa.Column("successes", sa.BigInteger, nullable=False),
        sa.Column("watch_rate", sa.Float, nullable=False),
        sa.Column("watch_minutes", sa.Float, nullable=False),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("error_rate", sa.Float, nullable=False),
        sa.Column("fallback_rate", sa.Float, nullable=False),
        sa.Column("coverage", sa.Float, nullable=False),
        sa.Column("latency_p99_ms", sa.Float, nullable=False),
        sa.Column("p_value", sa.Float),
        sa.Column("p_sequential", sa.Float),
        sa.Column("chance_to_beat", sa.Float),
        sa.UniqueConstraint("experiment", "arm", "at_ns", name="uq_arm_results_step"),
    )
    op.create_table(
        "served_quality",
        *_step_columns(),
        sa.Column("arm", sa.String(128), nullable=False),
        sa.Column("since_ns", sa.BigInteger, nullable=False),
        sa.Column("lists", sa.BigInteger, nullable=False),
        sa.Column("successes", sa.BigInteger, nullable=False),
        sa.Column("watch_rate", sa.Float),
        sa.UniqueConstraint("experiment", "arm", "at_ns", name="uq_served_quality_step"),
    )
    op.create_table(
        "checks",
        *_step_columns(),
        sa.Column("srm_chi2", sa.Float),
        sa.Column("srm_p", sa.Float),
        sa.Column("pending", sa.BigInteger, nullable=False),
        sa.Column("unexposed", sa.BigInteger, nullable=False),
        sa.Column("lag_s", sa.Float),
        sa.UniqueConstraint("experiment", "at_ns", name="uq_checks_step"),
    )
    op.create_table(
        "decisions",
        *_step_columns(),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("numbers", sa.Text, nullable=False),
        sa.Column("applied", sa.Text, nullable=False),
        sa.Column("dry_run", sa.Boolean, nullable=False),
    )
    op.create_index("ix_decisions_experiment", "decisions", ["experiment", "at_ns"])


def downgrade() -> None:
    """Drop them."""
    op.drop_index("ix_decisions_experiment", "decisions")
    for table in ("decisions", "checks", "served_quality", "arm_results"):
        op.drop_table(table)
