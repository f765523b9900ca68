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
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from gradbench.config import parse_spec
from gradbench.errors import UsageError
from gradbench.leaderboard import collect
from gradbench.multisample import estimator_class
from gradbench.registry import get_task_class
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
        cls, values = estimator_class(str(est["name"]), dict(config))
        return str(cls.label_for(cls.make_config(values))) or stored
    except (UsageError, AttributeError, TypeError, ValueError):
        return stored


Runs = dict[str, dict[Any, dict[str, Any]]]  # label -> seed -> newest record of that seed (any status)

EXCLUDED_NOTE = ("Seeds where A or B failed or diverged are excluded from the pairing: the means, differences and "
                 "p-values use only the seeds both finished, so they say nothing of the failures, which are a "
                 "result of their own.")


def _runs_by_budget(records: list[dict[str, Any]], name: str, t_label: str, preset: str,
                    labels: tuple[str, str]) -> dict[str, Runs]:
    """budget json -> label -> seed -> the newest record of that seed, whatever its status."""
    found: dict[str, Runs] = {}
    for r in records:
        if (r["task"]["name"] == name and r["task"].get("label") == t_label and r.get("preset") == preset
                and r["estimator"].get("label") in labels):
            key = json.dumps(r.get("budget"), sort_keys=True)
            seeds = found.setdefault(key, {lbl: {} for lbl in labels})[r["estimator"]["label"]]
            old = seeds.get(r["seed"])
            if old is None or _end_utc(r) >= _end_utc(old):
                seeds[r["seed"]] = r
    return found


def _end_utc(record: Mapping[str, Any]) -> str:
    return str((record.get("provenance") or {}).get("end_utc") or "")


def _status(runs: Mapping[Any, Mapping[str, Any]], seed: Any) -> str:
    return str(runs[seed].get("status")) if seed in runs else "not run"


def excluded_seeds(a: Mapping[Any, Mapping[str, Any]], b: Mapping[Any, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The seeds where A or B failed or diverged, each with both sides' status ("not run" for a side
    without that seed): they are left out of the pairing, and listed so that they never vanish."""
    out = []
    for seed in sorted(set(a) | set(b), key=str):
        sa, sb = _status(a, seed), _status(b, seed)
        if sa not in ("ok", "not run") or sb not in ("ok", "not run"):
            out.append({"seed": seed, "a": sa, "b": sb,
                        "error_a": (a.get(seed) or {}).get("error"), "error_b": (b.get(seed) or {}).get("error")})
    return out


def _pick_budget(by_budget: dict[str, Runs], la: str, lb: str, t_label: str,
                 budget: dict[str, float] | None) -> str | None:
    shared = [k for k, v in by_budget.items() if v[la] and v[lb]]
    if budget is not None:
        wanted = json.dumps(budget, sort_keys=True)
        shared = [k for k in shared if k == wanted]
    if len(shared) > 1:
        raise UsageError(f"{la!r} and {lb!r} ran on {t_label} with several budgets ({', '.join(shared)}); "
                         f"pick one with --steps N or --seconds S")
    return shared[0] if shared else None


def _metric_rows(ra: list[dict[str, Any]], rb: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for metric, info in ra[0]["metrics"].items():
        va = np.array([r["metrics"][metric]["value"] for r in ra], float)
        vb = np.array([r["metrics"][metric]["value"] for r in rb], float)
        test = paired_t(va, vb)
        sign = 1 if info["higher_is_better"] else -1
        gain = sign * test.diff / abs(vb.mean()) * 100 if vb.mean() != 0 else None
        rows.append({"metric": metric, "higher_is_better": info["higher_is_better"], "a": float(va.mean()),
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
    records, _ = collect(runs_dir, relabel=registry_label)
    by_budget = _runs_by_budget(records, name, t_label, preset, (la, lb))
    key = _pick_budget(by_budget, la, lb, t_label, budget)
    by = by_budget[key] if key else {la: {}, lb: {}}
    excluded = excluded_seeds(by[la], by[lb])
    shared = sorted(s for s in set(by[la]) & set(by[lb]) if _status(by[la], s) == _status(by[lb], s) == "ok")
    if len(shared) < 2:
        failed = "; failed or diverged: " + _excluded_text(excluded) if excluded else ""
        raise UsageError(f"compare needs >= 2 seeds that both {la!r} and {lb!r} finished on {t_label} "
                         f"(preset {preset}) in {runs_dir}; found seeds {sorted(by[la])} and {sorted(by[lb])}"
                         f"{failed}")
    ra, rb = [by[la][s] for s in shared], [by[lb][s] for s in shared]
    return {"task": t_label, "preset": preset, "budget": json.loads(key), "a": la, "b": lb,
            "seeds": shared, "rows": _metric_rows(ra, rb), "main_metric": ra[0]["main_metric"],
            "runs": {side: dict(Counter(str(r.get("status")) for r in by[lbl].values()))
                     for side, lbl in (("a", la), ("b", lb))},
            "excluded": excluded, "excluded_note": EXCLUDED_NOTE if excluded else None}


def _excluded_text(excluded: list[dict[str, Any]]) -> str:
    return ", ".join(f"seed {e['seed']} (A {e['a']}, B {e['b']})" for e in excluded)


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
            f"budget {budget}, paired over seeds {result['seeds']}"
            + (f" ({len(result['excluded'])} seed(s) excluded: see below)" if result.get("excluded") else ""))
    table = tabulate(body, headers=["metric", "A mean", "B mean", "A - B (95% CI)", "paired t p", "gain of A"],
                     tablefmt="github", disable_numparse=True)
    note = "gain of A: (A - B) / |B| in the metric's better direction (positive = A better)."
    excluded = result.get("excluded") or []
    if excluded:
        note += (f"\n\nExcluded from the pairing, A or B failed or diverged: {_excluded_text(excluded)}. "
                 f"{result.get('excluded_note') or EXCLUDED_NOTE}")
    return f"{head}\n\n{table}\n\n{note}"
