"""The monitor's statistics agree with GrowthBook's own engine (gbstats) on the same sums.

gbstats pins numpy < 2, so it runs in an isolated environment of its own through uv (the
script below, ``REFERENCE``); the first run downloads it from PyPI.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from services.monitor import stats
from tests.infra import skip_or_fail

pytestmark = pytest.mark.slow
TOL = 1e-9


REFERENCE = """
import json
import sys

from gbstats.bayesian.tests import EffectBayesianABTest, EffectBayesianConfig
from gbstats.frequentist.tests import FrequentistConfig, TwoSidedTTest
from gbstats.models.statistics import (
    ProportionStatistic,
    RatioStatistic,
    SampleMeanStatistic,
)


def stat(d):
    if d["type"] == "proportion":
        return ProportionStatistic(n=d["n"], sum=d["sum"])
    if d["type"] == "mean":
        return SampleMeanStatistic(n=d["n"], sum=d["sum"], sum_squares=d["sum_squares"])
    return RatioStatistic(
        n=d["n"],
        m_statistic=SampleMeanStatistic(n=d["n"], sum=d["x"], sum_squares=d["xx"]),
        d_statistic=SampleMeanStatistic(n=d["n"], sum=d["y"], sum_squares=d["yy"]),
        m_d_sum_of_products=d["xy"],
    )


out = []
for case in json.load(open(sys.argv[1])):
    a, b = stat(case["control"]), stat(case["treatment"])
    f = TwoSidedTTest(a, b, FrequentistConfig(difference_type="absolute")).compute_result()
    bay = EffectBayesianABTest(
        a, b, EffectBayesianConfig(difference_type="absolute")
    ).compute_result()
    out.append(
        {
            "diff": f.expected,
            "se": f.uplift.stddev,
            "p_value": f.p_value,
            "ci": f.ci,
            "chance_to_win": bay.chance_to_win,
            "risk": bay.risk,
        }
    )
json.dump(out, sys.stdout)
"""


def _gbstats(cases: list[dict], tmp: Path) -> list[dict]:
    uv = shutil.which("uv")
    if uv is None:
        skip_or_fail("uv is needed to run gbstats in an environment of its own")
    (tmp / "cases.json").write_text(json.dumps(cases))
    done = subprocess.run(
        [
            uv,
            "run",
            "--no-project",
            "--python",
            "3.11",
            "--with",
            "gbstats==0.8.0",
            "python",
            "-c",
            REFERENCE,
            str(tmp / "cases.json"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        skip_or_fail(f"gbstats could not run: {done.stderr.strip()[-300:]}")
    return list(json.loads(done.stdout))


def _mean(v: np.ndarray) -> dict:
    return {
        "type": "mean",
        "n": int(v.size),
        "sum": float(v.sum()),
        "sum_squares": float((v**2).sum()),
    }


def _ratio(x: np.ndarray, y: np.ndarray) -> dict:
    return {
        "type": "ratio",
        "n": int(x.size),
        "x": float(x.sum()),
        "xx": float((x**2).sum()),
        "y": float(y.sum()),
        "yy": float((y**2).sum()),
        "xy": float((x * y).sum()),
    }


def test_frequentist_and_bayesian_results_match_gbstats(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    minutes = [rng.poisson(30, 800).astype(float), rng.poisson(32, 900).astype(float)]
    lists = [rng.poisson(3, 800) + 1.0, rng.poisson(3, 900) + 1.0]
    hits = [
        rng.binomial(lists[0].astype(int), 0.3).astype(float),
        rng.binomial(lists[1].astype(int), 0.33).astype(float),
    ]
    conv = [rng.binomial(1, 0.2, 800).astype(float), rng.binomial(1, 0.24, 900).astype(float)]
    cases = [
        {"control": _mean(minutes[0]), "treatment": _mean(minutes[1])},
        {
            "control": {"type": "proportion", "n": 800, "sum": float(conv[0].sum())},
            "treatment": {"type": "proportion", "n": 900, "sum": float(conv[1].sum())},
        },
        {"control": _ratio(hits[0], lists[0]), "treatment": _ratio(hits[1], lists[1])},
    ]
    ref = _gbstats(cases, tmp_path)

    # Sample means: Welch's t (same statistic, degrees of freedom, p and interval).
    got = stats.welch(stats.moments(minutes[0]), stats.moments(minutes[1]))
    assert got.diff == pytest.approx(ref[0]["diff"], abs=TOL)
    assert got.se == pytest.approx(ref[0]["se"], abs=TOL)
    assert got.p_value == pytest.approx(ref[0]["p_value"], abs=TOL)
    assert [got.ci_low, got.ci_high] == pytest.approx(ref[0]["ci"], abs=TOL)

    # Proportions: gbstats uses the population variance p(1-p) in Welch's t.
    p = [c.mean() for c in conv]
    got = stats.welch(
        stats.Moments(800, p[0], p[0] * (1 - p[0])), stats.Moments(900, p[1], p[1] * (1 - p[1]))
    )
    assert got.se == pytest.approx(ref[1]["se"], abs=TOL)
    assert got.p_value == pytest.approx(ref[1]["p_value"], abs=TOL)
    # ... which is also the unpooled standard error of our two-proportion test.
    z = stats.two_proportions(int(conv[0].sum()), 800, int(conv[1].sum()), 900)
    assert z.se == pytest.approx(ref[1]["se"], abs=TOL) and z.diff == pytest.approx(
        ref[1]["diff"], abs=TOL
    )

    # Ratio metric: the delta method's difference and standard error.
    got = stats.delta_ratio(
        stats.ratio_moments(hits[0], lists[0]), stats.ratio_moments(hits[1], lists[1])
    )
    assert got.diff == pytest.approx(ref[2]["diff"], abs=TOL)
    assert got.se == pytest.approx(ref[2]["se"], rel=1e-6)

    # Bayesian chance to win and risk (expected loss) on the same difference and error.
    for r in ref:
        chance, loss_t, loss_c = stats.bayes_normal(r["diff"], r["se"])
        assert chance == pytest.approx(r["chance_to_win"], abs=1e-9)
        assert [loss_c, loss_t] == pytest.approx(r["risk"], abs=1e-9)
        assert math.isfinite(loss_t)
