"""The leaderboard: every run record summarised as markdown tables, one per task setting.

Cells are ``mean ± h`` with ``h = t(0.975, n-1) * s / sqrt(n)`` over *seeds* (a 95% CI of the mean
across independent runs, not a standard error over evaluation examples); ``n`` shows ok seeds / seeds run.

Judgments, each with a stated false-alarm rate (checked by simulation in tests/test_leaderboard.py):

- A row is *ranked* in a column only with >= 2 ok seeds, no failed or diverged seed, and a finite value
  from every ok seed. Unranked rows are shown but never bold: a failure is a result, and the mean of
  the surviving seeds would flatter the row.
- The best ranked mean per column is bold, and so is every ranked row tied with it: a two-sided t-test
  gives p >= ALPHA (0.05), paired over the seeds both rows share when they share >= 2, else Welch's.
  Two rows drawn from one distribution are called "not tied" with probability <= ALPHA.
- "bias (end)": the seeds' end-checkpoint bias tests combined by Bonferroni, flagged when
  min(1, n * min p) < BIAS_ALPHA (0.05); an unbiased estimator is flagged with probability <= 0.05.

Only the block between the markers in the output file is rewritten, so prose written around it survives.

Two layers: ``decide`` turns records into per-table statistics and verdicts (which row is best in each
column, which rows are tied with it) as plain data, and ``format_table``/``render`` turn those into
markdown. The statistics themselves live in ``gradbench.stats``.

steps/s is a mean over runs of one execution path only (``accel.used``: eager, CUDA graph or
torch.compile; records without an ``accel`` block ran eagerly), never a blend of paths.

No torch and no registry import: the caller passes in which estimator/task pairs are unsupported, and
optionally how to relabel a record (``collect``'s ``relabel``).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate

from gradbench.errors import UsageError
from gradbench.records import VALID_PREFIX, atomic_write_text, iter_records, read_selections
from gradbench.stats import bonferroni_combine, mean_ci, paired_t, welch_t

__all__ = ["BEGIN", "END", "ALPHA", "BIAS_ALPHA", "MIN_RANKED", "TableKey", "Ranking", "RowStats", "TableStats",
           "collect", "mean_ci", "tie_test", "is_tied", "unranked_reason", "bias_p", "format_mean_ci", "format_sig",
           "table_key", "table_slug", "plot_links", "group", "accel_path", "decide", "decide_table", "format_table",
           "render", "write", "build"]

BEGIN = "<!-- gradbench:leaderboard:begin -->"
END = "<!-- gradbench:leaderboard:end -->"
ALPHA = 0.05  # tie-test level: p < ALPHA is "worse than best", p >= ALPHA "tied"
MIN_RANKED = 2  # ok seeds a row needs to be ranked (and to pair on: fewer shared seeds -> Welch's test)
BIAS_ALPHA = 0.05  # a row's combined bias p below this is "flagged"
EAGER = "none"  # accel.used of a run without CUDA graph or torch.compile (and of records older than accel)
PATH_NAMES = {"none": "eager", "graph": "graph", "compile": "compile"}  # accel.used -> how a cell names it

TableKey = tuple[str, str, str, str]  # (task name, preset, task label, budget json)
Relabel = Callable[[dict[str, Any]], str]


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


def _relabelled(record: dict[str, Any], relabel: Relabel | None) -> dict[str, Any]:
    """``record`` with ``estimator.label`` replaced by its display label (a shallow copy; the file's
    record is untouched). An empty display label keeps the stored one."""
    if relabel is None:
        return record
    label = relabel(record)
    if not label or label == record["estimator"].get("label"):
        return record
    return {**record, "estimator": {**record["estimator"], "label": label}}


def collect(runs_dir: str | Path, relabel: Relabel | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """All readable records under ``runs_dir`` plus one line per file that had to be skipped.

    A truncated or invalid file must not silently shrink a table, so every skip is reported.
    ``relabel`` maps a record to the label its row is shown under (default: the label stored in it),
    so records written under an older label rule join the rows of the current one.
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
        records.append(_relabelled(record, relabel))
    return records, problems


# ----------------------------------------------------------------------------------------------
# Tuned rows (``gradbench tune``'s selection records)

TUNED = " [tuned]"


def _values_text(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def _seeds_text(seeds: Iterable[Any]) -> str:
    seeds = sorted(int(s) for s in seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


def selection_key(selection: Mapping[str, Any]) -> TableKey:
    """The table a selection's rows go to: its base task label (the grid's keys taken out) + `` [tuned]``."""
    budget = json.dumps(selection.get("budget"), sort_keys=True)
    task = selection["task"]
    return (str(task["name"]), str(selection.get("preset")), str(task.get("label") or task["name"]) + TUNED, budget)


def apply_selections(records: list[dict[str, Any]], selections: Iterable[Mapping[str, Any]]
                     ) -> tuple[list[dict[str, Any]], dict[TableKey, list[str]]]:
    """(records for the tables, notes per table). Each selection's grid runs leave the plain tables; its
    chosen setting's runs at the final seeds become one row of the task's ``[tuned]`` table, labelled with
    the choice (``dab [lr=0.003]``). An estimator with no eligible setting, or final runs not found, is said
    in the table's notes: never silently dropped."""
    by_id = {str(r.get("run_id")): r for r in records}
    consumed: set[str] = set()
    tuned: list[dict[str, Any]] = []
    notes: dict[TableKey, list[str]] = {}
    for sel in selections:
        key = selection_key(sel)
        for row in sel["settings"]:
            consumed.update(map(str, row.get("run_ids") or []))
        grid = "; ".join(f"{k} ∈ {{{', '.join(map(str, v))}}}" for k, v in (sel.get("grid") or {}).items())
        say = notes.setdefault(key, [])
        line = (f"Tuned on validation: {grid}, chosen by the best mean {sel.get('selection_metric')} over seeds "
                f"{_seeds_text(sel.get('seeds') or [])} among settings that finished on every seed; rows report "
                f"the test metrics at seeds {_seeds_text(sel.get('final_seeds') or [])}.")
        if line not in say:
            say.append(line)
        choice = sel.get("choice")
        label = str(sel["estimator"].get("label") or sel["estimator"]["name"])
        if not choice:
            say.append(f"{label}: no setting finished on every tuning seed; nothing to report.")
            continue
        final = [str(r) for r in choice.get("final_run_ids") or []]
        consumed.update(final)
        missing = [rid for rid in final if rid not in by_id]
        if missing:
            say.append(f"{label}: {len(missing)} of its {len(final)} final runs have no record here.")
        shown = f"{label} [{_values_text(choice.get('values') or {})}]"
        for rid in final:
            if rid in by_id:
                r = by_id[rid]
                tuned.append({**r, "task": {**r["task"], "label": key[2]},
                              "estimator": {**r["estimator"], "label": shown}})
    return [r for r in records if str(r.get("run_id")) not in consumed] + tuned, notes


def collect_tables(runs_dir: str | Path, relabel: Relabel | None = None
                   ) -> tuple[list[dict[str, Any]], dict[TableKey, list[str]], list[str]]:
    """What the tables (and their plots) are made of: ``collect``'s records with the selection records
    applied (``apply_selections``), the notes per table, and every unreadable file."""
    records, problems = collect(runs_dir, relabel)
    selections, bad = read_selections(runs_dir)
    records, notes = apply_selections(records, selections)
    return records, notes, problems + bad


# ----------------------------------------------------------------------------------------------
# Ties


def tie_test(best: Mapping[Any, float], other: Mapping[Any, float]) -> tuple[str, float]:
    """("paired" or "welch", two-sided p) for ``best`` against ``other`` (seed -> value).

    Paired over the shared seeds when there are at least MIN_RANKED of them (seed pairs remove the
    noise both runs of a seed share, so this is the sharper test); otherwise Welch's test over all
    values of each side. Both decide their degenerate cases (``gradbench.stats``): identical values
    p = 1, a constant offset p = 0, too few values or a non-finite one p = nan.
    """
    shared = sorted(set(best) & set(other), key=str)
    if len(shared) >= MIN_RANKED:
        return "paired", paired_t([best[s] for s in shared], [other[s] for s in shared]).p
    return "welch", welch_t(list(best.values()), list(other.values())).p


def is_tied(best: Mapping[Any, float], other: Mapping[Any, float]) -> bool:
    """Whether ``other`` (seed -> value) is statistically indistinguishable from ``best``: ``tie_test``
    gives p >= ALPHA. Without a test (p = nan, e.g. a single value) it is not a tie.

    Two sets of runs from one distribution are called "not tied" with probability <= ALPHA (exactly
    ALPHA for the paired test on normal data; Welch's test is slightly conservative at 2-4 seeds).
    """
    p = tie_test(best, other)[1]
    return bool(math.isfinite(p) and p >= ALPHA)


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
                if name.startswith(VALID_PREFIX):  # selection data, not a result: tables show the test split
                    continue
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


# ----------------------------------------------------------------------------------------------
# Deciding: per-row statistics and per-column verdicts, as plain data

Stat = tuple[float, float | None, int]  # (mean, 95% CI half-width or None, n), as stats.mean_ci
GRADIENT_KEYS = ("log10_variance", "log10_work_variance", "cosine")  # end-of-training gradient columns


def accel_path(record: Mapping[str, Any]) -> str:
    """How a record's training steps executed: its ``accel.used`` ("none" = eager, "graph", "compile");
    records written before the ``accel`` block existed ran eagerly."""
    accel = record.get("accel")
    used = accel.get("used") if isinstance(accel, Mapping) else None
    return str(used) if used else EAGER


def _path_order(path: str) -> tuple[int, str]:
    return (list(PATH_NAMES).index(path) if path in PATH_NAMES else len(PATH_NAMES), path)


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
    gradient: dict[str, Stat] = field(default_factory=dict)  # GRADIENT_KEYS at the last checkpoint
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
    specs: list[tuple[str, bool | None]]  # (metric, higher_is_better) with the main metric first
    order: list[str]
    rows: dict[str, RowStats]
    rankings: dict[str, Ranking]  # metric -> verdict
    nodes: list[str]  # node kinds of the records
    has_gradient: bool = False
    has_failed: bool = False
    has_bias: bool = False

    @property
    def paths(self) -> list[str]:
        """Execution paths behind the table's steps/s figures, eager first."""
        return sorted({p for r in self.rows.values() for p in r.steps_per_s}, key=_path_order)

    @property
    def eager_only(self) -> bool:
        """Whether every steps/s figure came from eager runs (then cells show plain numbers)."""
        return set(self.paths) <= {EAGER}


def _numbers(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, (int, float))]


def _steps_per_s(ok: list[dict[str, Any]]) -> dict[str, float]:
    """Mean steps/s per execution path: a figure never averages runs of different paths."""
    by_path: dict[str, list[float]] = {}
    for r in ok:
        v = (r.get("cost") or {}).get("steps_per_s")
        if isinstance(v, (int, float)):
            by_path.setdefault(accel_path(r), []).append(float(v))
    out = {}
    for path in sorted(by_path, key=_path_order):
        mean, _, n = mean_ci(by_path[path])
        if n:
            out[path] = mean
    return out


def bias_p(records: Iterable[Mapping[str, Any]]) -> tuple[float, int] | None:
    """(combined p, number of p-values) of the end-checkpoint ``bias_p`` of ``records`` (one per seed),
    combined by Bonferroni: min(1, n * min p); None when no record has one. With each seed's p
    calibrated, an unbiased estimator's row gets p < BIAS_ALPHA with probability <= BIAS_ALPHA."""
    ps = [p for p in _numbers(_end_gradient(r).get("bias_p") for r in records) if math.isfinite(p)]
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


def _gradient_value(record: Mapping[str, Any], key: str) -> Any:
    """A gradient column's value for one record: a stored end-checkpoint statistic, or the variance per
    unit of work, log10(variance x cost evaluations per step): what a fixed budget of cost evaluations
    buys (an estimator that evaluates the cost twice as often must halve its variance to break even)."""
    end = _end_gradient(record)
    if key != "log10_work_variance":
        return end.get(key)
    v, evals = end.get("log10_variance"), (record.get("cost") or {}).get("cost_evals_per_step")
    ok = isinstance(v, (int, float)) and isinstance(evals, (int, float)) and evals > 0
    return v + math.log10(evals) if ok else None


def _row_stats(row: _Row, specs: list[tuple[str, bool | None]], has_gradient: bool) -> RowStats:
    if row.unsupported:
        return RowStats(row.label, unsupported=True, metrics={m: mean_ci([]) for m, _ in specs})
    ok = row.ok()
    stats = RowStats(row.label, n_ok=len(ok), n_total=len(row.records),
                     metrics={m: mean_ci(row.values(m).values()) for m, _ in specs})
    if has_gradient:
        stats.gradient = {k: mean_ci(_numbers(_gradient_value(r, k) for r in ok)) for k in GRADIENT_KEYS}
        stats.bias = bias_p(ok)
    evals, _, n_evals = mean_ci(_numbers((r.get("cost") or {}).get("cost_evals_per_step") for r in ok))
    stats.evals_per_step = evals if n_evals else None
    stats.steps_per_s = _steps_per_s(ok)
    stats.failed = dict(Counter(str(r.get("status")) for r in row.records.values() if r.get("status") != "ok"))
    return stats


def _rank(metric: str, hib: bool | None, order: list[str], rows: Mapping[str, _Row],
          stats: Mapping[str, RowStats]) -> Ranking:
    """The best mean among a column's ranked rows (in its better direction) and the ranked rows tied
    with it (``tie_test`` p >= ALPHA); unranked rows (``unranked_reason``) take no part."""
    ranked = [lbl for lbl in order if unranked_reason(stats[lbl], metric) is None]
    if hib is None or not ranked:
        return Ranking()
    pick = max if hib else min
    best = pick(ranked, key=lambda lbl: stats[lbl].metrics[metric][0])
    ref = rows[best].values(metric)
    p = {lbl: tie_test(ref, rows[lbl].values(metric))[1] for lbl in ranked if lbl != best}
    return Ranking(best, frozenset(lbl for lbl, v in p.items() if math.isfinite(v) and v >= ALPHA), p)


def decide_table(key: TableKey, rows: Mapping[str, _Row], unsupported: Iterable[str] = ()) -> TableStats:
    """One table's statistics and verdicts; ``unsupported`` estimators without runs are listed as n/a."""
    rows = dict(rows)
    for est in unsupported:
        if est not in rows:
            rows[est] = _Row(est, unsupported=True)
    main, specs = _metric_specs(rows.values())
    records = [r for row in rows.values() for r in row.records.values()]
    has_gradient = any(_end_gradient(r) for row in rows.values() for r in row.ok())
    stats = {label: _row_stats(row, specs, has_gradient) for label, row in rows.items()}
    hib_main = dict(specs).get(main) if main else None

    def sort_key(label: str) -> tuple[int, float, str]:  # ranked rows, unranked, no value, unsupported
        s = stats[label]
        if s.unsupported or main is None or s.metrics[main][2] == 0:
            return (3 if s.unsupported else 2, 0.0, label)
        m = s.metrics[main][0]
        return (0 if unranked_reason(s, main) is None else 1, -m if hib_main else m, label)

    order = sorted(rows, key=sort_key)
    return TableStats(
        key=key, main=main, specs=specs, order=order, rows=stats,
        rankings={m: _rank(m, hib, order, rows, stats) for m, hib in specs},
        nodes=sorted({str(((r.get("task") or {}).get("node") or {}).get("kind", "?")) for r in records}),
        has_gradient=has_gradient, has_failed=any(r.get("status") != "ok" for r in records),
        has_bias=any(s.bias is not None for s in stats.values()))


def decide(records: Iterable[dict[str, Any]],
           unsupported: Mapping[str, Iterable[str]] | None = None) -> dict[TableKey, TableStats]:
    """Every table's statistics and verdicts, sorted by table key: the leaderboard without its markdown.

    ``unsupported`` maps a node kind to estimator names that can't run it (listed as n/a).
    """
    unsupported = unsupported or {}
    tables = group(records)
    return {key: decide_table(key, tables[key], unsupported.get(_node_kind(tables[key]), []))
            for key in sorted(tables)}


# ----------------------------------------------------------------------------------------------
# Formatting a decided table


def _metric_cell(stat: Stat, row: RowStats, ranked: bool, bold: bool) -> str:
    """``mean ± h``, with why the row is not ranked in this column when it is not: ``(n=1, not ranked)``,
    ``(n=2, 1 non-finite, not ranked)``, or ``(not ranked)`` for a row with failed/diverged seeds."""
    mean, h, n = stat
    if n == 0:
        return "—" if row.n_ok == 0 else "— (non-finite)"
    text = format_mean_ci(mean, h)
    if n < MIN_RANKED:
        text += f" (n={n}, not ranked)"
    elif n < row.n_ok:
        text += f" (n={n}, {row.n_ok - n} non-finite, not ranked)"
    elif not ranked:
        text += " (not ranked)"
    return f"**{text}**" if bold else text


def bias_cell(bias: tuple[float, int] | None) -> str:
    """``flagged (p=0.0012)`` / ``not flagged (p=1)`` for a row's combined bias p, ``—`` without one."""
    if bias is None:
        return "—"
    p = bias[0]
    return f"{'flagged' if p < BIAS_ALPHA else 'not flagged'} (p={p:.2g})"


def speed_cell(steps_per_s: Mapping[str, float], plain: bool) -> str:
    """The steps/s cell: a plain number when the whole table ran eagerly, else each path's figure
    named, e.g. ``136 (eager) / 2400 (graph)``."""
    if not steps_per_s:
        return "—"
    if plain:
        return format_sig(steps_per_s[EAGER])
    paths = sorted(steps_per_s, key=_path_order)
    return " / ".join(f"{format_sig(steps_per_s[p])} ({PATH_NAMES.get(p, p)})" for p in paths)


def _headers(table: TableStats) -> list[str]:
    grad = ["log10 var (end)", "log10 var×evals (end)", "cos ref (end)"] if table.has_gradient else []
    bias = ["bias (end)"] if table.has_bias else []
    return (["estimator"] + [f"{m}{_arrow(h)}" for m, h in table.specs] + grad + bias
            + ["n", "cost evals/step", "steps/s"] + (["failed"] if table.has_failed else []))


def _row_cells(table: TableStats, label: str) -> list[str]:
    s = table.rows[label]
    cells = [_cell(label)]
    cells += [_metric_cell(s.metrics[m], s, unranked_reason(s, m) is None, label in table.rankings[m].bold)
              for m, _ in table.specs]
    if table.has_gradient:
        cells += [format_mean_ci(mean, h) if n else "—" for mean, h, n in (s.gradient[k] for k in GRADIENT_KEYS)]
    if table.has_bias:
        cells.append(bias_cell(s.bias))
    cells.append(f"{s.n_ok}/{s.n_total}")
    cells.append("—" if s.evals_per_step is None else f"{s.evals_per_step:g}")
    cells.append(speed_cell(s.steps_per_s, table.eager_only))
    if table.has_failed:
        cells.append(", ".join(f"{c} {st}" for st, c in sorted(s.failed.items())))
    return cells


def format_table(table: TableStats, links: Iterable[tuple[str, str]] = (), notes: Iterable[str] = ()) -> str:
    """One decided table as markdown: heading, notes (how a tuned table was tuned), the table, and links
    to its plots."""
    _, preset, task_label, budget = table.key
    hib_main = dict(table.specs).get(table.main) if table.main else None
    main_text = f"{table.main}{_arrow(hib_main)}" if table.main else "none"
    heading = (f"### {task_label} (preset: {preset}; budget: {_budget_text(budget)}; "
               f"node: {', '.join(table.nodes) or '?'}; main metric: {main_text})")
    body = [_row_cells(table, label) for label in table.order if not table.rows[label].unsupported]
    text = tabulate(body, headers=_headers(table), tablefmt="github", disable_numparse=True)
    na = [label for label in table.order if table.rows[label].unsupported]
    if na:  # one line, not a row each: with many estimators, n/a rows would bury the table
        text += f"\n\nn/a (cannot run a {', '.join(table.nodes) or '?'} node): {', '.join(map(_cell, na))}"
    links = list(links)
    if links:
        text += "\n\nPlots: " + ", ".join(f"[{title}]({link})" for title, link in links)
    notes = list(notes)
    return "\n\n".join([heading, *([" ".join(notes)] if notes else []), text])


def _end_gradient(record: Mapping[str, Any]) -> dict[str, Any]:
    """The last gradient checkpoint of a record (the end of training), or {}."""
    points = (record.get("gradient") or {}).get("checkpoints") or []
    return points[-1] if points and isinstance(points[-1], dict) else {}


def _listed(values: Iterable[Any]) -> str:
    found = sorted({str(v) for v in values if v not in (None, "")})
    return ", ".join(found) or "unknown"


def _header(records: list[dict[str, Any]], problems: Iterable[str]) -> str:
    counts = Counter(str(r.get("status")) for r in records)
    detail = ", ".join(f"{counts[s]} {s}" for s in ("ok", "diverged", "failed") if counts[s])
    lines = [f"Built from {len(records)} run records" + (f" ({detail})" if detail else "") + "."]
    ok_records = [r for r in records if r.get("status") == "ok"]
    ok = [r.get("provenance") or {} for r in ok_records]
    if ok:
        paths = sorted({accel_path(r) for r in ok_records}, key=_path_order)
        lines += [
            "",
            "Numbers below come from ok runs made with:",
            "",
            f"- gradbench: {_listed(p.get('gradbench_version') for p in ok)}",
            f"- git: {_listed(_short_sha(p) for p in ok)}",
            f"- torch: {_listed(p.get('torch') for p in ok)}",
            f"- devices: {_listed(p.get('device_name') or p.get('device') for p in ok)}",
            f"- execution path (steps/s): {', '.join(PATH_NAMES.get(p, p) for p in paths)}",
        ]
    problems = list(problems)
    if problems:
        lines += ["", f"Skipped {len(problems)} unreadable record file(s):", ""]
        lines += [f"- `{p}`" for p in problems]
    return "\n".join(lines)


LEGEND = (
    "Cells: mean ± 95% CI half-width over the ok seeds, t(0.975, n-1)·s/√n. ↑ higher is better, ↓ lower is "
    "better. `n`: ok seeds / seeds run; `failed` counts the failed and diverged runs. Ranking: a row is "
    f"ranked only with ≥ {MIN_RANKED} ok seeds and no failed or diverged seed; other rows are shown but never "
    "bold (`(n=1, not ranked)`: a single ok seed; `(not ranked)`: some seeds failed or diverged, and the "
    "survivors' mean would flatter the row). Rows are sorted by the main metric, ranked rows first. **Bold**: "
    "the best mean among ranked rows, and every ranked row tied with it: a two-sided t-test at "
    f"α = {ALPHA} gives p ≥ {ALPHA}, paired (scipy.stats.ttest_rel) over the seeds both rows share when "
    f"they share ≥ {MIN_RANKED}, else Welch's (scipy.stats.ttest_ind, equal_var=False). Of two rows that differ "
    f"only by seed noise, the worse is marked not tied with probability ≤ {ALPHA}; among more equal rows the best "
    "is the luckiest, so each other one is unbolded more often (simulated: 0.08 per row for 5 equal rows of 5 "
    "seeds). `n/a`: the estimators that cannot run this task's node."
)
LEGEND_GRADIENT = (
    "Gradient columns, at the last checkpoint, mean ± CI over ok seeds: log10 of the per-parameter variance "
    "of the encoder's gradient estimate (averaged over parameters); the same per unit of work, log10(variance × "
    "cost evaluations per step), which compares estimators at equal cost (lower is better: an estimator that "
    "evaluates the cost k times per step must cut its variance k-fold to break even); and the debiased cosine "
    "between the mean "
    "estimate and the reference gradient (its norms corrected for the draws' and the reference's noise; "
    "exact reference where the task has one, else a many-sample RLOO estimate; — where there is no "
    "reference, e.g. deterministic nodes, or the mean is within noise of zero)."
)
LEGEND_BIAS = (
    "bias (end): each seed's test of \"E[estimate] = exact gradient\" at the last checkpoint (exact "
    "references only), combined over the row's seeds by Bonferroni, p = min(1, n·min p); `flagged` when "
    f"p < {BIAS_ALPHA}. An unbiased estimator is flagged with probability at most {BIAS_ALPHA} per row; "
    "`not flagged` is not proof of unbiasedness (small biases need more draws)."
)
LEGEND_PATHS = (
    "steps/s: mean over the runs of one execution path, never a blend. A plain number: every run of that "
    "table ran eagerly; otherwise each figure names its path (eager: plain PyTorch; graph: the whole step "
    "replayed as a CUDA graph; compile: torch.compile), and a row whose runs used several paths shows each, "
    "e.g. `136 (eager) / 2400 (graph)`."
)


def _node_kind(rows: Mapping[str, _Row]) -> str:
    for row in rows.values():
        for r in row.records.values():
            return str(((r.get("task") or {}).get("node") or {}).get("kind"))
    return ""


def render(records: list[dict[str, Any]], unsupported: Mapping[str, Iterable[str]] | None = None,
           problems: Iterable[str] = (), links: Mapping[TableKey, list[tuple[str, str]]] | None = None,
           notes: Mapping[TableKey, list[str]] | None = None) -> str:
    """The markdown between the markers: provenance header, one table per task setting, legend.

    ``unsupported`` maps a node kind to estimator names that can't run it; the caller computes it
    from the registry so this module stays free of torch.
    """
    parts = [_header(records, problems)]
    tables = decide(records, unsupported)
    if not tables:
        parts.append("No runs recorded yet.")
    parts += [format_table(table, (links or {}).get(key, []), (notes or {}).get(key, []))
              for key, table in tables.items()]
    for key in sorted(set(notes or {}) - set(tables)):  # a tuning with nothing to report still says so
        parts.append(f"### {key[2]} (preset: {key[1]}; budget: {_budget_text(key[3])})\n\n" + " ".join(notes[key]))
    if tables:
        legend = [LEGEND]
        legend += [LEGEND_GRADIENT] if any(t.has_gradient for t in tables.values()) else []
        legend += [LEGEND_BIAS] if any(t.has_bias for t in tables.values()) else []
        legend += [LEGEND_PATHS] if not all(t.eager_only for t in tables.values()) else []
        parts.append(" ".join(legend))
    return "\n\n".join(parts) + "\n"


# ----------------------------------------------------------------------------------------------
# Writing


def _marked_block(text: str) -> tuple[int, int] | None:
    """(start, end) of the generated block in a leaderboard file's text, or None when it has none."""
    start = text.find(BEGIN)
    stop = text.find(END, start + len(BEGIN)) if start >= 0 else -1
    return (start, stop + len(END)) if start >= 0 and stop >= 0 else None


def check_writable(out_path: str | Path, has_records: bool) -> None:
    """Never overwrite what ``gradbench leaderboard`` did not make: an existing file without its markers
    (someone's notes, another tool's output) is refused, and so are tables replaced by an empty block
    (e.g. ``--runs`` pointing one level too high)."""
    out_path = Path(out_path)
    if not out_path.exists():
        return
    old = out_path.read_text(encoding="utf-8")
    span = _marked_block(old)
    if span is None:
        raise UsageError(f"{os.fspath(out_path)!r} exists and was not written by gradbench leaderboard "
                         f"(no {BEGIN} marker); pass another --out")
    if not has_records and "\n### " in old[span[0]:span[1]]:
        raise UsageError(f"no run records found, and {os.fspath(out_path)!r} holds tables: refusing to empty it "
                         f"(is --runs the folder that holds <task>/<estimator>/<run_id>.json?)")


def write(out_path: str | Path, text: str) -> None:
    """Replace only the marked block of ``out_path`` so hand-written prose around it survives."""
    out_path = Path(out_path)
    block = f"{BEGIN}\n{text.rstrip()}\n{END}"
    old = out_path.read_text(encoding="utf-8") if out_path.exists() else None
    span = _marked_block(old) if old is not None else None
    if old is not None and span is not None:
        atomic_write_text(out_path, old[:span[0]] + block + old[span[1]:])
        return
    atomic_write_text(out_path, (
        "# gradbench leaderboard\n\n"
        "The block between the markers below is generated by `gradbench leaderboard`; "
        "text outside the markers is kept when it is regenerated.\n\n"
        f"{block}\n"
    ))


def build(runs_dir: str | Path, out_path: str | Path, unsupported: Mapping[str, Iterable[str]] | None = None,
          relabel: Relabel | None = None) -> tuple[str, list[str]]:
    """Collect, render and write the leaderboard; returns (rendered block, problems).

    A missing ``runs_dir`` is a UsageError rather than an empty leaderboard written over a real one.
    """
    if not Path(runs_dir).is_dir():
        what = "is not a folder" if Path(runs_dir).exists() else "does not exist"
        raise UsageError(f"runs folder {os.fspath(runs_dir)!r} {what}; pass --runs DIR with the run records")
    records, notes, problems = collect_tables(runs_dir, relabel)
    check_writable(out_path, bool(records))
    links = {key: plot_links(runs_dir, out_path, key) for key in group(records)}
    text = render(records, unsupported, problems, links, notes)
    write(out_path, text)
    return text, problems
