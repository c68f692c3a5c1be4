"""The monitor's statistics equal scipy/statsmodels on the same data (to 1e-9)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from services.monitor import stats

TOL = 1e-9


@pytest.mark.parametrize(
    ("x0", "n0", "x1", "n1"), [(120, 1000, 150, 1000), (5, 40, 1, 37), (3000, 10000, 2900, 9800)]
)
def test_two_proportions_equal_statsmodels(x0: int, n0: int, x1: int, n1: int) -> None:
    got = stats.two_proportions(x0, n0, x1, n1)
    z, p = proportions_ztest([x1, x0], [n1, n0])
    lo, hi = confint_proportions_2indep(x1, n1, x0, n0, method="wald", compare="diff")
    assert got.stat == pytest.approx(z, abs=TOL) and got.p_value == pytest.approx(p, abs=TOL)
    assert (got.ci_low, got.ci_high) == pytest.approx((lo, hi), abs=TOL)


def test_welch_equals_scipy_and_statsmodels() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.exponential(2.0, 300), rng.exponential(2.3, 450)
    got = stats.welch(stats.moments(a), stats.moments(b))
    ref = sps.ttest_ind(b, a, equal_var=False)
    assert got.stat == pytest.approx(ref.statistic, abs=TOL)
    assert got.p_value == pytest.approx(ref.pvalue, abs=TOL)
    lo, hi = CompareMeans(DescrStatsW(b), DescrStatsW(a)).tconfint_diff(usevar="unequal")
    assert (got.ci_low, got.ci_high) == pytest.approx((lo, hi), abs=TOL)


def test_delta_ratio_reduces_to_the_z_test_of_means_with_unit_denominators() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.binomial(1, 0.2, 500), rng.binomial(1, 0.25, 500)
    ones = np.ones(500)
    got = stats.delta_ratio(stats.ratio_moments(a, ones), stats.ratio_moments(b, ones))
    z, _ = sps.ttest_ind(b, a, equal_var=False)[:2]
    # With denominators all 1 the delta method is Welch's statistic with a normal reference.
    assert got.stat == pytest.approx(z, abs=TOL)
    assert got.p_value == pytest.approx(2 * sps.norm.sf(abs(z)), abs=TOL)


def test_delta_ratio_variance_matches_the_spread_of_simulated_ratios() -> None:
    rng = np.random.default_rng(3)
    n, reps = 400, 3000
    ratios, variances = [], []
    for _ in range(reps):
        lists = rng.poisson(3, n) + 1
        hits = rng.binomial(lists, 0.3)
        m = stats.ratio_moments(hits, lists)
        ratios.append(m.ratio)
        variances.append(stats.ratio_variance(m))
    assert np.mean(variances) == pytest.approx(np.var(ratios), rel=0.08)


def test_cuped_theta_is_the_ols_slope_and_keeps_the_estimate_unbiased() -> None:
    rng = np.random.default_rng(4)
    x = rng.poisson(5, 2000).astype(float)
    y = 0.3 * x + rng.normal(0, 1, 2000)
    theta = stats.cuped_theta(y, x)
    assert theta == pytest.approx(sps.linregress(x, y).slope, abs=TOL)
    adj = stats.cuped_adjust(y, x, theta, float(x.mean()))
    assert adj.mean() == pytest.approx(y.mean(), abs=TOL)
    r = np.corrcoef(x, y)[0, 1]
    assert adj.var(ddof=1) == pytest.approx(y.var(ddof=1) * (1 - r**2), rel=1e-9)


def test_srm_equals_scipy_chisquare() -> None:
    chi2, p = stats.srm([4500, 5500], [50, 50])
    ref = sps.chisquare([4500, 5500], [5000, 5000])
    assert (chi2, p) == pytest.approx((ref.statistic, ref.pvalue), abs=TOL)
    assert p < 0.001
    assert stats.srm([5010, 4990], [50, 50])[1] > 0.5
    # A zero-weight arm is left out, as the router never assigns it.
    assert stats.srm([100, 0, 100], [50, 0, 50])[1] == pytest.approx(1.0)


@pytest.mark.parametrize("method", ["holm", "fdr_bh"])
def test_multiple_testing_equals_statsmodels(method: str) -> None:
    p = [0.01, 0.04, 0.03, 0.2, 0.001, 0.04]
    fn = stats.holm if method == "holm" else stats.benjamini_hochberg
    assert fn(p) == pytest.approx(list(multipletests(p, method=method)[1]), abs=TOL)


def test_power_and_mde_equal_statsmodels() -> None:
    sd, n, effect = 0.45, 2000, 0.04
    ref = NormalIndPower().power(effect_size=effect / sd, nobs1=n, alpha=0.05, ratio=1.0)
    assert stats.power(effect, sd, n) == pytest.approx(ref, abs=TOL)
    m = stats.mde(sd, n)
    assert stats.power(m, sd, n) == pytest.approx(0.8, abs=1e-6)
    need = stats.sample_size(effect, sd)
    assert stats.power(effect, sd, need) >= 0.8 > stats.power(effect, sd, need - 2)


def test_bayes_normal_equals_numerical_integration() -> None:
    diff, se = 0.012, 0.01
    chance, loss_t, loss_c = stats.bayes_normal(diff, se)
    post = sps.norm(diff, se)
    assert chance == pytest.approx(post.sf(0), abs=TOL)
    assert loss_t == pytest.approx(post.expect(lambda d: max(-d, 0.0)), abs=1e-9)
    assert loss_c == pytest.approx(post.expect(lambda d: max(d, 0.0)), abs=1e-9)


def test_msprt_likelihood_ratio_is_the_normal_mixture_integral() -> None:
    diff, v, tau = 0.03, 0.0002, 0.05
    seq = stats.msprt(diff, v, tau)
    # Lambda = int N(diff; theta, V) N(theta; 0, tau^2) dtheta / N(diff; 0, V)
    num = sps.norm(0, tau).expect(lambda th: sps.norm.pdf(diff, th, math.sqrt(v)))
    assert seq.likelihood_ratio == pytest.approx(
        num / sps.norm.pdf(diff, 0, math.sqrt(v)), rel=1e-7
    )
    assert seq.p_value == pytest.approx(min(1, 1 / seq.likelihood_ratio))
    assert seq.ci_low < diff < seq.ci_high
    # The p-value never rises between looks.
    assert stats.msprt(0.0, v, tau, previous_p=0.2).p_value == 0.2


def test_msprt_keeps_false_positives_below_alpha_when_looking_after_every_batch() -> None:
    rng = np.random.default_rng(5)
    runs, looks, batch, alarms = 400, 40, 50, 0
    for _ in range(runs):
        a = rng.binomial(1, 0.3, looks * batch)
        b = rng.binomial(1, 0.3, looks * batch)
        p = 1.0
        for k in range(1, looks + 1):
            n = k * batch
            ma, mb = stats.moments(a[:n]), stats.moments(b[:n])
            seq = stats.msprt(mb.mean - ma.mean, ma.var / n + mb.var / n, 0.05, previous_p=p)
            p = seq.p_value
        alarms += p < 0.05
    assert alarms / runs <= 0.05


def test_sign_test_equals_scipy_binomtest() -> None:
    assert stats.sign_test(60, 40) == pytest.approx(sps.binomtest(60, 100).pvalue, abs=TOL)
    assert stats.sign_test(0, 0) == 1.0


def test_power_of_the_pooled_proportion_test_equals_statsmodels() -> None:
    from statsmodels.stats.proportion import power_proportions_2indep

    for p0, p1, n in [(0.71, 0.88, 85), (0.2, 0.23, 3000), (0.5, 0.45, 400)]:
        ref = power_proportions_2indep(p1 - p0, p0, n, ratio=1.0, alpha=0.05).power
        assert stats.power_proportions(p0, p1, n) == pytest.approx(ref, abs=TOL)
    need = stats.sample_size_proportions(0.71, 0.88)
    assert stats.power_proportions(0.71, 0.88, need) >= 0.8
    assert stats.power_proportions(0.71, 0.88, need - 1) < 0.8


@pytest.mark.parametrize(
    ("x0", "n0", "x1", "n1", "margin"),
    [(10, 1000, 45, 1000, 0.02), (3, 250, 4, 260, 0.01), (250, 1000, 240, 980, 0.0)],
)
def test_the_margin_test_of_two_proportions_equals_statsmodels(
    x0: int, n0: int, x1: int, n1: int, margin: float
) -> None:
    from statsmodels.stats.proportion import test_proportions_2indep

    got = stats.two_proportions_margin(x0, n0, x1, n1, margin)
    ref = test_proportions_2indep(
        x1, n1, x0, n0, value=margin, method="wald", compare="diff", alternative="larger"
    )
    assert got.stat == pytest.approx(ref.statistic, abs=TOL)
    assert got.p_value == pytest.approx(ref.pvalue, abs=TOL)


def test_exceeds_margin_is_one_sided_and_exact_without_spread() -> None:
    z, p = stats.exceeds_margin(0.05, 0.01, 0.02)
    assert z == pytest.approx(3.0) and p == pytest.approx(sps.norm.sf(3.0), abs=TOL)
    assert stats.exceeds_margin(-0.05, 0.01, 0.02)[1] > 0.99  # better than control: not worse
    assert stats.exceeds_margin(0.5, 0.0, 0.02) == (math.inf, 0.0)
    assert stats.exceeds_margin(0.0, 0.0, 0.02)[1] == 1.0
    assert stats.exceeds_margin(0.5, math.inf, 0.02)[1] == 1.0


@pytest.mark.parametrize(("above", "n"), [(0, 300), (3, 300), (9, 300), (40, 250)])
def test_share_above_equals_scipy_binomtest(above: int, n: int) -> None:
    ref = sps.binomtest(above, n, 0.01, alternative="greater").pvalue
    assert stats.share_above(above, n, 0.01) == pytest.approx(ref, abs=TOL)


def test_power_with_unequal_arms_equals_statsmodels() -> None:
    from statsmodels.stats.proportion import power_proportions_2indep

    for p0, p1, n0, n1 in [(0.67, 0.86, 81, 95), (0.2, 0.23, 3000, 2500)]:
        ref = power_proportions_2indep(p1 - p0, p0, n1, ratio=n0 / n1, alpha=0.05).power
        got = stats.power_proportions(p0, p1, n0, n_treatment=n1)
        assert got == pytest.approx(ref, abs=TOL)


def test_exact_power_sums_the_binomial_outcomes_the_z_test_rejects() -> None:
    p0, p1, n0, n1 = 0.6, 0.85, 14, 17
    want = 0.0
    for x0 in range(n0 + 1):
        for x1 in range(n1 + 1):
            if 0 < x0 + x1 < n0 + n1:  # all or none converted: no spread, no rejection
                _, p = proportions_ztest([x1, x0], [n1, n0])
                if p < 0.05:
                    want += sps.binom.pmf(x0, n0, p0) * sps.binom.pmf(x1, n1, p1)
    assert stats.power_proportions_exact(p0, p1, n0, n1) == pytest.approx(want, abs=TOL)
    # Large arms: the normal approximation is close.
    exact = stats.power_proportions_exact(0.67, 0.75, 480, 480)
    assert exact == pytest.approx(stats.power_proportions(0.67, 0.75, 480), abs=0.005)


def test_the_exact_plan_adds_users_where_the_normal_approximation_is_optimistic() -> None:
    normal = stats.sample_size_proportions(0.5, 0.7)
    exact = stats.sample_size_proportions(0.5, 0.7, exact=True)
    assert stats.power_proportions_exact(0.5, 0.7, normal, normal) < 0.8  # optimistic here
    assert exact > normal and stats.power_proportions_exact(0.5, 0.7, exact, exact) >= 0.8
    assert stats.power_proportions_exact(0.5, 0.7, exact - 1, exact - 1) < 0.8
    # Where the approximation is already conservative, the plan is unchanged.
    assert stats.sample_size_proportions(0.67, 0.86, exact=True) == stats.sample_size_proportions(
        0.67, 0.86
    )


def _brute_sequential_power(
    p0: float, p1: float, n: int, tau: float, looks: int, reps: int, seed: int
) -> float:
    """Share of binomial experiments in which the monitor's own ``msprt`` (with the variance
    ``two_proportions`` estimates, running minimum p) rejects at one of ``looks`` equal looks."""
    rng = np.random.default_rng(seed)
    at = [round(n * j / looks) for j in range(1, looks + 1)]
    hits = 0
    for _ in range(reps):
        c, t = np.cumsum(rng.random(n) < p0), np.cumsum(rng.random(n) < p1)
        p = 1.0
        for m in at:
            q0, q1 = c[m - 1] / m, t[m - 1] / m
            var = q0 * (1 - q0) / m + q1 * (1 - q1) / m
            p = stats.msprt(q1 - q0, var, tau, previous_p=p).p_value
        hits += p < 0.05
    return hits / reps


@pytest.mark.parametrize(
    ("p0", "p1", "n", "tau", "looks"), [(0.3, 0.45, 200, 0.15, 8), (0.5, 0.6, 400, 0.1, 5)]
)
def test_sequential_power_equals_a_brute_force_run_of_the_monitors_msprt(
    p0: float, p1: float, n: int, tau: float, looks: int
) -> None:
    reps = 2000
    brute = _brute_sequential_power(p0, p1, n, tau, looks, reps, seed=11)
    got = stats.power_sequential(p0, p1, n, tau, looks=looks)
    # Monte Carlo error of both (20,000 paths; ``reps`` binomial experiments), 4 sigma.
    se = math.sqrt(got * (1 - got) * (1 / reps + 1 / 20_000))
    assert abs(got - brute) < 4 * se


def test_continuous_monitoring_bounds_the_looks_and_its_bridge_equals_a_fine_grid() -> None:
    p0, p1, n, tau = 0.3, 0.5, 60, 0.2
    continuous = stats.power_sequential(p0, p1, n, tau)
    fine = stats.power_sequential(p0, p1, n, tau, look_every=0.1)
    every_user = stats.power_sequential(p0, p1, n, tau, look_every=1)
    few = stats.power_sequential(p0, p1, n, tau, looks=4)
    once = stats.power_sequential(p0, p1, n, tau, looks=1)
    assert once < few < every_user < continuous
    # 512 looks plus the Brownian bridge's crossings between them = 600 looks (4 sigma of the
    # two estimates' independent Monte Carlo errors).
    assert continuous == pytest.approx(fine, abs=0.02)
    # One look: the mSPRT's boundary at n, exactly (no simulation error beyond the paths').
    z = math.sqrt(n) * (p1 - p0) / math.sqrt(p0 * (1 - p0) + p1 * (1 - p1))
    v = (p0 * (1 - p0) + p1 * (1 - p1)) / n
    zb = math.sqrt((v + tau**2) / tau**2 * (2 * math.log(20) + math.log((v + tau**2) / v)))
    exact = sps.norm.sf(zb - z) + sps.norm.cdf(-zb - z)
    assert once == pytest.approx(exact, abs=4 * math.sqrt(exact * (1 - exact) / 20_000))


def test_the_sequential_plan_reaches_the_power_and_needs_more_users_than_the_fixed_one() -> None:
    p0, p1, tau = 0.3, 0.4, 0.1
    n = stats.sample_size_sequential(p0, p1, tau, looks=10, paths=5000)
    assert stats.power_sequential(p0, p1, n, tau, looks=10, paths=5000) >= 0.8
    assert stats.power_sequential(p0, p1, n - 1, tau, looks=10, paths=5000) < 0.8
    assert n > stats.sample_size_proportions(p0, p1)
    # Fewer looks need more users; continuous monitoring (the optimistic bound) the fewest.
    assert stats.sample_size_sequential(p0, p1, tau, paths=2000) < n
    assert stats.sample_size_sequential(p0, p1, tau, looks=1, paths=2000) > n


def test_the_sequential_plan_shrinks_as_the_effect_grows() -> None:
    sizes = [
        stats.sample_size_sequential(0.3, p1, 0.1, looks=10, paths=4000)
        for p1 in (0.36, 0.4, 0.45, 0.5)
    ]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)
    powers = [stats.power_sequential(0.3, p1, 300, 0.1, looks=10) for p1 in (0.33, 0.36, 0.4)]
    assert powers == sorted(powers) and len(set(powers)) == len(powers)


def test_the_sequential_plan_is_reproducible_with_its_seed() -> None:
    args = (0.3, 0.4, 0.1)
    first = stats.sample_size_sequential(*args, looks=10, paths=4000, seed=5)
    assert stats.sample_size_sequential(*args, looks=10, paths=4000, seed=5) == first
    a = stats.power_sequential(0.3, 0.4, first, 0.1, looks=10, paths=4000, seed=5)
    b = stats.power_sequential(0.3, 0.4, first, 0.1, looks=10, paths=4000, seed=6)
    assert a == stats.power_sequential(0.3, 0.4, first, 0.1, looks=10, paths=4000, seed=5)
    assert a != b and abs(a - b) < 0.05


def test_the_sequential_mde_inverts_the_plan() -> None:
    kw: dict[str, Any] = {"looks": 10, "paths": 4000}
    d = stats.mde_sequential(0.3, 250, 0.1, **kw)
    assert stats.power_sequential(0.3, 0.3 + d, 250, 0.1, **kw) >= 0.8
    assert stats.power_sequential(0.3, 0.3 + d - 1e-3, 250, 0.1, **kw) < 0.8
    assert stats.sample_size_sequential(0.3, 0.3 + d, 0.1, **kw) <= 250
    assert math.isnan(stats.mde_sequential(0.3, 5, 0.1, **kw))


def test_the_sequential_planner_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="no effect"):
        stats.sample_size_sequential(0.3, 0.3, 0.1)
    with pytest.raises(ValueError, match="fractions"):
        stats.power_sequential(0.3, 0.4, 100, 0.1, looks=[0.5, 0.4, 1.0])
    with pytest.raises(ValueError, match="look_every"):
        stats.power_sequential(0.3, 0.4, 100, 0.1, look_every=0)
