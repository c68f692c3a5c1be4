"""The history tables as SQLAlchemy Core objects (the schema itself is made by migrations)."""

from __future__ import annotations

import sqlalchemy as sa

METADATA = sa.MetaData()


def _step(name: str, *columns: sa.Column, unique: tuple[str, ...] = ()) -> sa.Table:  # type: ignore[type-arg]
    extra: list[sa.Constraint] = []
    if unique:
        extra.append(sa.UniqueConstraint(*unique, name=f"uq_{name}_step"))
    return sa.Table(
        name,
        METADATA,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("experiment", sa.String(128), nullable=False),
        sa.Column("at_ns", sa.BigInteger, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        *columns,
        *extra,
    )


ARM_RESULTS = _step(
    "arm_results",
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
    unique=("experiment", "arm", "at_ns"),
)
SERVED_QUALITY = _step(
    "served_quality",
    sa.Column("arm", sa.String(128), nullable=False),
    sa.Column("since_ns", sa.BigInteger, nullable=False),
    sa.Column("lists", sa.BigInteger, nullable=False),
    sa.Column("successes", sa.BigInteger, nullable=False),
    sa.Column("watch_rate", sa.Float),
    unique=("experiment", "arm", "at_ns"),
)
CHECKS = _step(
    "checks",
    sa.Column("srm_chi2", sa.Float),
    sa.Column("srm_p", sa.Float),
    sa.Column("pending", sa.BigInteger, nullable=False),
    sa.Column("unexposed", sa.BigInteger, nullable=False),
    sa.Column("lag_s", sa.Float),
    unique=("experiment", "at_ns"),
)
DECISIONS = _step(
    "decisions",
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("numbers", sa.Text, nullable=False),
    sa.Column("applied", sa.Text, nullable=False),
    sa.Column("dry_run", sa.Boolean, nullable=False),
)
sa.Index("ix_decisions_experiment", DECISIONS.c.experiment, DECISIONS.c.at_ns)
