"""Live accuracy and history in SQL: per-arm results, served-list quality, checks, decisions.

SQLite by default (a file under ``.run/``), PostgreSQL by URL
(``postgresql+psycopg://user@host:port/db``).  ``migrate()`` brings the schema to the newest
Alembic revision.  A step is written in one transaction and keyed by (experiment, arm, event
time), so a monitor that restarts and re-records the same step changes nothing.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from services.monitor.analysis import Analysis
from services.monitor.tables import ARM_RESULTS, CHECKS, DECISIONS, SERVED_QUALITY

__all__ = ["History"]

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _f(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


class History:
    """The history database behind one SQLAlchemy engine."""

    def __init__(self, url: str) -> None:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.url = url
        self.engine = sa.create_engine(url, pool_pre_ping=True, future=True)

    def migrate(self, revision: str = "head") -> None:
        """Upgrade the schema to ``revision`` (creates the tables on an empty database)."""
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)

    def revision(self) -> str | None:
        """The schema's current Alembic revision (None before ``migrate``)."""
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()

    def record_step(
        self, analysis: Analysis, previous: Analysis | None = None, lag_s: float | None = None
    ) -> bool:
        """Write one evaluation step; False when that step was already recorded."""
        now = _dt.datetime.now(_dt.UTC)
        exp, at = analysis.experiment, analysis.edge_ns
        comps = {c.arm: c for c in analysis.comparisons}
        with self.engine.begin() as conn:
            seen = conn.execute(
                sa.select(CHECKS.c.id).where(CHECKS.c.experiment == exp, CHECKS.c.at_ns == at)
            ).first()
            if seen is not None:
                return False
            conn.execute(
                CHECKS.insert().values(
                    experiment=exp,
                    at_ns=at,
                    recorded_at=now,
                    srm_chi2=_f(analysis.srm.get("chi2")),
                    srm_p=_f(analysis.srm.get("p_value")),
                    pending=analysis.pending,
                    unexposed=analysis.unexposed,
                    lag_s=_f(lag_s),
                )
            )
            rows, quality = [], []
            for a in analysis.arms:
                c = comps.get(a.arm)
                fixed = c.fixed.get("conversion", {}) if c else {}
                rows.append(
                    {
                        "experiment": exp,
                        "at_ns": at,
                        "recorded_at": now,
                        "arm": a.arm,
                        "users": a.users,
                        "converted": a.converted,
                        "conversion": a.conversion,
                        "conversion_low": _f(a.conversion_ci[0]),
                        "conversion_high": _f(a.conversion_ci[1]),
                        "lists": a.lists,
                        "successes": a.successes,
                        "watch_rate": a.watch_rate,
                        "watch_minutes": a.watch_minutes,
                        "requests": a.requests,
                        "error_rate": a.error_rate,
                        "fallback_rate": a.fallback_rate,
                        "coverage": a.coverage,
                        "latency_p99_ms": a.latency_p99_ms,
                        "p_value": _f(fixed.get("p_value")),
                        "p_sequential": _f(c.sequential.get("p_value")) if c else None,
                        "chance_to_beat": _f(c.bayes.get("chance_to_beat")) if c else None,
                    }
                )
                before = previous.arm(a.arm) if previous is not None else None
                lists = a.lists - (before.lists if before else 0)
                succ = a.successes - (before.successes if before else 0)
                quality.append(
                    {
                        "experiment": exp,
                        "at_ns": at,
                        "recorded_at": now,
                        "arm": a.arm,
                        "since_ns": previous.edge_ns if previous is not None else 0,
                        "lists": lists,
                        "successes": succ,
                        "watch_rate": succ / lists if lists else None,
                    }
                )
            if rows:
                conn.execute(ARM_RESULTS.insert(), rows)
                conn.execute(SERVED_QUALITY.insert(), quality)
        return True

    def record_decision(
        self,
        experiment: str,
        at_ns: int,
        decision: dict[str, Any],
        applied: dict[str, Any],
        dry_run: bool,
    ) -> None:
        """Write one decision with its numbers and what was done."""
        with self.engine.begin() as conn:
            conn.execute(
                DECISIONS.insert().values(
                    experiment=experiment,
                    at_ns=at_ns,
                    recorded_at=_dt.datetime.now(_dt.UTC),
                    action=decision["action"],
                    reason=decision["reason"],
                    numbers=json.dumps(decision.get("numbers", {}), default=str),
                    applied=json.dumps(applied, default=str),
                    dry_run=dry_run,
                )
            )

    def arm_series(self, experiment: str) -> list[dict[str, Any]]:
        """Every recorded per-arm row of ``experiment``, oldest first."""
        q = (
            sa.select(ARM_RESULTS)
            .where(ARM_RESULTS.c.experiment == experiment)
            .order_by(ARM_RESULTS.c.at_ns, ARM_RESULTS.c.arm)
        )
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def quality_series(self, experiment: str) -> list[dict[str, Any]]:
        """Per-interval served-list quality of ``experiment``, oldest first."""
        q = (
            sa.select(SERVED_QUALITY)
            .where(SERVED_QUALITY.c.experiment == experiment)
            .order_by(SERVED_QUALITY.c.at_ns, SERVED_QUALITY.c.arm)
        )
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def decisions(self, experiment: str, limit: int = 100) -> list[dict[str, Any]]:
        """The latest decisions of ``experiment``, newest first."""
        q = (
            sa.select(DECISIONS)
            .where(DECISIONS.c.experiment == experiment)
            .order_by(DECISIONS.c.id.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            out = []
            for r in conn.execute(q):
                d = dict(r._mapping)
                d["numbers"] = json.loads(d["numbers"])
                d["applied"] = json.loads(d["applied"])
                out.append(d)
            return out
