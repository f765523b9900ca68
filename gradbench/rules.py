"""The rules that turn a study's runs into verdicts: stated here once, checked by simulation in
tests/test_rules.py, and printed in every report.

A verdict must not say more than its evidence (issue 22). Before a claim is judged by its numbers, two
checks decide whether this setting can test it at all:

- **Reachable** (``reachable``): a relative gain of G over B is possible only if the metric's bound leaves
  room for it. With B at 0.9867 accuracy no gain above +1.35% exists, so a +25% claim is
  ``NOT_TESTABLE`` here, whatever the runs say.
- **Settled** (``settled``): over the last doubling of the budget (the logged checkpoint nearest below half
  the budget, to the end) the gain must have moved by less than its interval's half-width at the end;
  for a level claim, A's mean by less than its own half-width (the curve has plateaued). A figure that
  moved more is still settled when the move cannot change the verdict: at both checkpoints its interval
  lies on the same side of every threshold the verdict turns on (0 and the claimed gain; a level claim's
  level), and the move took it no nearer any of them (``boundaries``: a gap that widens away from the
  claim). Otherwise the claim is ``NOT_SETTLED`` at this budget, and the report prints the interval and
  the trend (``trend``).

Then the figures, as one-sided tests of the claim's relative gain g of A over B (positive: A better):

- ``gain >= claimed`` and the test of ``g <= 0`` rejects: ``SUPPORTED``;
- the test of ``g >= claimed`` rejects: ``NOT_SUPPORTED`` (the claimed gain is ruled out);
- the test of ``g >= 0`` rejects: ``CONTRADICTED`` (B is better);
- the test of ``g <= 0`` rejects but the point estimate is below the claim, which is not ruled out:
  ``SHORT`` ("positive, short of the claim"), weaker than supported;
- otherwise ``INCONCLUSIVE``.

Each one-sided test rejects only when three tests agree at level ``ALPHA / 2`` = 1% (a 98% two-sided
decision): the paired t-test (Fieller's interval over paired seeds) and Welch's unpaired test (pairing
can cost degrees of freedom for nothing when the sides do not correlate across seeds), whose larger p is
Holm-corrected over every test of the study's claims, and the sign-flip permutation test of the paired
differences at 1% per test (exact without assumptions on the differences' distribution beyond symmetry
about 0 under the null: an outlier seed counts once). So the chance of any false definitive verdict in a
study is at most 1% per direction under normal seed-to-seed variation (Holm), and 1% per claim under heavy
tails (simulated); when one side has occasional bad seeds (15-20% of seeds, 4-5 sd low, means
equal), the seeds that happen to hold no bad one make the other side look better, which no test of 8
seeds can see, and that side is called better at most 2.5% of the time (simulated, tests/test_rules.py;
at a 95% decision it was 3-5.6%, hence 98%). With fewer than 7 paired seeds the sign-flip test cannot
reach 1% (its smallest one-sided p is 2^-n), so such a claim is at best inconclusive: run more seeds.
Failures count against their side: no ``SUPPORTED`` or ``SHORT`` while A failed or diverged on a seed, no
``CONTRADICTED`` while B did.

A level claim ("A reaches L") is ``SUPPORTED`` when A's mean reaches L, ``NOT_SUPPORTED`` when the test of
"A's mean >= L" rejects (t-test and sign-flip on A - L), ``SHORT`` when the mean falls short but L is not
ruled out; with fewer than ``MIN_SIGN_FLIP_SEEDS`` seeds it is ``INCONCLUSIVE``. Claims found not testable
or whose curve has not settled leave the Holm family (their tests decide nothing).

A budget far below the paper's (``far_below``: under 1/``FAR_BELOW`` of the steps the paper states, e.g.
50,000 of its 29.3M) shows a trend toward the paper's budget, not its verdict: only ``SUPPORTED`` (and
``NOT_TESTABLE``, which does not depend on the budget) stand there; any other outcome reads ``NOT_SETTLED``,
with what the tests alone would say in the notes. This rule only turns verdicts into ``NOT_SETTLED``, so it
cannot raise any false-alarm rate above; such claims stay in the Holm family (they can still be supported),
which only makes the other claims' tests more conservative.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats as _sp

from gradbench.stats import holm, sign_flip_p, welch_df

ALPHA = 0.02  # two-sided; each one-sided test at ALPHA / 2 (see the module docstring for why not 0.05)
MIN_SIGN_FLIP_SEEDS = 7  # the fewest pairs whose sign-flip test can reach ALPHA / 2 (2^-7 = 0.8%)
FAR_BELOW = 10  # a budget under 1/FAR_BELOW of the paper's is far below it: a trend toward it, not its verdict

SUPPORTED = "supported"
SHORT = "short of the claim"
NOT_SUPPORTED = "not supported"
CONTRADICTED = "contradicted"
INCONCLUSIVE = "inconclusive"
NOT_TESTABLE = "not testable here"
NOT_SETTLED = "not settled at this budget"
OUTCOMES = (SUPPORTED, SHORT, NOT_SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_TESTABLE, NOT_SETTLED)


# ------------------------------------------------------------------------------ testability


def max_gain(b_mean: float, higher_is_better: bool, bound: float | None) -> float:
    """The largest relative gain over B that the metric's bound allows (inf without a bound): B at 0.589
    all-or-none (bound 1) leaves (1 - 0.589) / 0.589 = +69.8%."""
    if bound is None or not math.isfinite(b_mean) or b_mean == 0:
        return math.inf
    room = bound - b_mean if higher_is_better else b_mean - bound
    return max(room, 0.0) / abs(b_mean)


def reachable(claimed: float, b_mean: float, higher_is_better: bool, bound: float | None) -> bool:
    """Whether a relative gain of ``claimed`` (a fraction) over B's mean can exist at all."""
    return claimed <= max_gain(b_mean, higher_is_better, bound)


@dataclass(frozen=True)
class Point:
    """The figure a claim is judged by at one logged step: the gain (or A's mean, for a level claim) and
    its 95% interval."""

    step: int
    value: float
    lo: float
    hi: float

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2


def _show(x: float, percent: bool) -> str:
    return f"{100 * x:+.1f}%" if percent else f"{x:+.3g}"


def settled(curve: Sequence[Point], percent: bool = False, unit: str = "step",
            boundaries: Sequence[float] = ()) -> tuple[bool, str]:
    """(whether the figure has settled over the last doubling of the budget, a sentence on its trend).

    Settled: it moved by less than its interval's half-width at the end between the logged checkpoint
    nearest below half the final step and the final step; or, moving more, it stayed clear of every
    threshold in ``boundaries`` (both intervals on the same side of each) and got no nearer any of them, so
    more budget along this trend would not change the verdict. A curve with no checkpoint at or below half
    its budget cannot show that it settled. ``percent``: the figure is a relative gain, printed in %."""
    if not curve:
        return False, "no logged checkpoints"
    end = curve[-1]
    earlier = [p for p in curve if p.step <= end.step / 2]
    if not earlier:
        return False, f"no checkpoint at or below half of {unit} {end.step}: the trend cannot be read"
    start = earlier[-1]
    moved = end.value - start.value
    half = end.half_width
    if not math.isfinite(end.value) or not math.isfinite(start.value):
        return False, "the figure is missing at a checkpoint"
    if not math.isfinite(half):
        return False, f"its interval at {unit} {end.step} is unbounded: whether it settled cannot be read"
    if abs(moved) <= half + 1e-12 * max(1.0, abs(end.value)):  # a curve with no spread and no move is settled
        return True, (f"stable: it moved {_show(moved, percent)} from {unit} {start.step} to {end.step}, less than "
                      f"its interval's half-width {_show(half, percent).lstrip('+')}")
    if boundaries and _moving_away(start, end, boundaries):
        marks = " and ".join(_show(b, percent) for b in boundaries)
        return True, (f"{trend(curve, percent, unit).split(' (moved')[0]}: it moved {_show(moved, percent)}, more than "
                      f"its half-width, but away from {marks}, with both intervals clear of them: more budget "
                      f"along this trend would not change the verdict")
    return False, trend(curve, percent, unit)


def _moving_away(start: Point, end: Point, boundaries: Sequence[float]) -> bool:
    """Whether both checkpoints' intervals lie strictly on one side of each boundary, the same side at both,
    and the figure got no nearer any boundary between them."""
    for b in boundaries:
        sides = {lo > b for lo in (start.lo, end.lo)} | {hi > b for hi in (start.hi, end.hi)}
        clear = all(x != b for x in (start.lo, start.hi, end.lo, end.hi))
        if len(sides) != 1 or not clear or abs(end.value - b) < abs(start.value - b):
            return False
    return True


def trend(curve: Sequence[Point], percent: bool = False, unit: str = "step") -> str:
    """One sentence on the last doubling: for a gain (``percent``), is the gap between the sides closing,
    widening, changing sign or stable; for a level claim's mean, is it rising, falling or stable?"""
    end = curve[-1]
    earlier = [p for p in curve if p.step <= end.step / 2]
    if not earlier:
        return "too few checkpoints to read a trend"
    start = earlier[-1]
    moved = end.value - start.value
    if abs(moved) <= end.half_width:
        return f"stable from {unit} {start.step} to {end.step} (moved {_show(moved, percent)})"
    if not percent:
        word = "rising" if moved > 0 else "falling"
    elif start.value * end.value < 0:
        word = "changing sign"
    else:
        word = "closing" if abs(end.value) < abs(start.value) else "widening"
    return (f"{word}: {_show(start.value, percent)} at {unit} {start.step}, {_show(end.value, percent)} at {unit} "
            f"{end.step} (moved {_show(moved, percent)}, more than the half-width "
            f"{_show(end.half_width, percent).lstrip('+')}: not settled)")


# ------------------------------------------------------------------------------ one-sided tests


@dataclass(frozen=True)
class Test:
    """One one-sided test of a claim: the null it rejects, what rejecting it shows, and the three p-values
    that must agree (nan: that test could not be made, which never rejects). ``p`` (the larger of the two
    t-tests) is the one Holm corrects; the sign-flip p guards each test on its own."""

    null: str
    shows: str
    p_paired: float
    p_unpaired: float
    p_sign_flip: float

    @property
    def p(self) -> float:
        ps = (self.p_paired, self.p_unpaired)
        return 1.0 if any(not math.isfinite(p) for p in ps) else max(ps)

    def rejects(self, adjusted: float, level: float) -> bool:
        return adjusted < level and math.isfinite(self.p_sign_flip) and self.p_sign_flip < level


def _t_one_sided(mean: float, se: float, df: float, greater: bool) -> float:
    if not (math.isfinite(mean) and math.isfinite(se) and df > 0):
        return math.nan
    if se == 0:
        return 0.0 if (mean > 0 if greater else mean < 0) else 1.0
    t = mean / se
    return float(_sp.t.sf(t, df) if greater else _sp.t.cdf(t, df))


def gain_test(a: np.ndarray, b: np.ndarray, higher_is_better: bool, at: float, greater: bool,
              shows: str) -> Test:
    """The one-sided test of the relative gain g against ``at``: H0 ``g <= at`` (``greater``) or
    ``g >= at``. g > at exactly when D_i = s (A_i - B_i) - at |B_i| has a positive mean (|B_i| signed by
    B's mean), which the paired t-test and the sign-flip test take over the paired seeds, and Welch's test
    over the two sides' means (the unpaired form of the same linear combination)."""
    s = 1.0 if higher_is_better else -1.0
    sigma = 1.0 if b.mean() >= 0 else -1.0
    d = s * (a - b) - at * sigma * b
    n = d.size
    p_paired = _t_one_sided(float(d.mean()), float(d.std(ddof=1)) / math.sqrt(n), n - 1, greater) if n >= 2 \
        else math.nan
    va, vb = float(a.var(ddof=1)) / a.size, float(b.var(ddof=1)) / b.size
    wb = (s + at * sigma) ** 2 * vb
    mean_l = s * float(a.mean()) - (s + at * sigma) * float(b.mean())
    df = welch_df(va, wb, a.size, b.size)
    p_unpaired = _t_one_sided(mean_l, math.sqrt(va + wb), df, greater)
    p_flip = sign_flip_p(d, "greater" if greater else "less")
    null = f"gain {'<=' if greater else '>='} {at:+.1%}"
    return Test(null, shows, p_paired, p_unpaired, p_flip)


def level_test(a: np.ndarray, level: float, higher_is_better: bool) -> Test:
    """The one-sided test that A's mean falls short of ``level`` (H0: it reaches it): t-test and sign-flip
    on A - level (Welch has nothing to add with one side; it repeats the t-test)."""
    s = 1.0 if higher_is_better else -1.0
    d = s * (a - level)
    n = d.size
    p = _t_one_sided(float(d.mean()), float(d.std(ddof=1)) / math.sqrt(n), n - 1, False) if n >= 2 else math.nan
    return Test(f"mean {'>=' if higher_is_better else '<='} {level:g}", NOT_SUPPORTED, p, p, sign_flip_p(d, "less"))


# ------------------------------------------------------------------------------ judging


@dataclass
class Judgment:
    """What the rules make of one claim: the outcome, why, and the tests behind it (their Holm-adjusted
    p-values once the whole study is judged)."""

    outcome: str
    reason: str
    tests: list[Test] = field(default_factory=list)
    adjusted: list[float] = field(default_factory=list)
    gain: float = math.nan  # the point estimate (relative gain, or A's mean for a level claim)
    notes: list[str] = field(default_factory=list)


@dataclass
class ClaimFigures:
    """The inputs of one claim: per-seed values of A and B over the paired seeds (B empty for a level
    claim), what is claimed, and the checks' inputs."""

    a: Sequence[float]
    b: Sequence[float]
    higher_is_better: bool
    claimed_gain: float | None = None  # a fraction (+0.77); None or 0: a direction only
    level: float | None = None  # a level claim instead
    bound: float | None = None  # the metric's bound in its better direction (accuracy: 1.0)
    curve: Sequence[Point] = ()  # the gain (or A's mean) at the logged checkpoints, for settledness
    percent: bool = False  # print the curve's figures as percentages (a relative gain)
    unit: str = "step"  # what the curve's x counts: step, or evaluations under a cost-evaluation budget
    a_failed: bool = False  # A failed or diverged on some seed
    b_failed: bool = False
    steps: float | None = None  # the final runs' step budget (None: another kind of budget)
    paper_steps: float | None = None  # the steps the paper trained for, where it states them


def budget_fraction(steps: float | None, paper_steps: float | None) -> float | None:
    """paper_steps / steps when the budget is far below the paper's (under 1/FAR_BELOW of it); None when it
    is not, or either budget is unknown. The rules and the report's budget cells both read it."""
    if not steps or not paper_steps or steps * FAR_BELOW >= paper_steps:
        return None
    return paper_steps / steps


def far_below(c: ClaimFigures) -> str | None:
    """Why the budget is far below the paper's (a trend toward it, not its verdict), or None when it is not
    or either budget is unknown."""
    ratio = budget_fraction(c.steps, c.paper_steps)
    if ratio is None:
        return None
    return (f"{c.steps:,.0f} steps is 1/{ratio:,.0f} of the paper's {c.paper_steps:,.0f}: a trend "
            f"toward the paper's budget, where only a claim already supported can be judged")


def candidate_tests(c: ClaimFigures) -> list[Test]:
    """The one-sided tests this claim's point estimate makes relevant (see the module docstring)."""
    a = np.asarray(c.a, dtype=float)
    if c.level is not None:  # the test of "A reaches the level" only matters when the mean falls short
        mean = float(a.mean()) if a.size else math.nan
        short = mean < c.level if c.higher_is_better else mean > c.level
        return [level_test(a, c.level, c.higher_is_better)] if a.size >= 2 and short else []
    b = np.asarray(c.b, dtype=float)
    if a.size < 2 or b.size != a.size:
        return []
    g = point_gain(c)
    claimed = c.claimed_gain or 0.0
    tests = [gain_test(a, b, c.higher_is_better, 0.0, True, SUPPORTED if g >= claimed else SHORT)] if g > 0 else []
    if g < 0:
        tests.append(gain_test(a, b, c.higher_is_better, 0.0, False, CONTRADICTED))
    if claimed > 0 and g < claimed:
        tests.append(gain_test(a, b, c.higher_is_better, claimed, False, NOT_SUPPORTED))
    return tests


def point_gain(c: ClaimFigures) -> float:
    a, b = np.asarray(c.a, dtype=float), np.asarray(c.b, dtype=float)
    if c.level is not None:
        return float(a.mean()) if a.size else math.nan
    if not a.size or not b.size or b.mean() == 0:
        return math.nan
    s = 1.0 if c.higher_is_better else -1.0
    return s * float(a.mean() - b.mean()) / abs(float(b.mean()))


def judge(claims: Sequence[ClaimFigures], alpha: float = ALPHA) -> list[Judgment]:
    """Judge a study's claims together: each claim's candidate tests, Holm over all of them, then the
    outcome of each claim by the module's rules (testability and settledness first)."""
    tests = [[] if _untestable(c) else candidate_tests(c) for c in claims]  # untestable: outside the family
    flat = holm([t.p for ts in tests for t in ts])
    out, i = [], 0
    for c, ts in zip(claims, tests, strict=True):
        adjusted = flat[i:i + len(ts)]
        i += len(ts)
        out.append(_outcome(c, ts, adjusted, alpha / 2))
    return out


def thresholds(c: ClaimFigures) -> tuple[float, ...]:
    """The values the verdict turns on, in the curve's units: a level claim's level; else a gain of 0 and
    the claimed gain."""
    if c.level is not None:
        return (c.level,)
    return (0.0, c.claimed_gain) if c.claimed_gain else (0.0,)


def _untestable(c: ClaimFigures) -> tuple[str, str] | None:
    """(NOT_TESTABLE or NOT_SETTLED, why) when this setting cannot judge the claim; None when it can."""
    if c.level is None and c.claimed_gain and len(c.b):
        b_mean = float(np.mean(c.b))
        if not reachable(c.claimed_gain, b_mean, c.higher_is_better, c.bound):
            top = max_gain(b_mean, c.higher_is_better, c.bound)
            return NOT_TESTABLE, (f"with B at {b_mean:.4g} the metric's bound {c.bound:g} allows at most {top:+.1%}, "
                                  f"below the claimed {c.claimed_gain:+.1%}: this setting cannot show the claim")
    if len(c.curve):
        ok, sentence = settled(c.curve, c.percent, c.unit, thresholds(c))
        if not ok:
            return NOT_SETTLED, sentence
    return None


def _rejected(c: ClaimFigures, j: Judgment, level: float) -> set[str]:
    """What the tests that reject at the corrected level show, less what a side's failures forbid."""
    rejected = {t.shows for t, p in zip(j.tests, j.adjusted, strict=True) if t.rejects(p, level)}
    if len(c.a) < MIN_SIGN_FLIP_SEEDS:
        j.notes.append(f"{len(c.a)} paired seeds: the sign-flip test cannot reach {level:.1%} below "
                       f"{MIN_SIGN_FLIP_SEEDS}; run more seeds for a definitive verdict")
    if CONTRADICTED in rejected and c.b_failed:
        rejected.discard(CONTRADICTED)
        j.notes.append("not contradicted while B failed or diverged on some seed (its failures count against it)")
    if rejected & {SUPPORTED, SHORT} and c.a_failed:
        rejected -= {SUPPORTED, SHORT}
        j.notes.append("not supported while A failed or diverged on some seed (its failures count against it)")
    return rejected


GAIN_REASONS = ((CONTRADICTED, "B is better: the test of a gain >= 0 rejects"),
                (NOT_SUPPORTED, "the claimed gain is ruled out: the test of a gain >= the claim rejects"),
                (SUPPORTED, "the gain reaches the claim, and the test of a gain <= 0 rejects"),
                (SHORT, "A is better (the test of a gain <= 0 rejects), but the gain falls short of the claim, "
                        "which is not ruled out"))


def _outcome(c: ClaimFigures, tests: list[Test], adjusted: list[float], level: float) -> Judgment:
    j = _tested_outcome(c, tests, adjusted, level)
    far = far_below(c)
    if far is not None and j.outcome == NOT_SETTLED:
        j.notes.append(far)
    elif far is not None and j.outcome not in (SUPPORTED, NOT_TESTABLE):
        j.notes.append(f"at this budget the rules alone would say {j.outcome}: {j.reason}")
        j.outcome, j.reason = NOT_SETTLED, far
    return j


def _tested_outcome(c: ClaimFigures, tests: list[Test], adjusted: list[float], level: float) -> Judgment:
    j = Judgment(INCONCLUSIVE, "", tests, adjusted, point_gain(c))
    untestable = _untestable(c)
    if untestable is not None:
        j.outcome, j.reason = untestable
        return j
    rejected = _rejected(c, j, level)
    if c.level is not None:
        return _level_outcome(c, j, rejected)
    for outcome, reason in GAIN_REASONS:
        if outcome in rejected:
            j.outcome, j.reason = outcome, reason
            if outcome == NOT_SUPPORTED and SHORT in rejected:
                j.notes.append("A is better than B, by less than the claim")
            elif outcome == NOT_SUPPORTED and j.gain > 0:
                j.notes.append("the point estimate favours A, by less than the claim")
            return j
    j.reason = "no test rejects at the corrected level"
    return j


def _level_outcome(c: ClaimFigures, j: Judgment, rejected: set[str]) -> Judgment:
    level = c.level
    assert level is not None
    reached = j.gain >= level if c.higher_is_better else j.gain <= level
    if c.a_failed:
        j.outcome, j.reason = NOT_SUPPORTED, "A failed or diverged on some seed, which did not reach the level"
    elif len(c.a) < MIN_SIGN_FLIP_SEEDS:
        j.reason = f"{len(c.a)} seeds: too few for a definitive verdict (at least {MIN_SIGN_FLIP_SEEDS})"
    elif NOT_SUPPORTED in rejected:
        j.outcome, j.reason = NOT_SUPPORTED, f"A's mean {j.gain:.4g} falls short of {level:g}, and the test rejects"
    elif reached:
        j.outcome, j.reason = SUPPORTED, f"A's mean {j.gain:.4g} reaches {level:g}"
    else:
        j.outcome, j.reason = SHORT, f"A's mean {j.gain:.4g} falls short of {level:g}, which is not ruled out"
    return j
