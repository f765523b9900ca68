"""The statistics gradbench reports, in one place, so the leaderboard, ``compare``, the gradient
statistics and the conformance checks cannot drift apart.

- ``mean_ci``: the mean over seeds with its t confidence interval (seeds are the independent units).
- ``paired_t``: the paired t-test over shared seeds (seed pairs share the task's noise), with the
  degenerate cases decided instead of left to scipy's nan: identical values give p = 1, a constant
  non-zero difference gives p = 0.
- ``welch_t``: Welch's two-sample t-test (unequal variances) for two sets of runs that share too few
  seeds to pair, with the same degenerate-case rules (no spread on either side: equal means p = 1,
  unequal p = 0).
- ``z_scores``: |difference| / standard error where a zero standard error has a rule too: a score of 0
  when the difference is exact up to rounding (``within_rounding``), infinity otherwise.
- ``bonferroni_critical`` / ``bonferroni_p``: the two-sided test of the largest of many such scores.
- ``bonferroni_combine``: one p for "any of these calibrated tests rejects", min(1, n * min p).
- ``relative_gain``: the paired relative gain of A over B (as papers state their claims, "+9%") with a
  Fieller confidence interval: the gains a paired t-test does not reject; ``relative_gain_unpaired`` the
  same for independent samples (Welch).
- ``sign_flip_p``: the sign-flip permutation test of paired differences, exact for any symmetric null.
- ``holm``: Holm's adjusted p-values over a family of tests (a study's claims).

No torch here (the leaderboard imports this module and must stay torch-free): callers pass numpy
arrays, or anything ``np.asarray`` accepts.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as _sp

LEVEL = 0.95  # confidence level of every interval gradbench prints

# A zero standard error means every draw gave the same number; the difference to the reference is then
# either exact (rounding only) or a real offset. Draws and references are often float32 sums of
# thousands of terms, so "exact" allows float32 rounding: |diff| <= EXACT_ATOL + EXACT_RTOL * |ref|.
EXACT_RTOL = 1e-6
EXACT_ATOL = 1e-6


def finite(values: Iterable[float | None]) -> np.ndarray:
    """The finite values as a float array: a missing (None) or non-finite value is not a measurement."""
    return np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)


def t_half_width(std: float, n: int, level: float = LEVEL) -> float:
    """Half-width ``t((1+level)/2, n-1) * std / sqrt(n)`` of the t interval of a mean of ``n`` values
    with sample standard deviation ``std`` (ddof=1); needs n >= 2."""
    return float(_sp.t.ppf(0.5 + level / 2, n - 1) * std / math.sqrt(n))


def mean_ci(values: Iterable[float | None], level: float = LEVEL) -> tuple[float, float | None, int]:
    """(mean, CI half-width, n) of the finite ``values``: a t interval, since n is a handful of seeds.

    The half-width is None when n < 2 (no spread to judge by), the mean nan when n == 0.
    """
    arr = finite(values)
    n = int(arr.size)
    if n == 0:
        return math.nan, None, 0
    mean = float(arr.mean())
    if n < 2:
        return mean, None, n
    return mean, t_half_width(float(arr.std(ddof=1)), n, level), n


@dataclass(frozen=True)
class Paired:
    """A paired comparison of A and B: n pairs, mean of A - B, its CI half-width, two-sided p."""

    n: int
    diff: float
    ci: float | None
    p: float


def paired_t(a: ArrayLike, b: ArrayLike, level: float = LEVEL) -> Paired:
    """The paired t-test of ``a`` against ``b`` (same seeds, same order), as scipy.stats.ttest_rel.

    Where the differences have no spread scipy's t is 0/0 or x/0: all differences exactly zero means
    identical runs (p = 1), a constant non-zero difference is as certain as a difference gets (p = 0).
    A non-finite value, or fewer than 2 pairs, gives p = nan (no test), which never counts as a tie.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired_t needs two 1-d arrays of one length, got shapes {x.shape} and {y.shape}")
    d = x - y
    n = int(d.size)
    mean = float(d.mean()) if n else math.nan
    if n < 2 or not np.all(np.isfinite(d)):
        return Paired(n, mean, None, math.nan)
    ci = t_half_width(float(d.std(ddof=1)), n, level)
    if np.all(d == 0):
        return Paired(n, mean, ci, 1.0)
    if np.all(d == d[0]):
        return Paired(n, mean, ci, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(_sp.ttest_rel(x, y).pvalue)
    return Paired(n, mean, ci, p)


@dataclass(frozen=True)
class Welch:
    """A two-sample comparison of A and B: sizes, mean of A minus mean of B, two-sided p."""

    n_a: int
    n_b: int
    diff: float
    p: float


def welch_t(a: ArrayLike, b: ArrayLike) -> Welch:
    """Welch's t-test of ``a`` against ``b`` (independent samples, unequal variances), as
    scipy.stats.ttest_ind(equal_var=False).

    The degenerate cases follow ``paired_t``: when neither side has any spread, equal means give p = 1
    and unequal means p = 0 (every run agrees on its value). A non-finite value, or fewer than 2 values
    on either side (no variance to estimate), gives p = nan (no test), which never counts as a tie.
    """
    x, y = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    n_a, n_b = int(x.size), int(y.size)
    diff = float(x.mean() - y.mean()) if n_a and n_b else math.nan
    if n_a < 2 or n_b < 2 or not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        return Welch(n_a, n_b, diff, math.nan)
    if np.all(x == x[0]) and np.all(y == y[0]):
        return Welch(n_a, n_b, diff, 1.0 if x[0] == y[0] else 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(_sp.ttest_ind(x, y, equal_var=False).pvalue)
    return Welch(n_a, n_b, diff, p)


def within_rounding(diff: ArrayLike, ref: ArrayLike, rtol: float = EXACT_RTOL,
                    atol: float = EXACT_ATOL) -> np.ndarray:
    """Whether each |diff| is rounding error of ``ref``: |diff| <= atol + rtol * |ref| (see EXACT_RTOL)."""
    return np.abs(np.asarray(diff, dtype=float)) <= atol + rtol * np.abs(np.asarray(ref, dtype=float))


def z_scores(diff: ArrayLike, se: ArrayLike, ref: ArrayLike, rtol: float = EXACT_RTOL,
             atol: float = EXACT_ATOL) -> np.ndarray:
    """|diff| / se elementwise, for ``diff = estimate - ref`` with standard error ``se``.

    A zero standard error has no spread to scale by: the score is 0 when the difference is within
    rounding of exact (``within_rounding``), and infinity otherwise (every draw agrees on an offset).
    """
    d = np.abs(np.asarray(diff, dtype=float))
    s = np.broadcast_to(np.asarray(se, dtype=float), d.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = d / np.where(s > 0, s, 1.0)
    degenerate = np.where(within_rounding(d, ref, rtol, atol), 0.0, math.inf)
    return np.where(s > 0, scaled, degenerate)


def bonferroni_critical(alpha: float, tests: int, df: float | None = None) -> float:
    """The two-sided critical score for ``tests`` simultaneous tests at family level ``alpha``: normal
    when ``df`` is None (many draws), else Student t with ``df`` degrees of freedom (few draws)."""
    q = 1 - alpha / (2 * tests)
    return float(_sp.norm.ppf(q) if df is None else _sp.t.ppf(q, df))


def bonferroni_p(score: float, tests: int, df: float | None = None) -> float:
    """The family-wise two-sided p of the largest of ``tests`` scores (normal, or t with ``df``); the
    dual of ``bonferroni_critical``: ``bonferroni_p(s) < alpha`` exactly when s exceeds the critical."""
    tail = _sp.norm.sf(score) if df is None else _sp.t.sf(score, df)
    return min(1.0, tests * 2 * float(tail))


def bonferroni_combine(pvalues: Iterable[float | None]) -> float:
    """``min(1, n * min p)`` over the n finite p-values: the p of "at least one of these tests rejects".

    If each p is calibrated (P(p < a) <= a when its null holds), the union bound gives
    P(combined < a) <= a when every null holds, whatever the dependence between the tests.
    nan when there is no finite p-value.
    """
    arr = finite(pvalues)
    if arr.size == 0:
        return math.nan
    return float(min(1.0, arr.size * float(arr.min())))


@dataclass(frozen=True)
class Gain:
    """The relative gain of A over B over n paired seeds, as a fraction (+0.09 = "+9%"), signed so that
    positive means A is better; ``lo``/``hi`` its confidence interval (infinite when unbounded); ``p`` the
    paired t-test of A against B (a gain of 0); ``sd`` the seed-to-seed spread of one pair's gain."""

    n: int
    gain: float
    lo: float
    hi: float
    p: float
    sd: float


def relative_gain(a: ArrayLike, b: ArrayLike, higher_is_better: bool, level: float = LEVEL) -> Gain:
    """The relative gain ``s (mean A - mean B) / |mean B|`` (s = +1 when higher is better, else -1) over
    paired seeds, with Fieller's interval.

    The interval is every gain g that the paired t-test does not reject: g is the true gain exactly when
    the pairs' differences ``D_i(g) = s (A_i - B_i) - g |B_i|`` (|B_i| taken with the sign of mean B) have
    mean zero, so the set {g : |t(D(g))| <= t crit} is a quadratic inequality in g. Under normal
    seed-to-seed variation its coverage is exactly ``level`` whatever the correlation of A and B (no
    delta-method approximation); when B's mean is not itself clearly away from zero the set is
    unbounded and so is the interval.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"relative_gain needs two 1-d arrays of one length, got shapes {x.shape} and {y.shape}")
    n = int(x.size)
    sign = 1.0 if higher_is_better else -1.0
    d = sign * (x - y)
    bb = (1.0 if n == 0 or y.mean() >= 0 else -1.0) * y
    md, mb = (float(d.mean()), float(bb.mean())) if n else (math.nan, math.nan)
    gain = md / mb if n and mb != 0 else math.nan
    if n < 2 or not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))) or not math.isfinite(gain):
        return Gain(n, gain, -math.inf, math.inf, math.nan, math.nan)
    c2 = float(_sp.t.ppf(0.5 + level / 2, n - 1)) ** 2
    cov = np.cov(np.stack([d, bb]), ddof=1)
    vdd, vdb, vbb = float(cov[0, 0]), float(cov[0, 1]), float(cov[1, 1])
    qa = n * mb**2 - c2 * vbb
    qb = -2.0 * (n * md * mb - c2 * vdb)
    qc = n * md**2 - c2 * vdd
    if qa <= 0:
        lo, hi = -math.inf, math.inf
    else:  # the estimate itself always satisfies the inequality, so the discriminant is >= 0 up to rounding
        root = math.sqrt(max(qb * qb - 4 * qa * qc, 0.0))
        lo, hi = (-qb - root) / (2 * qa), (-qb + root) / (2 * qa)
    sd = float(np.std(d - gain * bb, ddof=1) / abs(mb))
    return Gain(n, gain, lo, hi, paired_t(x, y, level).p, sd)


def welch_df(va: float, vb: float, n_a: int, n_b: int) -> float:
    """The Welch-Satterthwaite degrees of freedom of a sum of two independent means' variances ``va`` and
    ``vb`` (each already divided by its sample size, and weighted as the statistic weighs it), from samples
    of ``n_a`` and ``n_b``; n_a + n_b - 2 when neither side varies."""
    denom = (va**2 / (n_a - 1) if va else 0.0) + (vb**2 / (n_b - 1) if vb else 0.0)
    return (va + vb) ** 2 / denom if denom > 0 else float(n_a + n_b - 2)


def relative_gain_unpaired(a: ArrayLike, b: ArrayLike, higher_is_better: bool, level: float = LEVEL) -> Gain:
    """``relative_gain`` for two independent samples (seeds not paired, or pairs that do not help: A and B
    uncorrelated or anti-correlated across seeds, where pairing spends degrees of freedom for nothing).

    Fieller's interval for the ratio of two independent means: g is in it when Welch's t of
    ``L(g) = s mean(A) - (s + g sign(mean B)) mean(B)`` (zero exactly at the true gain) is within the
    critical value, with the Welch-Satterthwaite degrees of freedom at the estimate. ``p`` is Welch's
    test of a zero gain; ``sd`` is the spread of one seed's gain, sqrt(var A + (s + gain sign(mean B))^2 var B)
    / |mean B|.
    """
    x, y = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    n_a, n_b = int(x.size), int(y.size)
    s = 1.0 if higher_is_better else -1.0
    mb = float(y.mean()) if n_b else math.nan
    big_m = abs(mb)
    d = s * (float(x.mean()) - mb) if n_a and n_b else math.nan
    gain = d / big_m if n_a and n_b and big_m > 0 else math.nan
    finite_all = np.all(np.isfinite(x)) and np.all(np.isfinite(y))
    if n_a < 2 or n_b < 2 or not finite_all or not math.isfinite(gain):
        return Gain(min(n_a, n_b), gain, -math.inf, math.inf, math.nan, math.nan)
    sigma = 1.0 if mb >= 0 else -1.0
    va, vb = float(x.var(ddof=1)) / n_a, float(y.var(ddof=1)) / n_b
    wb = (s + gain * sigma) ** 2 * vb  # B's share of Var L(g) at the estimate
    df = welch_df(va, wb, n_a, n_b)
    c2 = float(_sp.t.ppf(0.5 + level / 2, df)) ** 2
    qa = big_m**2 - c2 * vb
    qb = -2.0 * (d * big_m + c2 * vb * s * sigma)
    qc = d**2 - c2 * (va + vb)
    if qa <= 0:
        lo, hi = -math.inf, math.inf
    else:
        root = math.sqrt(max(qb * qb - 4 * qa * qc, 0.0))
        lo, hi = (-qb - root) / (2 * qa), (-qb + root) / (2 * qa)
    sd = math.sqrt(float(x.var(ddof=1)) + (s + gain * sigma) ** 2 * float(y.var(ddof=1))) / big_m
    return Gain(min(n_a, n_b), gain, lo, hi, welch_t(x, y).p, sd)


SIGN_FLIP_EXACT_MAX = 16  # enumerate all 2^n sign patterns up to this many pairs (65,536), else sample them


def sign_flip_p(d: ArrayLike, alternative: str = "two-sided", draws: int = 100_000, seed: int = 0) -> float:
    """The sign-flip permutation test of a zero mean for paired differences ``d``: under the null each
    difference is as likely negative as positive (symmetric about 0), so every pattern of signs is equally
    likely, and p is the share of patterns whose sum is at least as extreme as the observed one.

    Valid for any distribution of the differences that is symmetric about 0 under the null: an outlier
    seed moves the sum but counts as one pattern among 2^n, so the test keeps its level under heavy tails,
    where a t-test does not (a skewed null, such as one side's occasional bad seed, breaks the symmetry).
    Exact (all patterns) up to ``SIGN_FLIP_EXACT_MAX`` pairs, else ``draws`` seeded random patterns with
    the (1 + hits)/(1 + draws) rule, which keeps it valid. Its smallest p is 2^-n (one-sided) or 2^(1-n)
    (two-sided): with 5 seeds it can never reject at 5%. ``alternative``: "two-sided", "greater" (mean > 0)
    or "less". nan when n == 0 or a value is not finite.
    """
    x = np.asarray(d, dtype=float).ravel()
    n = int(x.size)
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"alternative must be two-sided, greater or less, got {alternative!r}")
    if n == 0 or not np.all(np.isfinite(x)):
        return math.nan
    observed = float(x.sum())
    tol = 1e-12 * float(np.abs(x).sum())  # a pattern that ties the observed sum up to rounding counts as extreme
    if n <= SIGN_FLIP_EXACT_MAX:
        patterns = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)  # every +-1 vector
    else:
        patterns = np.random.default_rng(seed).choice([-1.0, 1.0], size=(draws, n))
    sums = patterns @ x
    if alternative == "two-sided":
        hits = int(np.sum(np.abs(sums) >= abs(observed) - tol))
    elif alternative == "greater":
        hits = int(np.sum(sums >= observed - tol))
    else:
        hits = int(np.sum(sums <= observed + tol))
    if n <= SIGN_FLIP_EXACT_MAX:
        return hits / 2**n
    return (1 + hits) / (1 + draws)


def holm(pvalues: Iterable[float | None]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979), in the input's order: the i-th smallest of m
    p-values is multiplied by (m - i + 1), made non-decreasing, capped at 1. Rejecting where the adjusted
    p < alpha keeps the chance of any false rejection among the m tests at most alpha, whatever their
    dependence, and rejects at least what Bonferroni does. A missing or non-finite p is no test: it stays
    nan and does not count in m."""
    values = [math.nan if p is None else float(p) for p in pvalues]
    order = sorted((p, i) for i, p in enumerate(values) if math.isfinite(p))
    m = len(order)
    out = [math.nan] * len(values)
    running = 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out
