"""A paper's claim judged from its sides' records: the figures of each side, the paired relative gain, and
the verdict by a stated rule. ``gradbench.study`` gathers the records (``Side``); ``conclude`` fills in a
``Verdict``; the claims report renders it.

The rules (``RULES``, one per kind of statement; a new kind of claim is one function there):

- a relative gain (``gain``), from the gain's 95% interval [lo, hi] (``stats.relative_gain``):
  contradicted: hi < 0 (B is better); not supported: 0 <= hi < the claimed gain (the gain is smaller
  than claimed); supported: lo > 0 and hi >= the claimed gain (A is better, and a gain as large as
  claimed is not ruled out: "supported" does not say the gain is as large as claimed; the measured gain
  stands beside it); inconclusive: lo <= 0 and hi >= the claimed gain.
- only a direction (``direction``): the paired t-test at 5%: supported when it finds A better,
  contradicted when it finds B better, inconclusive otherwise (the same as lo > 0 / hi < 0 whenever the
  interval is bounded, and still decided when B's mean is near 0).
- a level (``level``, "reaches 94.2%"): supported when the 95% interval of A's mean reaches the level in
  the metric's better direction, not supported otherwise.

Failures count against their side: a seed where A failed or diverged did not reach a level, and a
claim is never supported while A failed or diverged on some seed (nor contradicted while B did); fewer
than 2 usable seeds is inconclusive. False alarms, exact under normal seed-to-seed variation and checked
by simulation in tests/test_study.py: a true claim (gain exactly as stated, or the level exactly
reached) is judged not supported or contradicted with probability <= 2.5%; with no true difference,
supported (or contradicted) with probability <= 2.5% each.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from gradbench.results.catalogue import Metric
from gradbench.results.record import Record
from gradbench.results.selection import Selection
from gradbench.stats import Gain, mean_ci, relative_gain, t_half_width

SUPPORTED, NOT_SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "not supported", "contradicted", "inconclusive"
MISSING = "missing"  # a final seed whose run has no record yet
MAX_SEEDS = 1000  # beyond this, "what would settle it" says "more than 1000 seeds"


RULE_TEXT = f"""A claim's verdict comes from the 95% confidence interval [lo, hi] of the relative gain of A over B
(Fieller's interval over the paired seeds: every gain the paired t-test does not reject):

- **{CONTRADICTED}**: hi < 0 (B is better);
- **{NOT_SUPPORTED}**: 0 <= hi < the claimed gain (the gain is smaller than claimed);
- **{SUPPORTED}**: lo > 0 and hi >= the claimed gain (A is better, and a gain as large as claimed is not
  ruled out; the measured gain is printed beside the claim, and may be smaller);
- **{INCONCLUSIVE}**: lo <= 0 and hi >= the claimed gain (the interval holds both no gain and the claim).

A claim that states only a direction is judged by the paired t-test at 5%: {SUPPORTED} when it finds A
better, {CONTRADICTED} when it finds B better, {INCONCLUSIVE} otherwise. A level claim ("reaches 94.2%")
is {SUPPORTED} when the 95% interval of A's mean reaches the level, {NOT_SUPPORTED} otherwise.
Failures count against their side: seeds where a side failed or diverged are not paired, a level is not
reached by a seed that failed, a claim is never {SUPPORTED} while A failed or diverged on some seed nor
{CONTRADICTED} while B did (it is then {INCONCLUSIVE}, and the report says why); fewer than 2 paired seeds
is {INCONCLUSIVE}. False alarms (exact when seed-to-seed variation is normal; checked by simulation in
tests/test_study.py): a true claim is judged {NOT_SUPPORTED} or {CONTRADICTED} with probability at most
2.5%; with no true difference between A and B, {SUPPORTED} with probability at most 2.5%, and
{CONTRADICTED} likewise."""



@dataclass(frozen=True)
class Statement:
    """What the paper states: a relative gain in % (``gain``), a level A reaches (``level``), or neither
    (only that A is better)."""

    gain: float | None = None
    level: float | None = None

    @property
    def kind(self) -> str:
        """``level``, ``gain`` or ``direction``: which rule judges it."""
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
    outcome: str | None = None  # SUPPORTED, NOT_SUPPORTED, CONTRADICTED or INCONCLUSIVE
    notes: list[str] = field(default_factory=list)  # why a rule was overruled, or could not decide
    no_choice: list[str] = field(default_factory=list)  # tuned sides whose tuning found no eligible setting
    gain: Gain | None = None  # the paired relative gain of A over B (comparisons)
    paired_seeds: list[int] = field(default_factory=list)
    seeds_to_settle: int | None = None  # an inconclusive comparison: seeds that would decide it

    @property
    def a(self) -> Side:
        return self.sides[0]

    @property
    def b(self) -> Side | None:
        return self.sides[1] if len(self.sides) > 1 else None


def verdict(lo: float, hi: float, claimed: float) -> str:
    """The gain rule on a gain interval [lo, hi] and the claimed gain (fractions; a claim of only a
    direction passes 0)."""
    if hi < 0:
        return CONTRADICTED
    if claimed > 0 and hi < claimed:
        return NOT_SUPPORTED
    return SUPPORTED if lo > 0 else INCONCLUSIVE


def direction_verdict(p: float, diff: float, higher_is_better: bool, alpha: float = 0.05) -> str:
    """A claim of only a direction: the paired t-test of A against B at ``alpha`` (two-sided), with the
    sign of the mean difference saying which side it found better."""
    if not p < alpha:
        return INCONCLUSIVE
    return SUPPORTED if (diff > 0) == higher_is_better else CONTRADICTED


def level_verdict(mean: float, half: float | None, level: float, higher_is_better: bool) -> str:
    """Supported when A's 95% interval reaches the level in the better direction; inconclusive with one seed."""
    if half is None or not math.isfinite(mean):
        return INCONCLUSIVE
    reach = mean + half >= level if higher_is_better else mean - half <= level
    return SUPPORTED if reach else NOT_SUPPORTED


def seeds_to_settle(sd: float, width: float) -> int | None:
    """The fewest seeds whose 95% interval of a gain with seed-to-seed spread ``sd`` has half-width below
    ``width`` (None: more than MAX_SEEDS)."""
    if not width > 0 or not math.isfinite(sd):
        return None
    if sd == 0:
        return 2
    for n in range(2, MAX_SEEDS + 1):
        if t_half_width(sd, n) < width:
            return n
    return None


def _judge_level(v: Verdict) -> None:
    a = v.a
    if a.failed:
        v.outcome = NOT_SUPPORTED
        v.notes.append("A failed or diverged on some seed, which did not reach the level")
        return
    v.outcome = level_verdict(a.mean, a.ci95, v.statement.level, v.higher_is_better)


def _judge_comparison(v: Verdict) -> None:
    a, b = v.a, v.b
    shared = sorted(set(a.values) & set(b.values))
    a_vals, b_vals = [a.values[s] for s in shared], [b.values[s] for s in shared]
    g = relative_gain(a_vals, b_vals, v.higher_is_better)
    claimed = v.statement.claimed
    if g.n < 2 or not math.isfinite(g.gain):
        outcome = INCONCLUSIVE
        v.notes.append(f"{g.n} seed(s) where both sides finished with a value: too few to judge")
    elif v.statement.kind == "direction":
        outcome = direction_verdict(g.p, sum(a_vals) / len(a_vals) - sum(b_vals) / len(b_vals), v.higher_is_better)
    else:
        outcome = verdict(g.lo, g.hi, claimed)
    if outcome == SUPPORTED and a.failed:
        outcome = INCONCLUSIVE
        v.notes.append("not supported while A failed or diverged on some seed (its failures count against it)")
    if outcome == CONTRADICTED and b.failed:
        outcome = INCONCLUSIVE
        v.notes.append("not contradicted while B failed or diverged on some seed (its failures count against it)")
    v.gain, v.paired_seeds, v.outcome = g, shared, outcome
    if outcome == INCONCLUSIVE and g.n >= 2:  # the interval must shrink below the claimed gain (or the estimate)
        v.seeds_to_settle = seeds_to_settle(g.sd, claimed / 2 if claimed > 0 else abs(g.gain))


RULES: dict[str, Callable[[Verdict], None]] = {
    "level": _judge_level, "gain": _judge_comparison, "direction": _judge_comparison}


def conclude(v: Verdict) -> Verdict:
    """Fill in ``v``'s outcome by the rule of its statement's kind, once every side's final runs have
    records (until then the outcome stays None). Returns ``v``."""
    if all(s.complete for s in v.sides):
        RULES[v.statement.kind](v)
    return v
