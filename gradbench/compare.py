"""``gradbench compare``: a paired comparison of two estimators over the seeds they share.

For every metric: the mean of A - B over shared seeds with its 95% t confidence interval, the paired
t-test p-value (``gradbench.stats.paired_t``: scipy.stats.ttest_rel, with identical runs at p = 1 and a
constant non-zero difference at p = 0), and the relative gain of A over B in % of B's mean, signed so
that a positive gain means A is better (the form in which the DAB paper states its claims).

Records are matched by the label the registry gives their config today (``registry_label``), not the
label stored when they ran, so a change of label rule does not orphan old runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from gradbench.config import parse_spec
from gradbench.errors import UsageError
from gradbench.leaderboard import collect
from gradbench.registry import get_estimator_class, get_task_class
from gradbench.stats import paired_t


def task_label(spec: str, preset: str) -> tuple[str, str]:
    """(task name, the label its records carry) for a ``NAME:key=value`` spec."""
    name, values = parse_spec(spec)
    cls = get_task_class(name)
    return name, cls.label_for(cls.make_config(values, preset), preset)


def estimator_label(spec: str) -> str:
    name, values = parse_spec(spec)
    cls = get_estimator_class(name)
    return cls.label_for(cls.make_config(values))


def registry_label(record: Mapping[str, Any]) -> str:
    """The label the registry gives a record's estimator config today, so records stored under an older
    label rule (``ste(variant=identity)``) land in the row of the current one (``ste``).

    Falls back to the stored label when the estimator is not registered here, the record has no config,
    or the config no longer builds (a key that was renamed or removed).
    """
    est = record.get("estimator") or {}
    stored = str(est.get("label") or est.get("name") or "")
    config = est.get("config")
    if not est.get("name") or not isinstance(config, Mapping):
        return stored
    try:
        cls = get_estimator_class(str(est["name"]))
        return str(cls.label_for(cls.make_config(dict(config)))) or stored
    except (UsageError, AttributeError, TypeError, ValueError):
        return stored


def compare(runs_dir: str, task: str, a: str, b: str, preset: str = "quick",
            budget: dict[str, float] | None = None) -> dict[str, Any]:
    """The paired comparison as a dict; UsageError when there are fewer than 2 shared seeds.

    Only runs of one budget are paired: ``budget`` (e.g. ``{"steps": 4000}``) picks it, and may be
    omitted when A and B share exactly one.
    """
    name, t_label = task_label(task, preset)
    la, lb = estimator_label(a), estimator_label(b)
    records, _ = collect(runs_dir, relabel=registry_label)
    found: dict[str, dict[str, dict[int, dict[str, Any]]]] = {}  # budget -> label -> seed -> record
    for r in records:
        if (r["status"] == "ok" and r["task"]["name"] == name and r["task"].get("label") == t_label
                and r.get("preset") == preset and r["estimator"].get("label") in (la, lb)):
            key = json.dumps(r.get("budget"), sort_keys=True)
            found.setdefault(key, {la: {}, lb: {}})[r["estimator"]["label"]][r["seed"]] = r
    shared_budgets = [k for k, v in found.items() if v[la] and v[lb]]
    if budget is not None:
        wanted = json.dumps(budget, sort_keys=True)
        shared_budgets = [k for k in shared_budgets if k == wanted]
    if len(shared_budgets) > 1:
        raise UsageError(f"{la!r} and {lb!r} ran on {t_label} with several budgets ({', '.join(shared_budgets)}); "
                         f"pick one with --steps N or --seconds S")
    by = found[shared_budgets[0]] if shared_budgets else {la: {}, lb: {}}
    shared = sorted(set(by[la]) & set(by[lb]))
    if len(shared) < 2:
        raise UsageError(f"compare needs >= 2 seeds that both {la!r} and {lb!r} ran on {t_label} (preset {preset}) "
                         f"in {runs_dir}; found seeds {sorted(by[la])} and {sorted(by[lb])}")
    first = by[la][shared[0]]
    rows = []
    for metric, info in first["metrics"].items():
        va = np.array([by[la][s]["metrics"][metric]["value"] for s in shared], float)
        vb = np.array([by[lb][s]["metrics"][metric]["value"] for s in shared], float)
        test = paired_t(va, vb)
        sign = 1 if info["higher_is_better"] else -1
        gain = sign * test.diff / abs(vb.mean()) * 100 if vb.mean() != 0 else None
        rows.append({"metric": metric, "higher_is_better": info["higher_is_better"], "a": float(va.mean()),
                     "b": float(vb.mean()), "diff": test.diff, "ci": math.nan if test.ci is None else test.ci,
                     "p": test.p, "gain_pct": gain})
    return {"task": t_label, "preset": preset, "budget": json.loads(shared_budgets[0]), "a": la, "b": lb,
            "seeds": shared, "rows": rows,
            "main_metric": first["main_metric"]}


def format_comparison(result: dict[str, Any]) -> str:
    from tabulate import tabulate

    body = []
    for r in sorted(result["rows"], key=lambda r: r["metric"] != result["main_metric"]):
        arrow = "↑" if r["higher_is_better"] else "↓"
        gain = "—" if r["gain_pct"] is None else f"{r['gain_pct']:+.1f}%"
        body.append([f"{r['metric']} {arrow}", f"{r['a']:.4g}", f"{r['b']:.4g}", f"{r['diff']:+.4g} ± {r['ci']:.2g}",
                     f"{r['p']:.3g}", gain])
    budget = ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in result["budget"].items())
    head = (f"{result['a']} (A) vs {result['b']} (B) on {result['task']}, preset {result['preset']}, "
            f"budget {budget}, paired over seeds {result['seeds']}")
    table = tabulate(body, headers=["metric", "A mean", "B mean", "A - B (95% CI)", "paired t p", "gain of A"],
                     tablefmt="github", disable_numparse=True)
    note = "gain of A: (A - B) / |B| in the metric's better direction (positive = A better)."
    return f"{head}\n\n{table}\n\n{note}"
