"""The monitor's statistics equal scipy/statsmodels on the same data (to 1e-9)."""

from __future__ import annotations

import math

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
