"""Evaluation states built directly from per-arm numbers (for policy and report tests)."""

from __future__ import annotations

from typing import Any

import numpy as np

from services.common.experiment import Experiment, validate_config
from services.monitor.evaluation import USER_COLUMNS, ArmRequests, EvaluationState

FALLBACK = ["the+matrix+1999"]


def config(**overrides: Any) -> Experiment:
    """A running 50/50 experiment: control (svd, stable) vs treatment (als, canary)."""
    doc: dict[str, Any] = {
        "experiment": "exp-1",
        "salt": "exp-1",
        "status": "running",
        "exposure": 1.0,
        "control": "control",
        "arms": [
            {
                "name": "control",
                "url": "http://127.0.0.1:8083",
                "weight": 50,
                "model": "svd",
                "channel": "stable",
            },
            {
                "name": "treatment",
                "url": "http://127.0.0.1:8084",
                "weight": 50,
                "model": "als",
                "channel": "canary",
            },
        ],
        "fallback": FALLBACK,
        "policy": {"min_users": 500},
    }
    doc.update(overrides)
    return validate_config(doc)


def state(
    arms: dict[str, tuple[int, float]],
    *,
    seed: int = 0,
    errors: dict[str, float] | None = None,
    fallbacks: dict[str, float] | None = None,
    empty: dict[str, float] | None = None,
    latency_ms: int | dict[str, int] = 30,
) -> EvaluationState:
    """Users per arm with a conversion rate each: ``{"control": (1000, 0.2), ...}``; per arm,
    shares of requests with ``errors``, ``fallbacks`` or an ``empty`` list, and ``latency_ms``."""
    rng = np.random.default_rng(seed)
    st = EvaluationState("exp-1")
    cols: dict[str, list[np.ndarray]] = {c: [] for c in ("user_id", *USER_COLUMNS)}
    next_id = 1
    for name, (n, rate) in arms.items():
        code = st.arm_code(name)
        ids = np.arange(next_id, next_id + n)
        next_id += n
        lists = rng.integers(1, 4, n)
        # Each request fails / falls back independently: per-user counts that add up to the arm's.
        err_u = rng.binomial(lists, (errors or {}).get(name, 0.0))
        fb_u = rng.binomial(lists - err_u, (fallbacks or {}).get(name, 0.0))
        conv = rng.random(n) < rate
        pre = rng.poisson(20, n)
        values = {
            "user_id": ids,
            "arm": np.full(n, code),
            "first_ns": np.zeros(n, np.int64),
            "exposures": lists,
            "lists": lists,
            "successes": conv.astype(np.int64),
            "fallbacks": fb_u,
            "errors": err_u,
            "excluded": np.zeros(n, np.int64),
            "watch_minutes": rng.poisson(30, n) + conv * 20 + pre // 2,
            "ratings": np.zeros(n, np.int64),
            "rating_sum": np.zeros(n, np.int64),
            "pre_minutes": pre,
        }
        for c in cols:
            cols[c].append(np.asarray(values[c], np.int64))
        req = int(lists.sum())
        hist = np.zeros(5001, np.int64)
        hist[latency_ms if isinstance(latency_ms, int) else latency_ms.get(name, 30)] = req
        n_empty = round((req - int(err_u.sum())) * (empty or {}).get(name, 0.0))
        st.requests[name] = ArmRequests(req, int(err_u.sum()), int(fb_u.sum()), n_empty, hist)
    st.users = {c: np.concatenate(v) for c, v in cols.items()}
    return st
