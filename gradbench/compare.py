"""``gradbench compare``: a paired comparison of two estimators over the seeds they share.

For every metric: the mean of A - B over shared seeds with its 95% t confidence interval, the paired
t-test p-value (``gradbench.stats.paired_t``: scipy.stats.ttest_rel, with identical runs at p = 1 and a
constant non-zero difference at p = 0), and the relative gain of A over B in % of B's mean, signed so
that a positive gain means A is better (the form in which the DAB paper states its claims).

Seeds where either side failed or diverged have no final metrics to pair: they are excluded from the
pairing, and listed (seed, both statuses) in the result's ``excluded`` and in the text, which says how
they were treated, so a failure never vanishes from a comparison.

Records are matched by the label the registry gives their config today (``registry_label``), not the
label stored when they ran, so a change of label rule does not orphan old runs. When several records
share a seed, the newest (``provenance.end_utc``) counts, as on the leaderboard.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from gradbench.budget import budget_text
from gradbench.config import parse_spec
from gradbench.errors import UsageError
from gradbench.multisample import estimator_class
from gradbench.registry import get_task_class
from gradbench.results import Record, Row, RunSet, fmt
from gradbench.results.record import budget_key
from gradbench.stats import paired_t


def task_label(spec: str, preset: str) -> tuple[str, str]:
    """(task name, the label its records carry) for a ``NAME:key=value`` spec."""
    name, values = parse_spec(spec)
    cls = get_task_class(name)
    return name, cls.label_for(cls.make_config(values, preset), preset)


def estimator_label(spec: str) -> str:
    name, values = parse_spec(spec)
    cls, values = estimator_class(name, values)
    return cls.label_for(cls.make_config(values))


def registry_label(record: Record | Mapping[str, Any]) -> str:
    """The label the registry gives a record's estimator config today, so records stored under an older
    label rule (``ste(variant=identity)``) land in the row of the current one (``ste``).

    Falls back to the stored label when the estimator is not registered here, the record has no config,
    or the config no longer builds (a key that was renamed or removed).
    """
    r = Record.of(record)
    stored, config = r.stored_label, r.estimator_config
    if not r.estimator or config is None:
        return stored
    try:
        cls, values = estimator_class(r.estimator, dict(config))
        return str(cls.label_for(cls.make_config(values))) or stored
    except (UsageError, AttributeError, TypeError, ValueError):
        return stored


EXCLUDED_NOTE = ("Seeds where A or B failed or diverged are excluded from the pairing: the means, differences and "
                 "p-values use only the seeds both finished, so they say nothing of the failures, which are a "
                 "result of their own.")


def _rows_by_budget(runs: RunSet, name: str, t_label: str, preset: str, labels: tuple[str, str]
                    ) -> dict[str, tuple[Row, Row]]:
    """budget json -> (A's row, B's row) of the task setting's tables that have either."""
    found: dict[str, tuple[Row, Row]] = {}
    for key, table in runs.tables().items():
        if (key.task, key.label, key.preset) == (name, t_label, preset) and any(lbl in table for lbl in labels):
            found[key.budget] = (table.get(labels[0]) or Row(labels[0]), table.get(labels[1]) or Row(labels[1]))
    return found


def excluded_seeds(a: Row, b: Row) -> list[dict[str, Any]]:
    """The seeds where A or B failed or diverged, each with both sides' status ("not run" for a side
    without that seed): they are left out of the pairing, and listed so that they never vanish."""
    out = []
    for seed in sorted(set(a.records) | set(b.records), key=str):
        sa, sb = a.status(seed), b.status(seed)
        if sa not in ("ok", "not run") or sb not in ("ok", "not run"):
            out.append({"seed": seed, "a": sa, "b": sb, "error_a": _error(a, seed), "error_b": _error(b, seed)})
    return out


def _error(row: Row, seed: Any) -> str | None:
    return row.records[seed].error if seed in row.records else None


def _pick_budget(by_budget: dict[str, tuple[Row, Row]], la: str, lb: str, t_label: str,
                 budget: dict[str, float] | None) -> str | None:
    shared = [k for k, (ra, rb) in by_budget.items() if ra.records and rb.records]
    if budget is not None:
        wanted = budget_key(budget)
        shared = [k for k in shared if k == wanted]
    if len(shared) > 1:
        raise UsageError(f"{la!r} and {lb!r} ran on {t_label} with several budgets ({', '.join(shared)}); "
                         f"pick one with --steps N or --seconds S")
    return shared[0] if shared else None


def _metric_rows(ra: list[Record], rb: list[Record]) -> list[dict[str, Any]]:
    rows = []
    for metric, higher in ra[0].metric_directions(validation=True).items():
        va = np.array([r.metric(metric) for r in ra], float)
        vb = np.array([r.metric(metric) for r in rb], float)
        test = paired_t(va, vb)
        sign = 1 if higher else -1
        gain = sign * test.diff / abs(vb.mean()) * 100 if vb.mean() != 0 else None
        rows.append({"metric": metric, "higher_is_better": higher, "a": float(va.mean()),
                     "b": float(vb.mean()), "diff": test.diff, "ci": math.nan if test.ci is None else test.ci,
                     "p": test.p, "gain_pct": gain})
    return rows


def compare(runs_dir: str, task: str, a: str, b: str, preset: str = "quick",
            budget: dict[str, float] | None = None) -> dict[str, Any]:
    """The paired comparison as a dict; UsageError when there are fewer than 2 seeds both finished.

    Only runs of one budget are paired: ``budget`` (e.g. ``{"steps": 4000}``) picks it, and may be
    omitted when A and B share exactly one. Seeds where either side failed or diverged are excluded from
    the pairing and listed under ``excluded`` (seed, both statuses, errors), with ``excluded_note`` saying
    how they were treated; ``runs`` counts each side's runs by status.
    """
    name, t_label = task_label(task, preset)
    la, lb = estimator_label(a), estimator_label(b)
    if la == lb:
        same = f"{a!r} and {b!r} are both {la!r}" if a != b else f"A and B are both {la!r}"
        raise UsageError(f"{same}: a comparison of an estimator with itself says nothing; name two different "
                         f"estimators or settings")
    by_budget = _rows_by_budget(RunSet.collect(runs_dir, relabel=registry_label), name, t_label, preset, (la, lb))
    key = _pick_budget(by_budget, la, lb, t_label, budget)
    row_a, row_b = by_budget[key] if key else (Row(la), Row(lb))
    excluded = excluded_seeds(row_a, row_b)
    shared = sorted(s for s in set(row_a.records) & set(row_b.records) if row_a.status(s) == row_b.status(s) == "ok")
    if len(shared) < 2:
        failed = "; failed or diverged: " + _excluded_text(excluded) if excluded else ""
        raise UsageError(f"compare needs >= 2 seeds that both {la!r} and {lb!r} finished on {t_label} "
                         f"(preset {preset}) in {runs_dir}; found seeds {sorted(row_a.records)} and "
                         f"{sorted(row_b.records)}{failed}")
    ra, rb = [row_a.records[s] for s in shared], [row_b.records[s] for s in shared]
    return {"task": t_label, "preset": preset, "budget": json.loads(key), "a": la, "b": lb,
            "seeds": shared, "rows": _metric_rows(ra, rb), "main_metric": ra[0].main_metric,
            "runs": {"a": dict(row_a.statuses()), "b": dict(row_b.statuses())},
            "excluded": excluded, "excluded_note": EXCLUDED_NOTE if excluded else None}


def _excluded_text(excluded: list[dict[str, Any]]) -> str:
    return ", ".join(f"seed {e['seed']} (A {e['a']}, B {e['b']})" for e in excluded)


def format_comparison(result: dict[str, Any]) -> str:
    body = []
    for r in sorted(result["rows"], key=lambda r: r["metric"] != result["main_metric"]):
        gain = fmt.MISSING if r["gain_pct"] is None else f"{r['gain_pct']:+.1f}%"
        body.append([f"{r['metric']}{fmt.arrow(r['higher_is_better'])}", fmt.num(r["a"]), fmt.num(r["b"]),
                     f"{r['diff']:+.4g} ± {r['ci']:.2g}", fmt.pvalue(r["p"]), gain])
    head = (f"{result['a']} (A) vs {result['b']} (B) on {result['task']}, preset {result['preset']}, "
            f"budget {budget_text(result['budget'])}, paired over seeds {result['seeds']}"
            + (f" ({len(result['excluded'])} seed(s) excluded: see below)" if result.get("excluded") else ""))
    table = fmt.table(["metric", "A mean", "B mean", "A - B (95% CI)", "paired t p", "gain of A"], body)
    note = "gain of A: (A - B) / |B| in the metric's better direction (positive = A better)."
    excluded = result.get("excluded") or []
    if excluded:
        note += (f"\n\nExcluded from the pairing, A or B failed or diverged: {_excluded_text(excluded)}. "
                 f"{result.get('excluded_note') or EXCLUDED_NOTE}")
    return f"{head}\n\n{table}\n\n{note}"
