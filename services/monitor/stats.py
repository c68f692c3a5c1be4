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
- plans for conversion: ``sample_size_proportions`` for the fixed-horizon z test and
  ``sample_size_sequential`` (with ``power_sequential`` / ``mde_sequential``) for the
  always-valid test the policy decides with, by a seeded Monte Carlo of its path;
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
    "mde_sequential",
    "moments",
    "msprt",
    "power",
    "power_proportions",
    "power_proportions_exact",
    "power_sequential",
    "ratio_moments",
    "sample_size",
    "sample_size_proportions",
    "sample_size_sequential",
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


# -- the always-valid test's plan ---------------------------------------------------------------

_BLOCK = 256  # looks per block of normals: memory stays small at any number of looks


def _msprt_bound(m: npt.NDArray[np.float64], var1: float, tau2: float, alpha: float) -> Any:
    """|S| at and beyond which ``msprt`` rejects after ``m`` users per arm, for the sum ``S``
    of per-user differences with variance ``var1`` per user and arm pair (at ``m = 0``: the
    limit ``var1 / tau * sqrt(2 log(1/alpha))``)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        v = var1 / m
        half = np.sqrt(v * (v + tau2) / tau2 * (2 * math.log(1 / alpha) + np.log1p(tau2 / v)))
        bound = m * half
    return np.where(m > 0, bound, var1 / math.sqrt(tau2) * math.sqrt(2 * math.log(1 / alpha)))


def _normals(seed: int, paths: int, block: int) -> npt.NDArray[np.float64]:
    """The standard normals of one block of looks: the same for every n (common random
    numbers), so the estimated power is a smooth function of n and of the effect."""
    return np.random.default_rng([seed, block]).standard_normal((paths, _BLOCK))


def _schedule(
    n: float, looks: int | Sequence[float] | None, look_every: float | None
) -> tuple[npt.NDArray[np.float64], bool]:
    """(users per arm at each look, whether the path is watched continuously between them)."""
    if look_every is not None:
        if look_every <= 0:
            raise ValueError("look_every must be positive")
        k = math.ceil(n / look_every)
        m = np.minimum(np.arange(1, k + 1, dtype=np.float64) * look_every, n)
        return m, False
    if looks is None:
        return n * np.arange(1, 513, dtype=np.float64) / 512, True
    if isinstance(looks, int):
        if looks < 1:
            raise ValueError("looks must be at least 1")
        return n * np.arange(1, looks + 1, dtype=np.float64) / looks, False
    f = np.asarray(looks, dtype=np.float64)
    if f.size == 0 or np.any(np.diff(f) <= 0) or f[0] <= 0 or not math.isclose(f[-1], 1.0):
        raise ValueError("look fractions must increase from above 0 to 1")
    return n * f, False


def power_sequential(
    p_control: float,
    p_treatment: float,
    n_per_arm: float,
    mixture_sd: float,
    alpha: float = 0.05,
    looks: int | Sequence[float] | None = None,
    look_every: float | None = None,
    paths: int = 20_000,
    seed: int = 0,
) -> float:
    """Power of the always-valid test the policy decides with (``msprt`` of the conversion
    difference, two-sided, running minimum p) over an experiment that ends at ``n_per_arm``
    users per arm, by a seeded Monte Carlo of the test statistic's path.

    Method: after ``m`` users per arm the difference's sum ``S(m)`` is, under the normal
    approximation, a Brownian motion with drift ``p_treatment - p_control`` per user and
    variance ``p0(1-p0) + p1(1-p1)`` per user (the variance ``two_proportions``' Wald standard
    error estimates); ``msprt`` with that variance rejects at a look exactly when ``|S(m)|``
    reaches the boundary ``m x`` its confidence sequence's half-width.  ``paths`` paths are
    drawn (vectorised, in blocks of looks) and the power is the share that reach the boundary
    at a look.  The looks: ``look_every`` users per arm (the monitor's step cadence in users;
    the last look at ``n_per_arm``), or ``looks`` equally spaced looks (an int) or at these
    fractions of ``n_per_arm`` (a sequence ending at 1), or, with neither, continuous
    monitoring: 512 equally spaced looks plus, between them, the Brownian-bridge probability
    of crossing the (chord of the) boundary.  Continuous monitoring gives the *highest* power
    (an optimistic bound for the plan); one look at the end (``looks=1``) the lowest.
    ``seed`` fixes the normals, the same for every ``n_per_arm`` (common random numbers).
    """
    if n_per_arm <= 0:
        return 0.0
    m, continuous = _schedule(float(n_per_arm), looks, look_every)
    d = p_treatment - p_control
    var1 = p_control * (1 - p_control) + p_treatment * (1 - p_treatment)
    if var1 <= 0:
        return 1.0 if d != 0 else 0.0
    tau2 = mixture_sd**2
    bound = _msprt_bound(m, var1, tau2, alpha)
    prev_m, s = 0.0, np.zeros(paths)
    start = float(_msprt_bound(np.zeros(1), var1, tau2, alpha)[0])
    prev_gap_hi = prev_gap_lo = np.full(paths, start)
    rejected = np.zeros(paths, dtype=bool)
    survive = np.ones(paths)  # continuous: chance of not crossing between looks
    for block, lo in enumerate(range(0, m.size, _BLOCK)):
        mb, bb = m[lo : lo + _BLOCK], bound[lo : lo + _BLOCK]
        dm = np.diff(mb, prepend=prev_m)
        z = _normals(seed, paths, block)[:, : mb.size]
        path = s[:, None] + np.cumsum(d * dm + np.sqrt(var1 * dm) * z, axis=1)
        rejected |= (np.abs(path) >= bb).any(axis=1)
        if continuous:
            gap_hi, gap_lo = np.maximum(bb - path, 0.0), np.maximum(bb + path, 0.0)
            lag_hi = np.column_stack([prev_gap_hi, gap_hi[:, :-1]])
            lag_lo = np.column_stack([prev_gap_lo, gap_lo[:, :-1]])
            cross = np.exp(-2 * lag_hi * gap_hi / (var1 * dm)) + np.exp(
                -2 * lag_lo * gap_lo / (var1 * dm)
            )
            survive *= np.prod(1 - np.minimum(cross, 1.0), axis=1)
            prev_gap_hi, prev_gap_lo = gap_hi[:, -1], gap_lo[:, -1]
        s, prev_m = path[:, -1], float(mb[-1])
    if continuous:
        return float(np.where(rejected, 1.0, 1 - survive).mean())
    return float(rejected.mean())


def sample_size_sequential(
    p_control: float,
    p_treatment: float,
    mixture_sd: float,
    alpha: float = 0.05,
    target_power: float = 0.8,
    looks: int | Sequence[float] | None = None,
    look_every: float | None = None,
    paths: int = 20_000,
    seed: int = 0,
) -> int:
    """Users per arm (``max_users``) at which the always-valid test the policy decides with
    reaches ``target_power``: the smallest n with ``power_sequential(...) >= target_power``
    (same looks, mixture spread, paths and seed), found by doubling from the fixed-horizon
    plan (always validity costs users) and then bisection.  Reproducible: the same arguments
    give the same n."""
    if p_treatment == p_control:
        raise ValueError("no effect to detect")

    def ok(n: int) -> bool:
        pw = power_sequential(
            p_control, p_treatment, n, mixture_sd, alpha, looks, look_every, paths, seed
        )
        return pw >= target_power

    # The fixed-horizon plan is the start: at its n the always-valid test is nearly always short.
    lo = sample_size_proportions(p_control, p_treatment, alpha, target_power)
    while ok(lo):
        if lo == 1:
            return 1
        lo //= 2
    hi = 2 * lo
    while not ok(hi):
        lo, hi = hi, 2 * hi
        if hi > 1 << 40:
            raise ValueError("no sample size reaches the power")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def mde_sequential(
    p_control: float,
    n_per_arm: float,
    mixture_sd: float,
    alpha: float = 0.05,
    target_power: float = 0.8,
    looks: int | Sequence[float] | None = None,
    look_every: float | None = None,
    paths: int = 20_000,
    seed: int = 0,
    tol: float = 1e-4,
) -> float:
    """Smallest increase over ``p_control`` the always-valid test detects with ``target_power``
    at ``n_per_arm`` users per arm (the inverse of ``sample_size_sequential``; bisection on the
    effect with ``power_sequential``'s common random numbers); ``nan`` when even
    ``p_treatment = 1`` falls short."""

    def pw(d: float) -> float:
        return power_sequential(
            p_control, p_control + d, n_per_arm, mixture_sd, alpha, looks, look_every, paths, seed
        )

    lo, hi = 0.0, 1.0 - p_control
    if hi <= 0 or pw(hi) < target_power:
        return math.nan
    while hi - lo > tol:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if pw(mid) >= target_power else (mid, hi)
    return hi


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact binomial (sign) test of wins vs losses; ties are left out."""
    n = wins + losses
    if n == 0:
        return 1.0
    return float(stats.binomtest(wins, n, 0.5).pvalue)
