"""The one catalogue of what reports show: a task's metrics (named by the records: their direction is
stored beside each value) and the gradient statistics of the checkpoints, each with its better
direction, how a column or axis names it, a legend, how it is aggregated over seeds, and the history
column that traces it along training.

Every view picks its columns here: the leaderboard's metric and gradient columns, the main metric a
table is sorted and plotted by, a claim's metric, the learning curves' history keys.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from gradbench.results.record import Record

GRADIENT_PREFIX = "gradient."  # a claim's metric "gradient.<statistic>" reads a gradient checkpoint
TRACE = "grad/log10_variance"  # history column: log10 gradient variance measured at every evaluation
TRACE_WORDS = "log10 gradient variance (along training)"
TEST_PREFIX = "test/"  # history columns of the test metrics: test/<metric>


@dataclass(frozen=True)
class Metric:
    """One quantity a report shows."""

    name: str  # a task metric's name, or a gradient statistic's field in the checkpoints
    higher_is_better: bool | None  # None: the records do not say
    label: str = ""  # how a column or axis names it (default: the name)
    legend: str = ""  # what it is, in a phrase
    aggregation: str = "mean"  # over seeds: "mean" (mean ± 95% CI over ok seeds) or "bonferroni" (combined p)
    gradient: bool = False  # a gradient checkpoint's statistic (else a task metric)

    @property
    def column(self) -> str:
        """The column header: its label with its direction (``acc ↑``)."""
        arrow = "" if self.higher_is_better is None else (" ↑" if self.higher_is_better else " ↓")
        return f"{self.label or self.name}{arrow}"

    @property
    def trace(self) -> tuple[str, str]:
        """(history column, what it is in words) that follows it along training. Of the gradient statistics
        only the log10 variance is traced, and a gradient metric's curves show that trace."""
        if self.gradient:
            return TRACE, TRACE_WORDS
        return f"{TEST_PREFIX}{self.name}", f"test {self.name}"

    def value(self, record: Record, checkpoint: str | None = None) -> float | None:
        """This metric of one record: a task metric's final finite value, or a gradient statistic at the
        named checkpoint (default: the last, the end of training)."""
        if not self.gradient:
            return record.metric(self.name)
        point = record.end if checkpoint is None else record.checkpoint(checkpoint)
        if point is None:
            return None
        if self.name == "log10_work_variance":  # what a fixed budget of cost evaluations buys
            v, evals = point.stat("log10_variance"), record.evals_per_step
            return v + math.log10(evals) if v is not None and evals is not None and evals > 0 else None
        if self.name == "mismatch":  # how far the mean estimate is from the reference, relative to its size
            raw, norm = point.stat("bias_sq_raw"), point.stat("mean_norm")
            return math.sqrt(raw) / norm if raw is not None and raw >= 0 and norm else None
        return point.stat(self.name)


def _gradient(name: str, higher: bool | None, label: str, legend: str, aggregation: str = "mean") -> Metric:
    return Metric(name, higher, label, legend, aggregation, gradient=True)


GRADIENT = {m.name: m for m in (
    _gradient("variance", False, "variance", "per-parameter variance of the gradient estimate, averaged over "
              "parameters"),
    _gradient("log10_variance", False, "log10 var (end)", "log10 of the per-parameter variance"),
    _gradient("log10_work_variance", False, "log10 var×evals (end)", "log10(variance × cost evaluations per "
              "step): the variance per unit of work"),
    _gradient("snr", True, "snr", "debiased power ratio ‖E g‖² / tr Var g"),
    _gradient("mse", False, "mse", "mean squared error against the reference gradient"),
    _gradient("cosine", True, "cos ref (end)", "debiased cosine between the mean estimate and the reference "
              "gradient"),
    _gradient("bias_sq", False, "bias²", "debiased squared bias against the reference gradient"),
    _gradient("bias_p", None, "bias (end)", "the bias test's p-value (exact references only)", "bonferroni"),
    _gradient("mismatch", False, "mismatch", "‖ḡ - r‖ / ‖ḡ‖: the mean estimate's distance from the reference, "
              "relative to its norm (raw: the draws' noise included)"),
)}
TABLE_GRADIENT = ("log10_variance", "log10_work_variance", "cosine")  # the leaderboard's gradient columns
CLAIM_GRADIENT = ("variance", "log10_variance", "snr", "mse", "cosine", "bias_sq")  # what a claim may judge


def columns(records: Iterable[Record]) -> tuple[str | None, list[Metric]]:
    """(main metric, the task metrics to show, main first) of a set of records: the main metric most of
    them name; the test metrics in the records' order (``valid_*`` metrics are tuning's data, never a
    result), each with the first direction a record states."""
    order: dict[str, bool | None] = {}
    mains: Counter[str] = Counter()
    for r in records:
        if r.main_metric:
            mains[r.main_metric] += 1
        for name, hib in r.metric_directions().items():
            if order.get(name) is None:
                order[name] = hib
    main = mains.most_common(1)[0][0] if mains else next(iter(order), None)
    if main is not None and main not in order:
        order = {main: None, **order}
    specs = sorted(order.items(), key=lambda kv: kv[0] != main)
    return main, [Metric(name, hib) for name, hib in specs]


def claim_metric(name: str, higher_is_better: bool | None = None) -> Metric:
    """A claim's metric: ``gradient.<statistic>`` (a KeyError for an unknown statistic), else the task's
    test metric ``name`` with the direction given."""
    if name.startswith(GRADIENT_PREFIX):
        return GRADIENT[name.removeprefix(GRADIENT_PREFIX)]
    return Metric(name, higher_is_better)
