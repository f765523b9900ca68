"""gradbench.stats: each function against scipy or its closed form, the zero-variance rules, and the
paired test's false-alarm rate under the null."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats as sp

from gradbench import stats

T_975_DF3 = 3.182446305284263  # t quantile for 4 values, from tables (not from scipy)


def test_mean_ci_is_the_t_interval() -> None:
    mean, h, n = stats.mean_ci([1.0, 2.0, 3.0, 4.0])
    assert (mean, n) == (2.5, 4)
    assert h == pytest.approx(T_975_DF3 * math.sqrt(5 / 3) / 2, rel=1e-12)
    x = np.random.default_rng(0).normal(3.0, 2.0, size=7)
    lo, hi = sp.t.interval(0.95, 6, loc=x.mean(), scale=sp.sem(x))
    mean, h, n = stats.mean_ci(x)
    assert n == 7 and mean == pytest.approx(x.mean()) and h == pytest.approx((hi - lo) / 2, rel=1e-12)
    _, h90, _ = stats.mean_ci(x, level=0.9)
    lo, hi = sp.t.interval(0.9, 6, loc=x.mean(), scale=sp.sem(x))
    assert h90 == pytest.approx((hi - lo) / 2, rel=1e-12)


def test_mean_ci_small_and_non_finite() -> None:
    mean, h, n = stats.mean_ci([])
    assert math.isnan(mean) and h is None and n == 0
    assert stats.mean_ci([0.75]) == (0.75, None, 1)
    assert stats.mean_ci([1.0, None, math.nan, math.inf, 3.0])[::2] == (2.0, 2)  # only the finite values
    assert stats.mean_ci([2.0, 2.0, 2.0]) == (2.0, 0.0, 3)


def test_paired_t_matches_ttest_rel() -> None:
    rng = np.random.default_rng(1)
    shared = rng.normal(size=6)
    a, b = shared + rng.normal(0.3, 0.2, 6), shared + rng.normal(0.0, 0.2, 6)
    test = stats.paired_t(a, b)
    assert test.n == 6
    assert test.p == pytest.approx(sp.ttest_rel(a, b).pvalue, rel=1e-12)
    assert test.diff == pytest.approx(float(np.mean(a - b)))
    lo, hi = sp.t.interval(0.95, 5, loc=np.mean(a - b), scale=sp.sem(a - b))
    assert test.ci == pytest.approx((hi - lo) / 2, rel=1e-12)
    assert stats.paired_t(a, b).p == stats.paired_t(b, a).p  # two-sided


def test_paired_t_zero_variance_rules() -> None:
    same = stats.paired_t([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert (same.p, same.diff, same.ci) == (1.0, 0.0, 0.0)  # identical runs: no evidence of a difference
    offset = stats.paired_t([1.5, 2.5, 3.5], [1.0, 2.0, 3.0])
    assert (offset.p, offset.diff) == (0.0, 0.5)  # every seed agrees on the offset
    # an offset that is constant only up to rounding goes through scipy and still comes out decisive
    assert stats.paired_t([1.0, 2.0, 3.0], [0.9, 1.9, 2.9]).p < 1e-10


def test_paired_t_degenerate_inputs() -> None:
    assert math.isnan(stats.paired_t([1.0], [2.0]).p)  # one pair: no test
    assert math.isnan(stats.paired_t([1.0, math.nan, 2.0], [1.0, 2.0, 3.0]).p)
    with pytest.raises(ValueError):
        stats.paired_t([1.0, 2.0], [1.0, 2.0, 3.0])


def test_z_scores_closed_form_and_zero_se() -> None:
    z = stats.z_scores([0.3, -0.2], [0.1, 0.4], [1.0, 1.0])
    assert z == pytest.approx([3.0, 0.5])
    # zero standard error: 0 within rounding of exact, infinity beyond
    z = stats.z_scores([0.0, 5e-7, 2e-6, 5e-4, 5e-4], [0.0] * 5, [0.0, 0.0, 0.0, 1e3, 1.0])
    assert z.tolist() == [0.0, 0.0, math.inf, 0.0, math.inf]
    assert stats.z_scores([1e-9], [0.0], [0.0], rtol=0.0, atol=0.0).tolist() == [math.inf]


def test_within_rounding_rule() -> None:
    tol = stats.EXACT_ATOL + stats.EXACT_RTOL * 10.0
    assert stats.within_rounding([tol, -tol], [10.0, -10.0]).tolist() == [True, True]
    assert stats.within_rounding([tol * 1.01], [10.0]).tolist() == [False]


def test_bonferroni_critical_and_p_are_duals() -> None:
    assert stats.bonferroni_critical(0.05, 1) == pytest.approx(sp.norm.ppf(0.975))
    assert stats.bonferroni_critical(1e-3, 20, df=19) == pytest.approx(sp.t.ppf(1 - 1e-3 / 40, 19))
    for df in (None, 9):
        crit = stats.bonferroni_critical(1e-3, 12, df)
        assert stats.bonferroni_p(crit, 12, df) == pytest.approx(1e-3, rel=1e-9)
    assert stats.bonferroni_p(0.0, 12) == 1.0  # capped
    assert stats.bonferroni_p(math.inf, 12, df=4) == 0.0


def test_paired_test_false_alarm_rate_under_the_null() -> None:
    """Seeded simulation: A and B differ only by noise (with shared per-seed task noise), 4000 paired
    comparisons of 3 to 8 seeds; the fraction with p < 0.05 must be 0.05 within a two-sided binomial
    acceptance interval of probability 1 - 1e-6. So the false-failure rate of this test (a correct
    paired_t failing it) is 1e-6 for a random seed; with the fixed seed it is deterministic."""
    rng = np.random.default_rng(2024)
    trials, alpha = 4000, 0.05
    hits = 0
    for _ in range(trials):
        n = int(rng.integers(3, 9))
        task = rng.normal(0.0, 5.0, n)  # shared by both arms of a seed: the pairing removes it
        a, b = task + rng.normal(0.0, 1.0, n), task + rng.normal(0.0, 1.0, n)
        hits += stats.paired_t(a, b).p < alpha
    lo, hi = sp.binom.ppf(5e-7, trials, alpha), sp.binom.isf(5e-7, trials, alpha)
    assert lo <= hits <= hi, f"{hits} false alarms in {trials}, expected {lo:.0f}..{hi:.0f}"


def test_paired_test_power_matches_the_noncentral_t() -> None:
    """The same simulation with an offset of one noise sd: the rejection rate must be the paired t-test's
    power from the noncentral t distribution, within a binomial interval of probability 1 - 1e-6
    (false-failure rate 1e-6, as above): the test must have the right power, not only the right size."""
    rng = np.random.default_rng(7)
    trials, n = 2000, 8
    hits = sum(stats.paired_t(rng.normal(1.0, 1.0, n), rng.normal(0.0, 1.0, n)).p < 0.05 for _ in range(trials))
    crit, nc = sp.t.ppf(0.975, n - 1), 1.0 / math.sqrt(2.0) * math.sqrt(n)  # effect / sd of a difference
    power = sp.nct.sf(crit, n - 1, nc) + sp.nct.cdf(-crit, n - 1, nc)
    lo, hi = sp.binom.ppf(5e-7, trials, power), sp.binom.isf(5e-7, trials, power)
    assert lo <= hits <= hi, f"{hits} rejections in {trials}, power {power:.3f} expects {lo:.0f}..{hi:.0f}"


def test_callers_use_this_module() -> None:
    """One implementation: the leaderboard's mean_ci (in the results layer's ranking) is this one, and the old
    private copies are gone."""
    from gradbench import compare, gradstats, testing
    from gradbench.results import ranking, verdicts

    assert ranking.mean_ci is stats.mean_ci and verdicts.relative_gain is stats.relative_gain
    assert compare.paired_t is stats.paired_t
    assert gradstats.bonferroni_p is stats.bonferroni_p and testing.z_scores is stats.z_scores
    assert not hasattr(compare, "stats") and not hasattr(gradstats, "t_dist")


def test_welch_t_matches_ttest_ind_unequal_variances() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.0, 1.0, 4), rng.normal(0.5, 3.0, 6)
    test = stats.welch_t(a, b)
    assert (test.n_a, test.n_b) == (4, 6)
    assert test.p == pytest.approx(sp.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-12)
    assert test.diff == pytest.approx(a.mean() - b.mean())
    assert stats.welch_t(b, a).p == test.p  # two-sided


def test_welch_t_degenerate_cases() -> None:
    assert stats.welch_t([2.0, 2.0], [2.0, 2.0, 2.0]).p == 1.0  # no spread anywhere, equal means
    offset = stats.welch_t([2.0, 2.0], [1.5, 1.5, 1.5])
    assert (offset.p, offset.diff) == (0.0, 0.5)  # no spread anywhere, unequal means
    # spread on one side only: scipy's test (the zero-spread side adds no variance)
    one = stats.welch_t([2.0, 2.0, 2.0], [1.0, 2.0, 3.5])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's note on a constant sample
        expected = sp.ttest_ind([2.0, 2.0, 2.0], [1.0, 2.0, 3.5], equal_var=False).pvalue
    assert 0 < one.p < 1 and one.p == pytest.approx(expected, rel=1e-12)
    assert math.isnan(stats.welch_t([1.0], [1.0, 2.0]).p)  # a single value: no variance, no test
    assert math.isnan(stats.welch_t([1.0, math.inf], [1.0, 2.0]).p)
    assert math.isnan(stats.welch_t([], []).p)


def test_welch_false_alarm_rate_under_the_null() -> None:
    """Seeded simulation: two independent samples of 2 to 8 values from one normal distribution, 4000
    comparisons; the fraction with p < 0.05 must be at most 0.05: below the upper bound of a binomial
    acceptance interval at 1e-6 (false-failure rate of this test 1e-6 for a random seed). Welch's test is
    slightly conservative at small n (simulated 0.022 at n = 2, 0.045 at n = 5), so no lower bound at
    0.05; it must still reject at least at the lower bound of a 0.03 rate (not blind)."""
    rng = np.random.default_rng(2025)
    trials = 4000
    hits = 0
    for _ in range(trials):
        n_a, n_b = (int(k) for k in rng.integers(2, 9, size=2))
        hits += stats.welch_t(rng.normal(0.0, 1.0, n_a), rng.normal(0.0, 1.0, n_b)).p < 0.05
    assert sp.binom.ppf(1e-6, trials, 0.03) <= hits <= sp.binom.isf(1e-6, trials, 0.05), hits / trials


def test_bonferroni_combine() -> None:
    assert stats.bonferroni_combine([0.02, 0.5, 0.9]) == pytest.approx(0.06)
    assert stats.bonferroni_combine([0.6, 0.7]) == 1.0  # capped
    assert stats.bonferroni_combine([0.01, None, math.nan]) == pytest.approx(0.01)  # only finite p-values count
    assert math.isnan(stats.bonferroni_combine([]))


# ---------------------------------------------------------------- robust and multiple-claim statistics


def test_sign_flip_exact_small_cases_and_the_sampled_branch() -> None:
    # [1, 2, 3]: only the two all-same-sign patterns reach |sum| = 6 of 8
    assert stats.sign_flip_p([1.0, 2.0, 3.0]) == 0.25
    assert stats.sign_flip_p([1.0, 2.0, 3.0], "greater") == 0.125
    assert stats.sign_flip_p([1.0, 2.0, 3.0], "less") == 1.0
    assert stats.sign_flip_p([1.0] * 5) == 2 / 32  # the smallest two-sided p with 5 seeds: never < 0.05
    assert stats.sign_flip_p([0.0, 0.0, 0.0]) == 1.0
    assert math.isnan(stats.sign_flip_p([])) and math.isnan(stats.sign_flip_p([1.0, math.nan]))
    d = np.random.default_rng(3).normal(0.4, 1.0, size=16)  # exact (2^16 patterns) against 17 sampled
    exact = stats.sign_flip_p(d)
    sampled = stats.sign_flip_p(np.append(d, 0.0), draws=200_000)  # a zero adds no information
    assert sampled == pytest.approx(exact, abs=4 * math.sqrt(exact * (1 - exact) / 200_000) + 1e-5)
    with pytest.raises(ValueError, match="alternative"):
        stats.sign_flip_p([1.0], "bigger")


@pytest.mark.parametrize("tail", ["normal", "cauchy"])
def test_sign_flip_keeps_its_level_under_heavy_tails(tail: str) -> None:
    """8 seeds, symmetric null, 4,000 seeded trials: the two-sided 5% test rejects at most 5% (it is exact
    and discrete: at most P(p <= 0.05) = 12/256 = 4.7%); band of 4 binomial SD (false failure < 1e-4)."""
    rng = np.random.default_rng(11)
    trials, alpha = 4000, 0.05
    draw = rng.standard_normal if tail == "normal" else rng.standard_cauchy
    rejections = sum(stats.sign_flip_p(draw(8)) < alpha for _ in range(trials))
    assert rejections / trials <= alpha + 4 * math.sqrt(alpha * (1 - alpha) / trials)
    assert rejections / trials >= 0.02  # it is not dead: 12/256 patterns can reject


def test_holm_adjusts_in_order_and_skips_missing() -> None:
    assert stats.holm([0.01, 0.04, 0.03, None, 0.005]) == pytest.approx([0.03, 0.06, 0.06, math.nan, 0.02],
                                                                         nan_ok=True)
    assert stats.holm([0.5]) == [0.5] and stats.holm([]) == []
    assert stats.holm([0.3, 0.9]) == [0.6, 0.9]  # monotone, capped at 1 (0.9 * 1)


def test_holm_controls_the_familywise_rate() -> None:
    """6 true nulls (independent uniform p), 20,000 seeded families: P(any adjusted p < 0.05) stays at most
    5% plus 4 binomial SD (false failure < 1e-4); for independent nulls it is 1 - (1 - 0.05/6)^6 = 4.9%."""
    rng = np.random.default_rng(5)
    families = 20_000
    hits = sum(min(stats.holm(rng.uniform(size=6))) < 0.05 for _ in range(families))
    assert hits / families <= 0.05 + 4 * math.sqrt(0.05 * 0.95 / families)


@pytest.mark.parametrize("higher,mean_b", [(True, 10.0), (False, 10.0), (True, -25.0)])
def test_unpaired_fieller_interval_covers_the_true_gain(higher: bool, mean_b: float) -> None:
    """Independent normal seeds (5 a side, A's spread twice B's), 4,000 seeded trials: the interval covers
    the true gain 95% of the time, within 4 binomial SD (false failure < 1e-4) plus 1 point for the
    Welch-Satterthwaite degrees of freedom (an approximation)."""
    rng = np.random.default_rng(21)
    s = 1.0 if higher else -1.0
    true_gain = 0.08
    mean_a = mean_b + s * true_gain * abs(mean_b)
    trials, covered = 4000, 0
    for _ in range(trials):
        a = rng.normal(mean_a, 0.6, 5)
        b = rng.normal(mean_b, 0.3, 5)
        g = stats.relative_gain_unpaired(a, b, higher)
        covered += g.lo <= true_gain <= g.hi
    band = 4 * math.sqrt(0.95 * 0.05 / trials) + 0.01
    assert abs(covered / trials - 0.95) <= band


def test_unpaired_gain_matches_the_paired_estimate_and_degenerates_cleanly() -> None:
    a, b = [1.1, 1.2, 1.15, 1.05], [1.0, 0.98, 1.02, 1.01]
    un, pa = stats.relative_gain_unpaired(a, b, True), stats.relative_gain(a, b, True)
    assert un.gain == pytest.approx(pa.gain) and un.lo < un.gain < un.hi
    assert un.p == pytest.approx(sp.ttest_ind(a, b, equal_var=False).pvalue)
    one = stats.relative_gain_unpaired([1.0], [2.0, 3.0], True)
    assert (one.lo, one.hi) == (-math.inf, math.inf) and math.isnan(one.p)
    noisy_b = stats.relative_gain_unpaired([1.0, 1.1, 0.9], [0.1, -0.1, 0.05], True)
    assert (noisy_b.lo, noisy_b.hi) == (-math.inf, math.inf)  # B's mean not clearly away from 0: unbounded
