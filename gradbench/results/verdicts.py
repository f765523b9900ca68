"""A paper's claim judged from its sides' records: the figures of each side, the relative gain at the end
and at every logged checkpoint, and the verdict by the stated rules of ``gradbench.rules`` (where every
rule and its false-alarm rate is stated and simulated). ``gradbench.study`` gathers the records
(``Side``); ``conclude_all`` judges a study's claims together (Holm's correction runs over all of them) and
fills in each ``Verdict``; the claims report renders them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from gradbench import rules
from gradbench.results.catalogue import Metric
from gradbench.results.record import Record
from gradbench.results.selection import Selection
from gradbench.rules import (
    CONTRADICTED,
    INCONCLUSIVE,
    NOT_SETTLED,
    NOT_SUPPORTED,
    NOT_TESTABLE,
    SHORT,
    SUPPORTED,
    Judgment,
    Point,
)
from gradbench.stats import Gain, Paired, mean_ci, paired_t, relative_gain, relative_gain_unpaired, t_half_width

__all__ = ["CONTRADICTED", "INCONCLUSIVE", "MISSING", "NOT_SETTLED", "NOT_SUPPORTED", "NOT_TESTABLE", "RULE_TEXT",
           "SHORT", "SUPPORTED", "Side", "Statement", "Verdict", "conclude_all", "seeds_to_settle"]

MISSING = "missing"  # a final seed whose run has no record yet
MAX_SEEDS = 1000  # beyond this, "what would settle it" says "more than 1000 seeds"


RULE_TEXT = f"""Each claim is first checked for whether this setting can test it, then judged by one-sided tests of
the relative gain g of A over B (positive: A is better), with the paper's claimed gain G:

- **{NOT_TESTABLE}**: the metric's bound leaves no room for G over B's mean (an accuracy cannot pass 1:
  with B at 0.9867, no gain above +1.35% exists);
- **{NOT_SETTLED}**: over the last doubling of the budget (the logged checkpoint nearest below half the
  budget, to the end) the gain moved by more than its 95% interval's half-width at the end (for a level
  claim: A's mean moved by more than its own half-width, the curve has not plateaued), unless it moved away
  from every threshold the verdict turns on (0 and G; a level) with both intervals clear of them, which
  more budget along that trend would not reverse; the interval and the trend are printed, and a longer
  budget would settle it. A budget under 1/{rules.FAR_BELOW} of the steps the paper trained for shows a
  trend toward the paper's budget, not its verdict: there every outcome but {SUPPORTED} and
  {NOT_TESTABLE} reads {NOT_SETTLED} (the tests' outcome is kept in the notes);
- **{CONTRADICTED}**: the test of g >= 0 rejects (B is better);
- **{NOT_SUPPORTED}**: the test of g >= G rejects (the claimed gain is ruled out);
- **{SUPPORTED}**: the point estimate reaches G and the test of g <= 0 rejects;
- **{SHORT}**: the test of g <= 0 rejects, but the point estimate falls short of G, which is not ruled
  out (weaker than {SUPPORTED});
- **{INCONCLUSIVE}**: no test rejects.

A test rejects only when three agree at 1% one-sided (a 98% decision): the paired t-test, Welch's
unpaired test (pairing spends degrees of freedom for nothing when the sides do not correlate across
seeds), both Holm-corrected over every test of this study's claims, and the sign-flip permutation test of
the paired differences (exact for any null symmetric about 0: an outlier seed counts once). Simulated
false-alarm rates (tests/test_rules.py): at most 1% per direction for a whole study under normal seeds
(Holm), and per claim under heavy-tailed seeds; at most 2.5% per claim when one side has occasional bad
seeds (20% of seeds, 4.5-5 sd low, equal means). Claims found not testable, or whose curve has not
settled, stay out of Holm's family; a claim on a budget far below the paper's stays in it.
The sign-flip test needs at least {rules.MIN_SIGN_FLIP_SEEDS} paired seeds to reach 1%: with fewer, a claim
is at best {INCONCLUSIVE}. A level claim ("A reaches 94.2%") is {SUPPORTED} when A's mean reaches it,
{NOT_SUPPORTED} when the one-sided t and sign-flip tests of "A reaches it" reject, {SHORT} otherwise.
Failures count against their side: seeds where a side failed or diverged are not paired, a level is not
reached by a seed that failed, and no {SUPPORTED} or {SHORT} while A failed or diverged on some seed (no
{CONTRADICTED} while B did). Tables print 95% intervals (paired, and unpaired beside them) and the
absolute difference of the means with its paired 95% interval."""


@dataclass(frozen=True)
class Statement:
    """What the paper states: a relative gain in % (``gain``), a level A reaches (``level``), or neither
    (only that A is better); ``bound`` is the metric's bound in its better direction (accuracy: 1), which
    decides whether the claimed gain can exist at all."""

    gain: float | None = None
    level: float | None = None
    bound: float | None = None
    paper_steps: int | None = None  # the steps the paper trained for, where it states them

    @property
    def kind(self) -> str:
        """``level``, ``gain`` or ``direction``."""
        return "level" if self.level is not None else "gain" if self.gain is not None else "direction"

    @property
    def claimed(self) -> float:
        """The claimed gain as a fraction (0 for a claim of only a direction)."""
        return (self.gain or 0.0) / 100


@dataclass
class Side:
    """One side of a claim: its final records and the metric's values over them."""

    side: str  # "A" or "B"
    estimator: str  # the side's estimator spec
    records: dict[int, Record]  # seed -> the final run's record (seeds without one are absent)
    statuses: list[str]  # per final seed: ok, failed, diverged, or MISSING
    values: dict[int, float]  # seed -> the metric, over ok records with a finite value
    selection: Selection | None = None  # a tuned side's selection record
    chosen: Mapping[str, str] | None = None  # a tuned side's chosen setting

    @classmethod
    def of(cls, side: str, estimator: str, found: Mapping[int, Record | None], metric: Metric,
           checkpoint: str | None = None, **tuning: Any) -> Side:
        """A side from its final seeds' records (None: not run yet), reading ``metric`` (a gradient
        statistic at ``checkpoint``)."""
        records = {s: r for s, r in found.items() if r is not None}
        values = {s: v for s, r in records.items() if r.ok and (v := metric.value(r, checkpoint)) is not None}
        return cls(side, estimator, records, [r.status if r is not None else MISSING for r in found.values()],
                   values, **tuning)

    @cached_property
    def stat(self) -> tuple[float, float | None, int]:
        """(mean, 95% CI half-width or None, n) of the values."""
        return mean_ci(self.values.values())

    @property
    def mean(self) -> float:
        return self.stat[0]

    @property
    def ci95(self) -> float | None:
        return self.stat[1]

    @property
    def n(self) -> int:
        return self.stat[2]

    @property
    def failed(self) -> bool:
        """Whether some final seed failed, diverged or has no value (it counts against this side)."""
        return self.n < len(self.statuses)

    @property
    def complete(self) -> bool:
        """Whether every final seed has a record (and there are final seeds)."""
        return bool(self.statuses) and MISSING not in self.statuses


@dataclass
class Verdict:
    """One claim's figures and verdict; ``outcome`` is None while it cannot be judged (runs missing)."""

    id: str
    statement: Statement
    higher_is_better: bool
    sides: list[Side]  # A, then B for a comparison
    budget: Any
    preset: str
    outcome: str | None = None  # one of gradbench.rules.OUTCOMES
    reason: str = ""  # the rule that gave the outcome, in words
    notes: list[str] = field(default_factory=list)  # why a rule was overruled, or could not decide
    no_choice: list[str] = field(default_factory=list)  # tuned sides whose tuning found no eligible setting
    gain: Gain | None = None  # the paired relative gain of A over B (comparisons), 95%
    unpaired: Gain | None = None  # the same from the two sides' means as independent samples, 95%
    difference: Paired | None = None  # mean of A - B over the paired seeds, with its 95% half-width
    paired_seeds: list[int] = field(default_factory=list)
    curve: list[Point] = field(default_factory=list)  # the gain (or A's mean) at every logged checkpoint
    trend: str = ""  # one sentence on the curve's last doubling
    judgment: Judgment | None = None  # the tests behind the outcome, with their Holm-adjusted p-values
    seeds_to_settle: int | None = None  # an inconclusive comparison: seeds that would narrow it enough

    @property
    def a(self) -> Side:
        return self.sides[0]

    @property
    def b(self) -> Side | None:
        return self.sides[1] if len(self.sides) > 1 else None

    @property
    def complete(self) -> bool:
        return all(s.complete for s in self.sides)


def seeds_to_settle(sd: float, width: float) -> int | None:
    """The fewest seeds whose 98% interval (the rules' decision level) of a gain with seed-to-seed spread
    ``sd`` has half-width below ``width``, and never fewer than the rules' minimum for a definitive verdict
    (None: more than MAX_SEEDS). Holm's correction can ask for more."""
    if not width > 0 or not math.isfinite(sd):
        return None
    least = rules.MIN_SIGN_FLIP_SEEDS
    if sd == 0:
        return least
    for n in range(2, MAX_SEEDS + 1):
        if t_half_width(sd, n, level=1 - rules.ALPHA) < width:
            return max(n, least)
    return None


def _side_series(side: Side, runs_dir: str | Path, trace: str, evals: bool) -> dict[int, list[tuple[float, float]]]:
    """seed -> (x, value) along training of the side's ok runs with a final value; x is the step, or for a
    cost-evaluation budget the evaluations spent (step times the run's evaluations per step)."""
    out = {}
    for seed, r in side.records.items():
        if not r.ok or seed not in side.values:
            continue
        per_step = (r.evals_per_step or 1.0) if evals else 1.0
        out[seed] = [(step * per_step, value) for step, _, value in r.series(runs_dir, trace)]
    return out


def gain_curve(v: Verdict, runs_dir: str | Path, trace: str) -> list[Point]:
    """The claim's figure along training (history column ``trace``, ``test/<metric>``): the paired relative
    gain of A over B with its 95% interval, or for a level claim A's mean with its 95% interval. Under a
    step budget at every logged step both sides share; under a cost-evaluation budget (the sides log at
    different steps) at the evaluation counts where the side with fewer logged points was evaluated, the
    other side's values interpolated linearly in evaluations, within the range it was evaluated over."""
    evals = isinstance(v.budget, Mapping) and "evals" in v.budget
    series = [_side_series(side, runs_dir, trace, evals) for side in v.sides]
    grids = [sorted({x for pts in sides.values() for x, _ in pts}) for sides in series]
    if not grids or not all(grids):
        return []
    xs = min(grids, key=len) if evals else sorted(set.intersection(*(set(g) for g in grids)))
    out = []
    for x in xs:
        if x == 0:
            continue  # the initial parameters: a gain there says nothing about training
        at = [{seed: _value_at(pts, x) for seed, pts in sides.items()} for sides in series]
        at = [{seed: y for seed, y in d.items() if y is not None} for d in at]
        if v.b is None:
            mean, half, n = mean_ci(at[0].values())
            if n >= 2 and half is not None:
                out.append(Point(int(round(x)), mean, mean - half, mean + half))
            continue
        seeds = sorted(set(at[0]) & set(at[1]))
        g = relative_gain([at[0][s] for s in seeds], [at[1][s] for s in seeds], v.higher_is_better)
        if g.n >= 2 and math.isfinite(g.gain):
            out.append(Point(int(round(x)), g.gain, g.lo, g.hi))
    return out


def _value_at(points: list[tuple[float, float]], x: float) -> float | None:
    """The value at ``x``: logged there, or interpolated linearly between the logged points around it; None
    outside the logged range."""
    for px, py in points:
        if px == x:
            return py
    before = [(px, py) for px, py in points if px < x]
    after = [(px, py) for px, py in points if px > x]
    if not before or not after:
        return None
    (x0, y0), (x1, y1) = before[-1], after[0]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def _unit(v: Verdict) -> str:
    return "evaluations" if isinstance(v.budget, Mapping) and "evals" in v.budget else "step"


def _figures(v: Verdict) -> rules.ClaimFigures:
    """The rules' inputs: the per-seed values over the paired seeds, what is claimed, the curve, the budgets."""
    a, b = v.a, v.b
    budgets = {"steps": v.budget.get("steps") if isinstance(v.budget, Mapping) else None,
               "paper_steps": v.statement.paper_steps}
    if b is None:
        seeds = sorted(a.values)
        return rules.ClaimFigures([a.values[s] for s in seeds], [], v.higher_is_better, level=v.statement.level,
                                  bound=v.statement.bound, curve=v.curve, unit=_unit(v), a_failed=a.failed,
                                  **budgets)
    seeds = sorted(set(a.values) & set(b.values))
    return rules.ClaimFigures([a.values[s] for s in seeds], [b.values[s] for s in seeds], v.higher_is_better,
                              claimed_gain=v.statement.claimed or None, bound=v.statement.bound, curve=v.curve,
                              percent=True, unit=_unit(v), a_failed=a.failed, b_failed=b.failed, **budgets)


def _fill_figures(v: Verdict) -> None:
    """The printed figures: paired and unpaired gains, the absolute difference, what would settle it."""
    a, b = v.a, v.b
    if b is None:
        return
    shared = sorted(set(a.values) & set(b.values))
    xs, ys = [a.values[s] for s in shared], [b.values[s] for s in shared]
    v.paired_seeds = shared
    v.gain = relative_gain(xs, ys, v.higher_is_better)
    v.unpaired = relative_gain_unpaired(list(a.values.values()), list(b.values.values()), v.higher_is_better)
    v.difference = paired_t(xs, ys)
    g = v.gain
    if g.n >= 2 and math.isfinite(g.gain):
        claimed = v.statement.claimed
        v.seeds_to_settle = seeds_to_settle(g.sd, claimed / 2 if claimed > 0 else abs(g.gain))


def conclude_all(verdicts: Sequence[Verdict], curves: Mapping[str, list[Point]] | None = None) -> list[Verdict]:
    """Judge a study's claims together (``gradbench.rules.judge``: Holm over all their tests): every claim
    whose final runs all have records gets its outcome, reason, tests, curve and trend; the others keep
    ``outcome`` None. ``curves`` (claim id -> ``gain_curve``) feeds the settledness check."""
    ready = [v for v in verdicts if v.complete]
    for v in ready:
        _fill_figures(v)
        v.curve = list((curves or {}).get(v.id, []))
        if v.curve:
            v.trend = rules.settled(v.curve, percent=v.b is not None, unit=_unit(v),
                                    boundaries=rules.thresholds(_figures(v)))[1]
        elif v.statement.kind != "level" or v.b is not None:
            v.trend = "no learning curve of this metric: settledness is not checked"
    judged = rules.judge([_figures(v) for v in ready])
    for v, j in zip(ready, judged, strict=True):
        v.judgment, v.outcome, v.reason = j, j.outcome, j.reason
        v.notes.extend(j.notes)
        if v.b is not None and v.gain is not None and v.gain.n < 2:
            v.outcome, v.reason = INCONCLUSIVE, f"{v.gain.n} seed(s) where both sides finished with a value"
    return list(verdicts)
