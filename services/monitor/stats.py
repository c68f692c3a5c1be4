"""The monitor's statistics, as plain functions of per-arm sums (the user is the unit).

Everything here takes sufficient statistics (counts, means, variances) rather than raw rows, so
the same functions serve a live monitor, an offline analysis and the tests that check them
against scipy and statsmodels.  Differences are always ``treatment - control``.

- fixed horizon: ``two_proportions`` (pooled z test, Wald interval), ``welch`` (Welch t),
  ``delta_ratio`` (ratio metrics such as successes per list, by the delta method);
- variance reduction: ``cuped_theta`` / ``cuped_adjust`` with a pre-experiment covariate;
- always valid: ``msprt`` (normal-mixture SPRT, Johari et al. 2017) and its confidence sequence;
- Bayesian: ``bayes_normal`` (chance to beat control, expected loss; flat prior, normal
  approximation as GrowthBook's engine does);
- ``srm`` (chi-square goodness of fit of arm counts to configured weights);
- ``holm`` / ``benjamini_hochberg`` adjusted p-values; ``power`` / ``mde`` / ``sample_size``;
- guardrails against control: ``exceeds_margin`` (one-sided z test that a difference exceeds
  a margin), ``two_proportions_margin`` (its Wald form for two proportions) and
  ``share_above`` (one-sided binomial test that more than a share of requests are slow);
- ``sign_test`` for interleaving preferences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

__all__ = [
    "Comparison",
    "Moments",
    "RatioMoments",
    "Sequential",
    "bayes_normal",
    "benjamini_hochberg",
    "cuped_adjust",
    "cuped_theta",
    "delta_ratio",
    "exceeds_margin",
    "holm",
    "mde",
    "moments",
    "msprt",
    "power",
    "power_proportions",
    "power_proportions_exact",
    "ratio_moments",
    "sample_size",
    "sample_size_proportions",
    "share_above",
    "sign_test",
    "srm",
    "two_proportions",
    "two_proportions_margin",
    "welch",
]


@dataclass(frozen=True)
class Moments:
    """Per-user values of one arm: count, mean and sample variance (ddof=1)."""

    n: int
    mean: float
    var: float


@dataclass(frozen=True)
class RatioMoments:
    """Per-user numerator ``x`` and denominator ``y`` of a ratio metric: means, (co)variances."""

    n: int
    mean_x: float
    mean_y: float
    var_x: float
    var_y: float
    cov_xy: float

    @property
    def ratio(self) -> float:
        """sum(x) / sum(y)."""
        return self.mean_x / self.mean_y if self.mean_y else 0.0


@dataclass(frozen=True)
class Comparison:
    """Treatment minus control: estimate, its standard error, test statistic, p, interval."""

    control: float
    treatment: float
    diff: float
    se: float
    stat: float
    p_value: float
    ci_low: float
    ci_high: float
    df: float = math.inf

    def to_json(self) -> dict[str, Any]:
        """The fields as a JSON-ready mapping."""
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in asdict(self).items()
        }


def moments(values: npt.ArrayLike) -> Moments:
    """Moments of per-user values."""
    v = np.asarray(values, dtype=np.float64)
    n = int(v.size)
    return Moments(n, float(v.mean()) if n else 0.0, float(v.var(ddof=1)) if n > 1 else 0.0)


def ratio_moments(x: npt.ArrayLike, y: npt.ArrayLike) -> RatioMoments:
    """Moments of per-user numerators ``x`` and denominators ``y``."""
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = int(xa.size)
    if n < 2:
        return RatioMoments(
            n, float(xa.mean()) if n else 0.0, float(ya.mean()) if n else 0.0, 0.0, 0.0, 0.0
        )
    cov = np.cov(xa, ya, ddof=1)
    return RatioMoments(
        n,
        float(xa.mean()),
        float(ya.mean()),
        float(cov[0, 0]),
        float(cov[1, 1]),
        float(cov[0, 1]),
    )


def _z_interval(diff: float, se: float, alpha: float) -> tuple[float, float]:
    z = float(stats.norm.ppf(1 - alpha / 2))
    return diff - z * se, diff + z * se


def two_proportions(
    x_control: int, n_control: int, x_treatment: int, n_treatment: int, alpha: float = 0.05
) -> Comparison:
    """Two-proportion z test (pooled variance, as statsmodels' ``proportions_ztest``) with a
    Wald interval for the difference (unpooled, as ``confint_proportions_2indep``)."""
    if n_control == 0 or n_treatment == 0:
        return _empty(alpha)
    p0, p1 = x_control / n_control, x_treatment / n_treatment
    diff = p1 - p0
    pooled = (x_control + x_treatment) / (n_control + n_treatment)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / n_control + 1 / n_treatment))
    se = math.sqrt(p0 * (1 - p0) / n_control + p1 * (1 - p1) / n_treatment)
    z = diff / se_pooled if se_pooled > 0 else 0.0
    p = float(2 * stats.norm.sf(abs(z)))
    lo, hi = _z_interval(diff, se, alpha)
    return Comparison(p0, p1, diff, se, z, p, lo, hi)


def welch(control: Moments, treatment: Moments, alpha: float = 0.05) -> Comparison:
    """Welch's t test of the means (unequal variances; Welch-Satterthwaite degrees of freedom)."""
    if control.n < 2 or treatment.n < 2:
        return _empty(alpha, control.mean, treatment.mean)
    v0, v1 = control.var / control.n, treatment.var / treatment.n
    se = math.sqrt(v0 + v1)
    diff = treatment.mean - control.mean
    if se == 0:
        return Comparison(control.mean, treatment.mean, diff, 0.0, 0.0, 1.0, diff, diff)
    df = (v0 + v1) ** 2 / (v0**2 / (control.n - 1) + v1**2 / (treatment.n - 1))
    t = diff / se
    p = float(2 * stats.t.sf(abs(t), df))
    q = float(stats.t.ppf(1 - alpha / 2, df))
    return Comparison(
        control.mean, treatment.mean, diff, se, t, p, diff - q * se, diff + q * se, df
    )


def ratio_variance(m: RatioMoments) -> float:
    """Delta-method variance of sum(x)/sum(y) over ``m.n`` independent users."""
    if m.n == 0 or m.mean_y == 0:
        return math.inf
    mx, my = m.mean_x, m.mean_y
    v = m.var_x / my**2 - 2 * mx * m.cov_xy / my**3 + mx**2 * m.var_y / my**4
    return max(v, 0.0) / m.n


def delta_ratio(control: RatioMoments, treatment: RatioMoments, alpha: float = 0.05) -> Comparison:
    """z test of the difference of two ratio metrics (e.g. successes per list), users as units."""
    if control.n < 2 or treatment.n < 2 or control.mean_y == 0 or treatment.mean_y == 0:
        return _empty(alpha, control.ratio, treatment.ratio)
    se = math.sqrt(ratio_variance(control) + ratio_variance(treatment))
    diff = treatment.ratio - control.ratio
    z = diff / se if se > 0 else 0.0
    p = float(2 * stats.norm.sf(abs(z))) if se > 0 else 1.0
    lo, hi = _z_interval(diff, se, alpha)
    return Comparison(control.ratio, treatment.ratio, diff, se, z, p, lo, hi)


def exceeds_margin(diff: float, se: float, margin: float) -> tuple[float, float]:
    """(z, one-sided p) of H0 ``effect <= margin`` against ``effect > margin`` for an estimate
    ``diff`` with standard error ``se`` (an exact estimate when ``se`` is 0)."""
    if not math.isfinite(se):
        return 0.0, 1.0
    if se <= 0:
        return (math.inf, 0.0) if diff > margin else (-math.inf if diff < margin else 0.0, 1.0)
    z = (diff - margin) / se
    return z, float(stats.norm.sf(z))


def two_proportions_margin(
    x_control: int, n_control: int, x_treatment: int, n_treatment: int, margin: float
) -> Comparison:
    """One-sided Wald z test that treatment's proportion exceeds control's by more than
    ``margin`` (statsmodels' ``test_proportions_2indep(..., value=margin, method="wald",
    alternative="larger")``); ``ci_high`` is unbounded, ``ci_low`` the one-sided 95 % bound."""
    if n_control == 0 or n_treatment == 0:
        return _empty(0.05)
    p0, p1 = x_control / n_control, x_treatment / n_treatment
    se = math.sqrt(p0 * (1 - p0) / n_control + p1 * (1 - p1) / n_treatment)
    z, p = exceeds_margin(p1 - p0, se, margin)
    low = p1 - p0 - float(stats.norm.ppf(0.95)) * se
    return Comparison(p0, p1, p1 - p0, se, z, p, low, math.inf)


def share_above(above: int, n: int, share: float) -> float:
    """One-sided exact binomial p of H0 "at most ``share`` of ``n`` requests are above a
    threshold" given ``above`` of them were (scipy's ``binomtest(..., alternative="greater")``)."""
    if n == 0 or above == 0:
        return 1.0
    return float(stats.binom.sf(above - 1, n, share))


def _empty(alpha: float, c: float = 0.0, t: float = 0.0) -> Comparison:
    return Comparison(c, t, t - c, math.inf, 0.0, 1.0, -math.inf, math.inf)


def cuped_theta(y: npt.ArrayLike, x: npt.ArrayLike) -> float:
    """CUPED's coefficient cov(y, x) / var(x), pooled over all users of all arms."""
    ya, xa = np.asarray(y, dtype=np.float64), np.asarray(x, dtype=np.float64)
    if ya.size < 2:
        return 0.0
    vx = float(xa.var(ddof=1))
    if vx == 0:
        return 0.0
    return float(np.cov(ya, xa, ddof=1)[0, 1] / vx)


def cuped_adjust(
    y: npt.ArrayLike, x: npt.ArrayLike, theta: float, x_mean: float
) -> npt.NDArray[np.float64]:
    """Adjusted outcomes ``y - theta * (x - mean(x))``: same expectation, less variance."""
    return np.asarray(y, dtype=np.float64) - theta * (np.asarray(x, dtype=np.float64) - x_mean)


@dataclass(frozen=True)
class Sequential:
    """The mSPRT at one look: mixture likelihood ratio, always-valid p, confidence sequence."""

    likelihood_ratio: float
    p_value: float
    ci_low: float
    ci_high: float

    def to_json(self) -> dict[str, Any]:
        """The fields as a JSON-ready mapping."""
        return {k: (None if not math.isfinite(v) else v) for k, v in asdict(self).items()}


def msprt(
    diff: float, variance: float, mixture_sd: float, alpha: float = 0.05, previous_p: float = 1.0
) -> Sequential:
    """Normal-mixture sequential probability ratio test of ``diff = 0`` (Johari et al.).

    ``variance`` is the variance of the estimate ``diff`` at this look; with a N(0, tau^2)
    mixture over the effect, ``Lambda = sqrt(V/(V+tau^2)) exp(tau^2 diff^2 / (2V(V+tau^2)))``.
    The always-valid p-value is the running minimum of ``1/Lambda`` (pass ``previous_p``), so
    it may be checked after every batch without inflating the false-positive rate.  The
    interval is the matching confidence sequence: it covers the effect at all looks at once.
    """
    if not math.isfinite(variance) or variance <= 0:
        return Sequential(1.0, previous_p, -math.inf, math.inf)
    tau2 = mixture_sd**2
    v = variance
    log_lr = 0.5 * math.log(v / (v + tau2)) + tau2 * diff**2 / (2 * v * (v + tau2))
    lr = math.exp(min(log_lr, 700.0))
    p = min(previous_p, 1.0, 1.0 / lr)
    half = math.sqrt(v * (v + tau2) / tau2 * (2 * math.log(1 / alpha) + math.log((v + tau2) / v)))
    return Sequential(lr, p, diff - half, diff + half)


def bayes_normal(diff: float, se: float) -> tuple[float, float, float]:
    """(chance treatment beats control, expected loss of choosing treatment, of keeping control).

    The effect's posterior under a flat prior is N(diff, se^2); the expected loss of a choice is
    E[max(0, -effect)] for treatment and E[max(0, effect)] for control.
    """
    if not math.isfinite(se) or se <= 0:
        return (0.5 if diff == 0 else float(diff > 0)), max(-diff, 0.0), max(diff, 0.0)
    z = diff / se
    chance = float(stats.norm.cdf(z))
    pdf = float(stats.norm.pdf(z))
    loss_treatment = se * pdf - diff * float(stats.norm.cdf(-z))
    loss_control = se * pdf + diff * chance
    return chance, loss_treatment, loss_control


def srm(counts: Sequence[int], weights: Sequence[float]) -> tuple[float, float]:
    """(chi-square, p) of the users per arm against the configured weights."""
    obs = np.asarray(counts, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    keep = w > 0
    obs, w = obs[keep], w[keep]
    total = obs.sum()
    if total == 0 or len(obs) < 2:
        return 0.0, 1.0
    expected = total * w / w.sum()
    chi2, p = stats.chisquare(obs, expected)
    return float(chi2), float(p)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error), in the input order."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return [float(v) for v in out]


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (false discovery rate), in the input order."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")[::-1]
    ranks = np.arange(m, 0, -1)
    adj = np.minimum.accumulate(p[order] * m / ranks)
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return [float(v) for v in out]


def power(effect: float, sd: float, n_per_arm: float, alpha: float = 0.05) -> float:
    """Power of a two-sided z test of two equal arms of ``n_per_arm`` users each."""
    if sd <= 0 or n_per_arm <= 0:
        return 0.0
    z = float(stats.norm.ppf(1 - alpha / 2))
    shift = abs(effect) / (sd * math.sqrt(2 / n_per_arm))
    return float(stats.norm.cdf(shift - z) + stats.norm.cdf(-shift - z))


def mde(sd: float, n_per_arm: float, alpha: float = 0.05, target_power: float = 0.8) -> float:
    """Smallest effect a two-sided test detects with ``target_power`` at ``n_per_arm`` users.

    Uses the one-tail approximation (the far tail adds under 1e-6 at any useful power).
    """
    z = float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(target_power))
    return z * sd * math.sqrt(2 / n_per_arm)


def sample_size(effect: float, sd: float, alpha: float = 0.05, target_power: float = 0.8) -> int:
    """Users per arm for ``target_power`` against ``effect`` (one-tail approximation)."""
    z = float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(target_power))
    return math.ceil(2 * (z * sd / effect) ** 2)


def power_proportions(
    p_control: float,
    p_treatment: float,
    n_per_arm: float,
    alpha: float = 0.05,
    n_treatment: float | None = None,
) -> float:
    """Power of ``two_proportions`` (pooled-variance z test), normal approximation, with
    ``n_per_arm`` users per arm (or ``n_per_arm`` in control and ``n_treatment`` in treatment).

    The test's null spread uses the pooled rate, the alternative's the arms' own rates (as
    statsmodels' ``power_proportions_2indep``).
    """
    n0 = n_per_arm
    n1 = n_per_arm if n_treatment is None else n_treatment
    if n0 <= 0 or n1 <= 0:
        return 0.0
    d = abs(p_treatment - p_control)
    pooled = (p_control * n0 + p_treatment * n1) / (n0 + n1)
    s0 = math.sqrt(pooled * (1 - pooled) * (1 / n0 + 1 / n1))
    s1 = math.sqrt(p_control * (1 - p_control) / n0 + p_treatment * (1 - p_treatment) / n1)
    if s1 == 0:
        return 1.0 if d > 0 else 0.0
    z = float(stats.norm.ppf(1 - alpha / 2))
    return float(stats.norm.cdf((d - z * s0) / s1) + stats.norm.cdf((-d - z * s0) / s1))


def power_proportions_exact(
    p_control: float, p_treatment: float, n_control: int, n_treatment: int, alpha: float = 0.05
) -> float:
    """Exact power of ``two_proportions`` at these arm sizes: the binomial probability of every
    outcome pair whose pooled z rejects at ``alpha`` (no normal approximation of the outcome)."""
    if n_control <= 0 or n_treatment <= 0:
        return 0.0
    x1 = np.arange(n_treatment + 1, dtype=np.float64)
    w1 = stats.binom.pmf(x1, n_treatment, p_treatment)
    z = float(stats.norm.ppf(1 - alpha / 2))
    inv = 1 / n_control + 1 / n_treatment
    total = 0.0
    for lo in range(0, n_control + 1, 512):  # rows in blocks: memory stays small at any n
        x0 = np.arange(lo, min(lo + 512, n_control + 1), dtype=np.float64)[:, None]
        pooled = (x0 + x1) / (n_control + n_treatment)
        se = np.sqrt(pooled * (1 - pooled) * inv)
        diff = np.abs(x1 / n_treatment - x0 / n_control)
        # The test rejects when |diff| > z * se; se = 0 (all or none converted) never rejects.
        reject = (se > 0) & (diff > z * se)
        total += float(stats.binom.pmf(x0[:, 0], n_control, p_control) @ reject @ w1)
    return total


def sample_size_proportions(
    p_control: float,
    p_treatment: float,
    alpha: float = 0.05,
    target_power: float = 0.8,
    exact: bool = False,
) -> int:
    """Users per arm for ``two_proportions`` to reach ``target_power`` (smallest such n).

    ``exact``: the smallest n at which the exact binomial power reaches the target too, so
    small samples, where the normal approximation can be optimistic, are not under-planned.
    """
    d = abs(p_treatment - p_control)
    if d == 0:
        raise ValueError("no effect to detect")
    pooled = (p_control + p_treatment) / 2
    za = float(stats.norm.ppf(1 - alpha / 2))
    zb = float(stats.norm.ppf(target_power))
    v1 = p_control * (1 - p_control) + p_treatment * (1 - p_treatment)
    n = math.ceil((za * math.sqrt(2 * pooled * (1 - pooled)) + zb * math.sqrt(v1)) ** 2 / d**2)
    while n > 1 and power_proportions(p_control, p_treatment, n - 1, alpha) >= target_power:
        n -= 1
    while power_proportions(p_control, p_treatment, n, alpha) < target_power:
        n += 1
    while exact and power_proportions_exact(p_control, p_treatment, n, n, alpha) < target_power:
        n += 1
    return n


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact binomial (sign) test of wins vs losses; ties are left out."""
    n = wins + losses
    if n == 0:
        return 1.0
    return float(stats.binomtest(wins, n, 0.5).pvalue)
