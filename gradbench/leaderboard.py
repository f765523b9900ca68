"""The leaderboard: every run record summarised as markdown tables, one per task setting.

Cells are ``mean ± h`` with ``h = t(0.975, n-1) * s / sqrt(n)`` over *seeds* (a 95% CI of the mean
across independent runs, not a standard error over evaluation examples). The best mean per column is
bold, and so is every row that is statistically tied with it: a paired t-test over shared seeds when
there are at least 3 of them, otherwise overlapping CIs. Only the block between the markers in the
output file is rewritten, so prose written around it survives.

No torch and no registry import: the caller passes in which estimator/task pairs are unsupported.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats
from tabulate import tabulate

from gradbench.records import atomic_write_text, iter_records

BEGIN = "<!-- gradbench:leaderboard:begin -->"
END = "<!-- gradbench:leaderboard:end -->"
ALPHA = 0.05  # paired-test level below which a row is "worse than best", not "tied"
MIN_PAIRED = 3  # fewer shared seeds than this: fall back to CI overlap

TableKey = tuple[str, str, str, str]  # (task name, preset, task label, budget json)


# ----------------------------------------------------------------------------------------------
# Reading records


def _unusable(record: dict[str, Any]) -> str | None:
    """Why a schema-valid record still can't be placed in a table (None if it can)."""
    task, est = record.get("task"), record.get("estimator")
    if not isinstance(task, dict) or not task.get("name"):
        return "task.name missing"
    if not isinstance(est, dict) or not (est.get("label") or est.get("name")):
        return "estimator.label missing"
    if not isinstance(record.get("metrics"), dict):
        return "metrics is not an object"
    return None


def collect(runs_dir: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """All readable records under ``runs_dir`` plus one line per file that had to be skipped.

    A truncated or invalid file must not silently shrink a table, so every skip is reported.
    """
    records: list[dict[str, Any]] = []
    problems: list[str] = []
    for path, record, error in iter_records(runs_dir):
        if record is None:
            msg = error or "unreadable"
            problems.append(msg if str(path) in msg else f"{path}: {msg}")
            continue
        why = _unusable(record)
        if why:
            problems.append(f"{path}: {why}")
            continue
        records.append(record)
    return records, problems


# ----------------------------------------------------------------------------------------------
# Statistics


def mean_ci(values: Iterable[float]) -> tuple[float, float | None, int]:
    """(mean, 95% CI half-width over seeds or None when n < 2, n) of the finite values."""
    arr = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = int(arr.size)
    if n == 0:
        return math.nan, None, 0
    mean = float(arr.mean())
    if n < 2:
        return mean, None, n
    h = float(stats.t.ppf(0.975, n - 1) * arr.std(ddof=1) / math.sqrt(n))
    return mean, h, n


def is_tied(best: Mapping[Any, float], other: Mapping[Any, float]) -> bool:
    """Whether ``other`` (seed -> value) is statistically indistinguishable from ``best``.

    Paired over shared seeds when there are enough of them (seed pairs remove the shared
    task noise, so this is the sharper test); otherwise 95% CI overlap, and with a single seed
    on either side only an exactly equal mean counts, since there is no spread to judge by.
    """
    shared = sorted(set(best) & set(other), key=str)
    if len(shared) >= MIN_PAIRED:
        a = np.array([best[s] for s in shared], dtype=float)
        b = np.array([other[s] for s in shared], dtype=float)
        diff = a - b
        if np.all(diff == 0):
            return True
        if np.all(diff == diff[0]):  # constant non-zero difference: t is infinite, not a tie
            return False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            p = float(stats.ttest_rel(a, b).pvalue)
        return bool(math.isfinite(p) and p >= ALPHA)
    m_a, h_a, n_a = mean_ci(best.values())
    m_b, h_b, n_b = mean_ci(other.values())
    if n_a == 0 or n_b == 0:
        return False
    if h_a is None or h_b is None:
        return m_a == m_b
    return abs(m_a - m_b) <= h_a + h_b


# ----------------------------------------------------------------------------------------------
# Formatting


def _decimals(ref: float, sig: int) -> int:
    return max(0, sig - 1 - math.floor(math.log10(ref)))


def format_mean_ci(mean: float, h: float | None) -> str:
    """``0.9312 ± 0.0041``: 4 significant digits of the larger of |mean| and h, both to the same place."""
    ref = max(abs(mean), h or 0.0)
    if ref == 0:
        return "0" if h is None else "0 ± 0"
    if ref < 1e-3 or ref >= 1e6:
        return f"{mean:.3e}" if h is None else f"{mean:.3e} ± {h:.1e}"
    d = _decimals(ref, 4)
    return f"{mean:.{d}f}" if h is None else f"{mean:.{d}f} ± {h:.{d}f}"


def format_sig(v: float | None, sig: int = 3) -> str:
    """``v`` to ``sig`` significant digits without exponent notation for everyday sizes."""
    if v is None or not math.isfinite(v):
        return "—"
    if v == 0:
        return "0"
    if abs(v) >= 10 ** (sig - 1):
        return f"{round(v, sig - 1 - math.floor(math.log10(abs(v)))):.0f}"
    return f"{v:.{sig}g}"


def _short_sha(prov: Mapping[str, Any]) -> str:
    sha = prov.get("git_sha")
    text = str(sha)[:7] if sha else "unknown"
    return text + ("-dirty" if prov.get("git_dirty") else "")


def _budget_text(budget_json: str) -> str:
    try:
        budget = json.loads(budget_json)
    except json.JSONDecodeError:
        return budget_json
    if isinstance(budget, dict):
        return ", ".join(f"{k}={v}" for k, v in budget.items()) or "no budget"
    return str(budget)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


# ----------------------------------------------------------------------------------------------
# Tables


@dataclass
class _Row:
    label: str
    records: dict[Any, dict[str, Any]] = field(default_factory=dict)  # seed -> newest record
    unsupported: bool = False

    def ok(self) -> list[dict[str, Any]]:
        return [r for r in self.records.values() if r.get("status") == "ok"]

    def values(self, metric: str) -> dict[Any, float]:
        """seed -> finite value of ``metric`` over ok records (non-finite are stored as None)."""
        out: dict[Any, float] = {}
        for seed, r in self.records.items():
            if r.get("status") != "ok":
                continue
            v = (r.get("metrics") or {}).get(metric, {})
            v = v.get("value") if isinstance(v, dict) else None
            if isinstance(v, (int, float)) and math.isfinite(float(v)):
                out[seed] = float(v)
        return out


def _end_utc(record: Mapping[str, Any]) -> str:
    return str((record.get("provenance") or {}).get("end_utc") or "")


def table_key(record: Mapping[str, Any]) -> TableKey:
    task = record["task"]
    budget = json.dumps(record.get("budget"), sort_keys=True)
    return (str(task["name"]), str(record.get("preset")), str(task.get("label") or task["name"]), budget)


def table_slug(key: TableKey) -> str:
    """A file-name-safe name for one table (plots of that table are named after it)."""
    _, preset, label, budget = key
    text = f"{label}-{preset}-{_budget_text(budget)}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def plot_links(runs_dir: str | Path, out_path: str | Path, key: TableKey) -> list[tuple[str, str]]:
    """(title, relative link) for the PNGs ``gradbench plot`` wrote for this table, if any."""
    folder = Path(runs_dir) / key[0] / "plots"
    base = Path(out_path).resolve().parent
    links = []
    for png in sorted(folder.glob(f"{table_slug(key)}--*.png")):
        title = png.stem.split("--", 1)[1].replace("_", " ")
        links.append((title, os.path.relpath(png.resolve(), base)))
    return links


def group(records: Iterable[dict[str, Any]]) -> dict[TableKey, dict[str, _Row]]:
    tables: dict[TableKey, dict[str, _Row]] = {}
    for r in records:
        est = r["estimator"]
        label = str(est.get("label") or est["name"])
        row = tables.setdefault(table_key(r), {}).setdefault(label, _Row(label))
        seed = r.get("seed")
        old = row.records.get(seed)
        if old is None or _end_utc(r) >= _end_utc(old):  # duplicate seed: the newest run wins
            row.records[seed] = r
    return tables


def _metric_specs(rows: Iterable[_Row]) -> tuple[str | None, list[tuple[str, bool | None]]]:
    """(main metric, [(metric, higher_is_better)]) with the main metric first."""
    order: dict[str, bool | None] = {}
    mains: Counter[str] = Counter()
    for row in rows:
        for r in row.records.values():
            if r.get("main_metric"):
                mains[str(r["main_metric"])] += 1
            for name, m in (r.get("metrics") or {}).items():
                hib = m.get("higher_is_better") if isinstance(m, dict) else None
                if name not in order or order[name] is None:
                    order[name] = hib if isinstance(hib, bool) else None
    main = mains.most_common(1)[0][0] if mains else (next(iter(order), None))
    if main is not None and main not in order:
        order = {main: None, **order}
    specs = sorted(order.items(), key=lambda kv: kv[0] != main)
    return main, specs


def _arrow(hib: bool | None) -> str:
    """The direction suffix for a column header; none when the records don't say."""
    if hib is None:
        return ""
    return " ↑" if hib else " ↓"


def _render_table(key: TableKey, rows: dict[str, _Row], unsupported: Iterable[str],
                  links: list[tuple[str, str]] = ()) -> str:
    name, preset, task_label, budget = key
    rows = dict(rows)
    for est in unsupported:
        if est not in rows:
            rows[est] = _Row(est, unsupported=True)
    main, specs = _metric_specs(rows.values())
    hib_main = dict(specs).get(main) if main else None

    stats_by: dict[str, dict[str, tuple[float, float | None, int]]] = {}
    vals_by: dict[str, dict[str, dict[Any, float]]] = {}
    for label, row in rows.items():
        vals_by[label] = {m: row.values(m) for m, _ in specs}
        stats_by[label] = {m: mean_ci(v.values()) for m, v in vals_by[label].items()}

    def sort_key(label: str) -> tuple[int, float, str]:
        row = rows[label]
        if row.unsupported or main is None or stats_by[label][main][2] == 0:
            return (2 if row.unsupported else 1, 0.0, label)
        m = stats_by[label][main][0]
        return (0, -m if hib_main else m, label)

    ordered = sorted(rows, key=sort_key)

    bold: dict[str, set[str]] = {}
    for metric, hib in specs:
        scored = [lbl for lbl in ordered if not rows[lbl].unsupported and stats_by[lbl][metric][2] > 0]
        if hib is None or not scored:
            bold[metric] = set()
            continue
        pick = max if hib else min
        best = pick(scored, key=lambda lbl: stats_by[lbl][metric][0])
        bold[metric] = {lbl for lbl in scored
                        if lbl == best or is_tied(vals_by[best][metric], vals_by[lbl][metric])}

    has_failed = any(r.get("status") != "ok" for row in rows.values() for r in row.records.values())
    has_grad = any(_end_gradient(r) for row in rows.values() for r in row.ok())
    grad_headers = ["log10 var (end)", "cos ref (end)"] if has_grad else []
    headers = (["estimator"] + [f"{m}{_arrow(h)}" for m, h in specs] + grad_headers
               + ["n", "cost evals/step", "steps/s"])
    if has_failed:
        headers.append("failed")
    body = []
    for label in ordered:
        row = rows[label]
        if row.unsupported:
            line = [_cell(label)] + ["n/a"] * (len(specs) + len(grad_headers)) + ["n/a", "n/a", "n/a"]
            body.append(line + ([""] if has_failed else []))
            continue
        ok = row.ok()
        n_row = len(ok)
        cells = [_cell(label)]
        for metric, _ in specs:
            mean, h, n = stats_by[label][metric]
            if n == 0:
                cells.append("—" if n_row == 0 else "— (non-finite)")
                continue
            text = format_mean_ci(mean, h)
            if n == 1:
                text += " (n=1, no CI)"
            elif n != n_row:
                text += f" (n={n})"
            cells.append(f"**{text}**" if label in bold[metric] else text)
        if has_grad:
            for key in ("log10_variance", "cosine"):
                vals = [_end_gradient(r).get(key) for r in ok]
                mean, h, n = mean_ci(float(v) for v in vals if isinstance(v, (int, float)))
                cells.append(format_mean_ci(mean, h) if n else "—")
        costs = [r.get("cost") or {} for r in ok]
        evals = [c.get("cost_evals_per_step") for c in costs]
        speed = [c.get("steps_per_s") for c in costs]
        evals_mean, _, n_evals = mean_ci(float(v) for v in evals if isinstance(v, (int, float)))
        speed_mean, _, n_speed = mean_ci(float(v) for v in speed if isinstance(v, (int, float)))
        cells.append(str(n_row))
        cells.append(f"{evals_mean:g}" if n_evals else "—")
        cells.append(format_sig(speed_mean) if n_speed else "—")
        if has_failed:
            bad = Counter(str(r.get("status")) for r in row.records.values() if r.get("status") != "ok")
            cells.append(", ".join(f"{c} {s}" for s, c in sorted(bad.items())))
        body.append(cells)

    node = sorted({str(((r.get("task") or {}).get("node") or {}).get("kind", "?"))
                   for row in rows.values() for r in row.records.values()})
    main_text = f"{main}{_arrow(hib_main)}" if main else "none"
    heading = (f"### {task_label} (preset: {preset}; budget: {_budget_text(budget)}; "
               f"node: {', '.join(node) or '?'}; main metric: {main_text})")
    table = tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)
    if links:
        table += "\n\nPlots: " + ", ".join(f"[{title}]({link})" for title, link in links)
    return f"{heading}\n\n{table}"


def _end_gradient(record: Mapping[str, Any]) -> dict[str, Any]:
    """The last gradient checkpoint of a record (the end of training), or {}."""
    points = (record.get("gradient") or {}).get("checkpoints") or []
    return points[-1] if points and isinstance(points[-1], dict) else {}


def _header(records: list[dict[str, Any]], problems: Iterable[str]) -> str:
    counts = Counter(str(r.get("status")) for r in records)
    detail = ", ".join(f"{counts[s]} {s}" for s in ("ok", "diverged", "failed") if counts[s])
    lines = [f"Built from {len(records)} run records" + (f" ({detail})" if detail else "") + "."]
    ok = [r.get("provenance") or {} for r in records if r.get("status") == "ok"]

    def listed(values: Iterable[Any]) -> str:
        found = sorted({str(v) for v in values if v not in (None, "")})
        return ", ".join(found) or "unknown"

    if ok:
        lines += [
            "",
            "Numbers below come from ok runs made with:",
            "",
            f"- gradbench: {listed(p.get('gradbench_version') for p in ok)}",
            f"- git: {listed(_short_sha(p) for p in ok)}",
            f"- torch: {listed(p.get('torch') for p in ok)}",
            f"- devices: {listed(p.get('device_name') or p.get('device') for p in ok)}",
        ]
    problems = list(problems)
    if problems:
        lines += ["", f"Skipped {len(problems)} unreadable record file(s):", ""]
        lines += [f"- `{p}`" for p in problems]
    return "\n".join(lines)


LEGEND = (
    "Cells: mean ± 95% CI half-width over seeds, t(0.975, n-1)·s/√n; `(n=1, no CI)` marks a single "
    "seed. ↑ higher is better, ↓ lower is better; rows are sorted by the main metric. **Bold**: the best "
    "mean in its column, or tied with it: a paired t-test (scipy.stats.ttest_rel) over the seeds both "
    f"rows share gives p ≥ {ALPHA} when they share ≥ {MIN_PAIRED} seeds; otherwise their 95% CIs overlap "
    "(a single-seed row ties only with an exactly equal mean). Only status-ok runs enter the means; "
    "`failed` counts the others. `n/a`: the estimator cannot run this task's node. Gradient columns, at the "
    "last checkpoint: log10 of the per-parameter variance of the encoder's gradient estimate (averaged over "
    "parameters) and the cosine between the mean estimate and the reference gradient (exact where the task "
    "has one, else a many-sample RLOO estimate; — where there is no reference, e.g. deterministic nodes)."
)


def _node_kind(rows: Mapping[str, _Row]) -> str:
    for row in rows.values():
        for r in row.records.values():
            return str(((r.get("task") or {}).get("node") or {}).get("kind"))
    return ""


def render(records: list[dict[str, Any]], unsupported: Mapping[str, list[str]] | None = None,
           problems: Iterable[str] = (), links: Mapping[TableKey, list[tuple[str, str]]] | None = None) -> str:
    """The markdown between the markers: provenance header, one table per task setting, legend.

    ``unsupported`` maps a node kind to estimator names that can't run it; the caller computes it
    from the registry so this module stays free of torch.
    """
    unsupported = unsupported or {}
    parts = [_header(records, problems)]
    tables = group(records)
    if not tables:
        parts.append("No runs recorded yet.")
    for key in sorted(tables):
        parts.append(_render_table(key, tables[key], unsupported.get(_node_kind(tables[key]), []),
                                   (links or {}).get(key, [])))
    if tables:
        parts.append(LEGEND)
    return "\n\n".join(parts) + "\n"


# ----------------------------------------------------------------------------------------------
# Writing


def write(out_path: str | Path, text: str) -> None:
    """Replace only the marked block of ``out_path`` so hand-written prose around it survives."""
    out_path = Path(out_path)
    block = f"{BEGIN}\n{text.rstrip()}\n{END}"
    old = out_path.read_text(encoding="utf-8") if out_path.exists() else None
    if old is not None:
        start = old.find(BEGIN)
        stop = old.find(END, start + len(BEGIN)) if start >= 0 else -1
        if start >= 0 and stop >= 0:
            atomic_write_text(out_path, old[:start] + block + old[stop + len(END):])
            return
    atomic_write_text(out_path, (
        "# gradbench leaderboard\n\n"
        "The block between the markers below is generated by `gradbench leaderboard`; "
        "text outside the markers is kept when it is regenerated.\n\n"
        f"{block}\n"
    ))


def build(runs_dir: str | Path, out_path: str | Path,
          unsupported: Mapping[str, list[str]] | None = None) -> tuple[str, list[str]]:
    """Collect, render and write the leaderboard; returns (rendered block, problems)."""
    records, problems = collect(runs_dir)
    links = {key: plot_links(runs_dir, out_path, key) for key in group(records)}
    text = render(records, unsupported, problems, links)
    write(out_path, text)
    return text, problems
