"""Model-only top-20 per family, through the serving code (``services.common.scoring.Scorer``).

The time of ``Scorer.top_k_indices(user, 20)`` for known users (one BLAS thread, as a serving
worker runs), per family, against the ALS path in the same run (a ratio: these machines are
noisy).  Two worlds: MovieLens 100K (1,682 movies; skipped when ``../shared`` lacks it) and a
synthetic world with the streaming service's 27K-movie catalog, where candidate generation over
the whole catalog costs most.  The goal: p50 ≤ 1 ms for every family, the two-stage ``rerank``
included.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ML100K = ROOT.parent / "shared" / "data" / "movielens" / "ml-100k"
TARGET_MS = 1.0
PARAMS: dict[str, dict[str, Any]] = {
    "als": {"factors": 64, "iterations": 5, "threads": 1},
    "ease": {"l2": 150.0, "max_items": 2000, "neighbours": 300},
    "rerank": {
        "l2": 150.0,
        "max_items": 2000,
        "neighbours": 300,
        "als_factors": 32,
        "als_iterations": 5,
        "n_ease": 80,
    },
    "popularity": {},
}


def time_family(scorer: Any, users: int, seed: int) -> dict[str, Any]:
    """p50 / p95 / mean of one top-20 (ms) over a seeded sample of known users."""
    from services.trainer.util import limit_blas_threads

    rng = np.random.default_rng(seed)
    rows = rng.choice(len(scorer.user_ids), min(users, len(scorer.user_ids)), replace=False)
    times = np.empty(len(rows))
    with limit_blas_threads(1):
        for r in rows[:20]:  # warm caches and lazy allocations
            scorer.top_k_indices(int(r), 20)
        for j, r in enumerate(rows):
            started = time.perf_counter()
            scorer.top_k_indices(int(r), 20)
            times[j] = time.perf_counter() - started
    return {
        "p50_ms": round(float(np.median(times) * 1e3), 4),
        "p95_ms": round(float(np.percentile(times, 95) * 1e3), 4),
        "mean_ms": round(float(times.mean() * 1e3), 4),
        "users": len(rows),
    }


def world(prepared: Any, users: int, seed: int = 0) -> dict[str, Any]:
    """Fit every family on the training period and time its top-20."""
    from services.trainer.models import FAMILIES

    out: dict[str, Any] = {"items": prepared.n_items, "users": prepared.n_users, "families": {}}
    for family, params in PARAMS.items():
        started = time.perf_counter()
        fitted = FAMILIES[family](params, seed=seed).fit(prepared)
        timing = time_family(fitted.scorer, users, seed)
        timing["fit_seconds"] = round(time.perf_counter() - started - timing["mean_ms"] / 1e3, 1)
        if family == "rerank":
            timing["trees"] = len(fitted.scorer.ranker.roots)
            timing["depth"] = fitted.scorer.ranker.depth
            timing["median_candidates"] = float(
                np.median([len(fitted.scorer.stage_one(r)[0]) for r in range(0, 2000, 20)
                           if r < len(fitted.scorer.user_ids)])
            )  # fmt: skip
        out["families"][family] = timing
    base = out["families"]["als"]["p50_ms"]
    for timing in out["families"].values():
        timing["p50_vs_als"] = round(timing["p50_ms"] / base, 2) if base else None
        timing["within_target"] = timing["p50_ms"] <= TARGET_MS
    return out


def run(quick: bool) -> dict[str, Any]:
    """Both worlds; ``quick`` uses fewer users."""
    from services.trainer import data as td
    from services.trainer import synthetic

    users = 300 if quick else 2000
    results: dict[str, Any] = {"target_p50_ms": TARGET_MS}
    if (ML100K / "u.data").is_file():
        tables, prov = td.load_source(f"movielens:{ML100K}")
        results["ml100k"] = world(td.prepare(tables, prov, 0.1, 0.1), users)
    tables, _ = synthetic.generate(
        n_users=5_000 if quick else 20_000, n_items=27_000, mean_watches=7.0, seed=0
    )
    results["synthetic_27k"] = world(td.prepare(tables, {}, 0.1, 0.1), users)
    return results


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
