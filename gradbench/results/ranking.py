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
- The bias flag: the seeds' end-checkpoint bias tests combined by Bonferroni, flagged when
  min(1, n * min p) < BIAS_ALPHA; an unbiased estimator is flagged with probability <= BIAS_ALPHA.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gradbench.results.catalogue import GRADIENT, TABLE_GRADIENT, Metric, columns
from gradbench.results.record import EAGER, Record, TableKey, finite, path_order
from gradbench.results.runset import Row, RunSet, Table
from gradbench.stats import bonferroni_combine, mean_ci, paired_t, welch_t

ALPHA = 0.05  # tie-test level: p < ALPHA is "worse than best", p >= ALPHA "tied"
MIN_RANKED = 2  # ok seeds a row needs to be ranked (and to pair on: fewer shared seeds -> Welch's test)
BIAS_ALPHA = 0.05  # a row's combined bias p below this is "flagged"

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
    evals_per_step: float | None = None
    steps_per_s: dict[str, float] = field(default_factory=dict)  # execution path -> mean over its runs
    failed: dict[str, int] = field(default_factory=dict)  # non-ok status -> count

    @property
    def n_failed(self) -> int:
        """Seeds whose run failed or diverged."""
        return sum(self.failed.values())


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


def unranked_reason(stats: RowStats, metric: str) -> str | None:
    """Why a row takes no part in a column's best/tie verdict, or None when it does (it is ranked).

    Ranked means: >= MIN_RANKED ok seeds, no failed or diverged seed, and a finite value of the metric
    from every ok seed (so no run drops silently out of a mean that competes for bold).
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
