"""A table's statistics and verdicts, as plain data: per row the mean ± 95% CI of every column over its ok
seeds, and per column which ranked row is best and which are tied with it. The leaderboard renders this;
the statistics themselves are ``gradbench.stats``'s.

Judgments, each with a stated false-alarm rate (checked by simulation in tests/test_leaderboard.py):

- A row is *ranked* in a column only with >= MIN_RANKED ok seeds, no failed or diverged seed, and a
  finite value from every ok seed: a failure is a result, and the mean of the surviving seeds would
  flatter the row.
- The best ranked mean per column, and every ranked row tied with it: a two-sided t-test gives
  p >= ALPHA, paired over the seeds both rows share when they share >= MIN_RANKED, else Welch's. Two rows
  drawn from one distribution are called "not tied" with probability <= ALPHA.
- An outlier seed (``outlier_seeds``): a seed at either end of its row that Dixon's Q test calls an
  outlier at 5% (OUTLIER_Q95) and that lies more than OUTLIER_SDS robust SDs from its row's median, the SD
  pooled over the table's rows (1.4826 x the median absolute deviation from the rows' medians). A row with
  one is not ranked in that column. A row of normal seeds is flagged with probability <= 0.05 whatever its
  own spread (Dixon's level), and 0.2-2.6% when its spread is the table's.
- The bias flag: the seeds' end-checkpoint bias tests combined by Bonferroni into the row's
  p = min(1, n * min p), then Holm's step-down adjustment over the table's rows; flagged when the adjusted
  p < BIAS_ALPHA. The chance that any unbiased row of a table is flagged is <= BIAS_ALPHA.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gradbench.results.catalogue import GRADIENT, TABLE_GRADIENT, Metric, columns
from gradbench.results.record import EAGER, Record, TableKey, finite, path_order
from gradbench.results.runset import Row, RunSet, Table
from gradbench.stats import bonferroni_combine, holm, mean_ci, paired_t, welch_t

ALPHA = 0.05  # tie-test level: p < ALPHA is "worse than best", p >= ALPHA "tied"
MIN_RANKED = 2  # ok seeds a row needs to be ranked (and to pair on: fewer shared seeds -> Welch's test)
BIAS_ALPHA = 0.05  # a row's combined bias p, Holm-adjusted over the table's rows, below this is "flagged"
# Dixon's Q (gap to the nearest neighbour / range) at the two-sided 5% level, by seeds in the row (Rorabacher
# 1991; simulated 0.0496-0.0514 in tests/test_leaderboard.py); rows of more than 10 seeds use the 10-seed value,
# which is conservative there
OUTLIER_Q95 = {3: 0.970, 4: 0.829, 5: 0.710, 6: 0.625, 7: 0.568, 8: 0.526, 9: 0.493, 10: 0.466}
OUTLIER_SDS = 5.0  # an outlier seed is also this many pooled robust SDs from its row's median
MAD_SD = 1.4826  # median absolute deviation -> standard deviation, for normal data
ROUNDING_MISMATCH = 0.1  # a float32 bias flag with every seed's mismatch below this fraction may be rounding

Stat = tuple[float, float | None, int]  # (mean, 95% CI half-width or None, n), as stats.mean_ci


def tie_test(best: Mapping[Any, float], other: Mapping[Any, float]) -> tuple[str, float]:
    """("paired" or "welch", two-sided p) for ``best`` against ``other`` (seed -> value).

    Paired over the shared seeds when there are at least MIN_RANKED of them (seed pairs remove the noise
    both runs of a seed share, so this is the sharper test); otherwise Welch's test over all values of
    each side. Both decide their degenerate cases (``gradbench.stats``): identical values p = 1, a
    constant offset p = 0, too few values or a non-finite one p = nan.
    """
    shared = sorted(set(best) & set(other), key=str)
    if len(shared) >= MIN_RANKED:
        return "paired", paired_t([best[s] for s in shared], [other[s] for s in shared]).p
    return "welch", welch_t(list(best.values()), list(other.values())).p


def tied(p: float) -> bool:
    """The tie rule on a tie test's p: p >= ALPHA; without a test (p = nan) it is not a tie."""
    return bool(math.isfinite(p) and p >= ALPHA)


def is_tied(best: Mapping[Any, float], other: Mapping[Any, float]) -> bool:
    """Whether ``other`` (seed -> value) is statistically indistinguishable from ``best``.

    Two sets of runs from one distribution are called "not tied" with probability <= ALPHA (exactly
    ALPHA for the paired test on normal data; Welch's test is slightly conservative at 2-4 seeds).
    """
    return tied(tie_test(best, other)[1])


@dataclass(frozen=True)
class Ranking:
    """One column's verdict: the best ranked row, the ranked rows statistically tied with it (best
    excluded), and each other ranked row's tie-test p against the best."""

    best: str | None = None
    tied: frozenset[str] = frozenset()
    p: Mapping[str, float] = field(default_factory=dict)

    @property
    def bold(self) -> frozenset[str]:
        """Rows shown in bold: the best and those tied with it."""
        return self.tied | {self.best} if self.best is not None else frozenset()


@dataclass(frozen=True)
class Outlier:
    """A seed that stands apart from the rest of its row (``outlier_seeds``)."""

    seed: Any
    value: float
    median: float  # the row's median, this seed included
    q: float  # Dixon's Q: the gap to its nearest neighbour over the row's range
    sds: float  # |value - median| in robust SDs pooled over the table's rows


@dataclass
class RowStats:
    """Everything one table row shows, before formatting."""

    label: str
    unsupported: bool = False
    n_ok: int = 0  # status-ok runs (the ``n`` column shows n_ok/n_total)
    n_total: int = 0  # seeds run, whatever their status
    metrics: dict[str, Stat] = field(default_factory=dict)
    gradient: dict[str, Stat] = field(default_factory=dict)  # TABLE_GRADIENT at the last checkpoint
    bias: tuple[float, int] | None = None  # (Bonferroni-combined end-checkpoint bias p, seeds with a bias_p)
    bias_holm: float | None = None  # the row's bias p, Holm-adjusted over the table's rows: the flag's p
    bias_precisions: frozenset[str] = frozenset()  # what the seeds' bias tests ran in (float32, float64)
    bias_mismatch: tuple[float, float] | None = None  # (min, max) over the seeds with a bias_p of ‖ḡ - r‖ / ‖ḡ‖
    outliers: dict[str, list[Outlier]] = field(default_factory=dict)  # metric -> its outlier seeds
    evals_per_step: float | None = None
    steps_per_s: dict[str, float] = field(default_factory=dict)  # execution path -> mean over its runs
    failed: dict[str, int] = field(default_factory=dict)  # non-ok status -> count

    @property
    def n_failed(self) -> int:
        """Seeds whose run failed or diverged."""
        return sum(self.failed.values())

    @property
    def flagged(self) -> bool:
        """Whether the bias test flags the row: its Holm-adjusted p < BIAS_ALPHA."""
        return self.bias_holm is not None and self.bias_holm < BIAS_ALPHA

    @property
    def flag_may_be_rounding(self) -> bool:
        """A flag that float32 rounding alone could raise: every seed's bias test ran in float32 (records made
        before the double-precision bias test) and the mean estimate is within ROUNDING_MISMATCH of the
        reference on every seed. Near an optimum, where the gradient is a small difference of large costs,
        float32 rounding reaches a few % of it: IndeCateR, exact for the toy's additive cost, is 3% off in
        float32 there and 5e-11 in float64 (docs/gradient-statistics.md)."""
        return (self.flagged and self.bias_precisions == {"float32"} and self.bias_mismatch is not None
                and self.bias_mismatch[1] < ROUNDING_MISMATCH)


@dataclass
class TableStats:
    """One table: its metric columns, rows in display order with their statistics, and the verdicts."""

    key: TableKey
    main: str | None
    columns: list[Metric]  # the task's metrics, main first
    order: list[str]
    rows: dict[str, RowStats]
    rankings: dict[str, Ranking]  # metric -> verdict
    nodes: list[str]  # node kinds of the records
    datasets: list[str] = field(default_factory=list)  # the records' ``dataset`` settings (image tasks)
    has_gradient: bool = False
    has_failed: bool = False
    has_bias: bool = False

    @property
    def main_metric(self) -> Metric | None:
        return next((m for m in self.columns if m.name == self.main), None)

    @property
    def paths(self) -> list[str]:
        """Execution paths behind the table's steps/s figures, eager first."""
        return sorted({p for r in self.rows.values() for p in r.steps_per_s}, key=path_order)

    @property
    def eager_only(self) -> bool:
        """Whether every steps/s figure came from eager runs (then cells show plain numbers)."""
        return set(self.paths) <= {EAGER}


def _steps_per_s(ok: list[Record]) -> dict[str, float]:
    """Mean steps/s per execution path: a figure never averages runs of different paths."""
    by_path: dict[str, list[float]] = {}
    for r in ok:
        if r.steps_per_s is not None:
            by_path.setdefault(r.accel_path, []).append(r.steps_per_s)
    out = {}
    for path in sorted(by_path, key=path_order):
        mean, _, n = mean_ci(by_path[path])
        if n:
            out[path] = mean
    return out


def bias_p(records: Iterable[Record | Mapping[str, Any]]) -> tuple[float, int] | None:
    """(combined p, number of p-values) of the end-checkpoint ``bias_p`` of ``records`` (one per seed),
    combined by Bonferroni: min(1, n * min p); None when no record has one. With each seed's p
    calibrated, an unbiased estimator's row gets p < BIAS_ALPHA with probability <= BIAS_ALPHA."""
    metric = GRADIENT["bias_p"]
    ps = [p for r in records if (p := finite(metric.value(Record.of(r)))) is not None]
    return (bonferroni_combine(ps), len(ps)) if ps else None


def outlier_seeds(rows: Mapping[str, Mapping[Any, float]]) -> dict[str, list[Outlier]]:
    """row label -> its outlier seeds, from one column's values (row label -> seed -> value).

    A seed is an outlier when both hold: (1) it is at an end of its row (of >= 3 values) and Dixon's Q, its
    gap to the nearest other value over the row's range, exceeds OUTLIER_Q95 (the two-sided 5% point for
    normal data); (2) it lies more than OUTLIER_SDS robust SDs from its row's median, the SD being
    MAD_SD x the median of |value - its row's median| over every value of the table's rows of >= 3 values.
    (1) needs no assumption about the other rows, so a row of normal seeds is flagged with probability
    <= 0.05 whatever its own spread; (2) keeps a row whose spread is the table's from being flagged for a
    seed that is far only relative to the row's other seeds (simulated per row: 0.2-2.6% with 3-5 seeds
    and 2-17 rows, tests/test_leaderboard.py). Power at 3 seeds is low (both other seeds must agree): the
    rule catches a collapse like topk's straight-through (seeds 0.9991, 0.9985 and 0.6243), not every
    bad seed. No scale (every value equal to its row's median), no test.
    """
    big = {label: dict(v) for label, v in rows.items() if len(v) >= 3}
    deviations = [abs(x - med) for v in big.values() for med in [statistics.median(v.values())] for x in v.values()]
    scale = MAD_SD * statistics.median(deviations) if deviations else 0.0
    if not scale > 0:
        return {}
    out: dict[str, list[Outlier]] = {}
    for label, v in big.items():
        items = sorted(v.items(), key=lambda kv: kv[1])
        xs = [x for _, x in items]
        spread, med = xs[-1] - xs[0], statistics.median(xs)
        if not spread > 0:
            continue
        crit = OUTLIER_Q95[min(len(xs), max(OUTLIER_Q95))]
        for (seed, x), gap in ((items[0], xs[1] - xs[0]), (items[-1], xs[-1] - xs[-2])):
            q, sds = gap / spread, abs(x - med) / scale
            if q > crit and sds > OUTLIER_SDS:
                out.setdefault(label, []).append(Outlier(seed, x, med, q, sds))
    return out


def unranked_reason(stats: RowStats, metric: str) -> str | None:
    """Why a row takes no part in a column's best/tie verdict, or None when it does (it is ranked).

    Ranked means: >= MIN_RANKED ok seeds, no failed or diverged seed, a finite value of the metric
    from every ok seed (so no run drops silently out of a mean that competes for bold), and no outlier
    seed in that column (``outlier_seeds``: a tie that rests on one collapsed seed's spread is no tie).
    """
    n = stats.metrics[metric][2] if metric in stats.metrics else 0
    if stats.unsupported:
        return "unsupported"
    if n == 0:
        return "no value"
    if stats.n_failed:
        return f"{stats.n_failed}/{stats.n_total} failed or diverged"
    if n < MIN_RANKED:
        return f"n={n}"
    if n < stats.n_ok:
        return f"{stats.n_ok - n} non-finite"
    if stats.outliers.get(metric):
        return "outlier seed " + ", ".join(str(o.seed) for o in stats.outliers[metric])
    return None


def _numbers(values: Iterable[float | None]) -> list[float]:
    return [v for v in values if v is not None]


def _row_stats(row: Row, metrics: list[Metric], has_gradient: bool) -> RowStats:
    if row.unsupported:
        return RowStats(row.label, unsupported=True, metrics={m.name: mean_ci([]) for m in metrics})
    ok = row.ok()
    stats = RowStats(row.label, n_ok=len(ok), n_total=len(row.records),
                     metrics={m.name: mean_ci(row.values(m.name).values()) for m in metrics})
    if has_gradient:
        stats.gradient = {k: mean_ci(_numbers(GRADIENT[k].value(r) for r in ok)) for k in TABLE_GRADIENT}
        stats.bias = bias_p(ok)
        tested = [r for r in ok if finite(GRADIENT["bias_p"].value(r)) is not None]
        stats.bias_precisions = frozenset(r.end.bias_precision for r in tested if r.end is not None)
        mismatch = _numbers(GRADIENT["mismatch"].value(r) for r in tested)
        stats.bias_mismatch = (min(mismatch), max(mismatch)) if mismatch and len(mismatch) == len(tested) else None
    evals, _, n_evals = mean_ci(_numbers(r.evals_per_step for r in ok))
    stats.evals_per_step = evals if n_evals else None
    stats.steps_per_s = _steps_per_s(ok)
    stats.failed = dict(Counter(r.status for r in row.records.values() if not r.ok))
    return stats


def _rank(metric: Metric, order: list[str], rows: Table, stats: Mapping[str, RowStats]) -> Ranking:
    """The best mean among a column's ranked rows (in its better direction) and the ranked rows tied
    with it (``tied``); unranked rows (``unranked_reason``) take no part."""
    ranked = [lbl for lbl in order if unranked_reason(stats[lbl], metric.name) is None]
    if metric.higher_is_better is None or not ranked:
        return Ranking()
    pick = max if metric.higher_is_better else min
    best = pick(ranked, key=lambda lbl: stats[lbl].metrics[metric.name][0])
    ref = rows[best].values(metric.name)
    p = {lbl: tie_test(ref, rows[lbl].values(metric.name))[1] for lbl in ranked if lbl != best}
    return Ranking(best, frozenset(lbl for lbl, v in p.items() if tied(v)), p)


def decide_table(key: TableKey, rows: Table, unsupported: Iterable[str] = ()) -> TableStats:
    """One table's statistics and verdicts; ``unsupported`` estimators without runs are listed as n/a."""
    rows = dict(rows)
    for est in unsupported:
        if est not in rows:
            rows[est] = Row(est, unsupported=True)
    records = [r for row in rows.values() for r in row.records.values()]
    main, metrics = columns(records)
    has_gradient = any(r.end is not None for row in rows.values() for r in row.ok())
    stats = {label: _row_stats(row, metrics, has_gradient) for label, row in rows.items()}
    for m in metrics:
        for label, found in outlier_seeds({lbl: row.values(m.name) for lbl, row in rows.items()}).items():
            stats[label].outliers[m.name] = found
    biased = [s for s in stats.values() if s.bias is not None]
    for s, adjusted in zip(biased, holm(s.bias[0] for s in biased), strict=True):  # type: ignore[index]
        s.bias_holm = adjusted if math.isfinite(adjusted) else None
    hib_main = next((m.higher_is_better for m in metrics if m.name == main), None)

    def sort_key(label: str) -> tuple[int, float, str]:  # ranked rows, unranked, no value, unsupported
        s = stats[label]
        if s.unsupported or main is None or s.metrics[main][2] == 0:
            return (3 if s.unsupported else 2, 0.0, label)
        m = s.metrics[main][0]
        return (0 if unranked_reason(s, main) is None else 1, -m if hib_main else m, label)

    order = sorted(rows, key=sort_key)
    return TableStats(
        key=key, main=main, columns=metrics, order=order, rows=stats,
        rankings={m.name: _rank(m, order, rows, stats) for m in metrics},
        nodes=sorted({r.node_kind for r in records}),
        datasets=sorted({str(r.task_config["dataset"]) for r in records if r.task_config.get("dataset")}),
        has_gradient=has_gradient, has_failed=any(not r.ok for r in records),
        has_bias=any(s.bias is not None for s in stats.values()))


def node_kind(rows: Table) -> str:
    """The node kind of a table's first record ("" for a table without records)."""
    return next((r.node_kind for row in rows.values() for r in row.records.values()), "")


def decide(records: RunSet | Iterable[Record | Mapping[str, Any]],
           unsupported: Mapping[str, Iterable[str]] | None = None) -> dict[TableKey, TableStats]:
    """Every table's statistics and verdicts, sorted by table key: the leaderboard without its markdown.

    ``unsupported`` maps a node kind to estimator names that can't run it (listed as n/a).
    """
    runs = records if isinstance(records, RunSet) else RunSet.of(records)
    unsupported = unsupported or {}
    tables = runs.tables()
    return {key: decide_table(key, tables[key], unsupported.get(node_kind(tables[key]), [])) for key in sorted(tables)}
