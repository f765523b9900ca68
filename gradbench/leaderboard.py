"""The leaderboard: every run record summarised as markdown tables, one per task setting; a view of the
results layer (``gradbench.results``), which reads the records, groups them and decides each table's
statistics and verdicts (``results.ranking``). This module only renders and writes.

Cells are ``mean ± h`` with ``h = t(0.975, n-1) * s / sqrt(n)`` over *seeds* (a 95% CI of the mean
across independent runs, not a standard error over evaluation examples); ``n`` shows ok seeds / seeds
run. steps/s is a mean over runs of one execution path only, never a blend of paths.

Only the block between the markers in the output file is rewritten, so prose written around it survives.
No torch and no registry import: the caller passes in which estimator/task pairs are unsupported, and
optionally how to relabel a record.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

from gradbench.errors import UsageError
from gradbench.records import atomic_write_text
from gradbench.results import (
    ALPHA,
    BIAS_ALPHA,
    EAGER,
    GRADIENT,
    MIN_RANKED,
    PATH_NAMES,
    TABLE_GRADIENT,
    Record,
    Relabel,
    RowStats,
    RunSet,
    TableKey,
    TableStats,
    decide,
    fmt,
    path_order,
    unranked_reason,
)

BEGIN = "<!-- gradbench:leaderboard:begin -->"
END = "<!-- gradbench:leaderboard:end -->"
Links = Mapping[TableKey, list[tuple[str, str]]]


def _metric_cell(stat: tuple[float, float | None, int], row: RowStats, ranked: bool, bold: bool) -> str:
    """``mean ± h``, with why the row is not ranked in this column when it is not: ``(n=1, not ranked)``,
    ``(n=2, 1 non-finite, not ranked)``, or ``(not ranked)`` for a row with failed/diverged seeds."""
    mean, h, n = stat
    if n == 0:
        return fmt.MISSING if row.n_ok == 0 else f"{fmt.MISSING} (non-finite)"
    text = fmt.mean_ci(mean, h)
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
        return fmt.MISSING
    p = bias[0]
    return f"{'flagged' if p < BIAS_ALPHA else 'not flagged'} (p={fmt.pvalue(p, 2)})"


def speed_cell(steps_per_s: Mapping[str, float], plain: bool) -> str:
    """The steps/s cell: a plain number when the whole table ran eagerly, else each path's figure
    named, e.g. ``136 (eager) / 2400 (graph)``."""
    if not steps_per_s:
        return fmt.MISSING
    if plain:
        return fmt.sig(steps_per_s[EAGER])
    paths = sorted(steps_per_s, key=path_order)
    return " / ".join(f"{fmt.sig(steps_per_s[p])} ({PATH_NAMES.get(p, p)})" for p in paths)


def _headers(table: TableStats) -> list[str]:
    grad = [GRADIENT[k].label for k in TABLE_GRADIENT] if table.has_gradient else []
    bias = [GRADIENT["bias_p"].label] if table.has_bias else []
    return (["estimator"] + [m.column for m in table.columns] + grad + bias
            + ["n", "cost evals/step", "steps/s"] + (["failed"] if table.has_failed else []))


def _row_cells(table: TableStats, label: str) -> list[str]:
    s = table.rows[label]
    cells = [fmt.cell(label)]
    cells += [_metric_cell(s.metrics[m.name], s, unranked_reason(s, m.name) is None,
                           label in table.rankings[m.name].bold) for m in table.columns]
    if table.has_gradient:
        cells += [fmt.mean_ci(mean, h) if n else fmt.MISSING for mean, h, n in (s.gradient[k] for k in TABLE_GRADIENT)]
    if table.has_bias:
        cells.append(bias_cell(s.bias))
    cells.append(f"{s.n_ok}/{s.n_total}")
    cells.append(fmt.MISSING if s.evals_per_step is None else f"{s.evals_per_step:g}")
    cells.append(speed_cell(s.steps_per_s, table.eager_only))
    if table.has_failed:
        cells.append(", ".join(f"{c} {st}" for st, c in sorted(s.failed.items())))
    return cells


def format_table(table: TableStats, links: Iterable[tuple[str, str]] = (), notes: Iterable[str] = ()) -> str:
    """One decided table as markdown: heading, notes (how a tuned table was tuned), the table, and links
    to its plots."""
    main = table.main_metric
    main_text = (main.column if main else table.main) or "none"
    heading = (f"### {table.key.label} (preset: {table.key.preset}; budget: {table.key.budget_text}; "
               f"node: {', '.join(table.nodes) or '?'}; main metric: {main_text})")
    body = [_row_cells(table, label) for label in table.order if not table.rows[label].unsupported]
    text = fmt.table(_headers(table), body)
    na = [label for label in table.order if table.rows[label].unsupported]
    if na:  # one line, not a row each: with many estimators, n/a rows would bury the table
        text += f"\n\nn/a (cannot run a {', '.join(table.nodes) or '?'} node): {', '.join(map(fmt.cell, na))}"
    links = list(links)
    if links:
        text += "\n\nPlots: " + ", ".join(f"[{title}]({link})" for title, link in links)
    notes = list(notes)
    return "\n\n".join([heading, *([" ".join(notes)] if notes else []), text])


def _listed(values: Iterable[object]) -> str:
    found = sorted({str(v) for v in values if v not in (None, "")})
    return ", ".join(found) or "unknown"


def _header(records: list[Record], problems: Iterable[str]) -> str:
    counts = Counter(r.status for r in records)
    detail = ", ".join(f"{counts[s]} {s}" for s in ("ok", "diverged", "failed") if counts[s])
    lines = [f"Built from {len(records)} run records" + (f" ({detail})" if detail else "") + "."]
    ok_records = [r for r in records if r.ok]
    ok = [r.provenance for r in ok_records]
    if ok:
        paths = sorted({r.accel_path for r in ok_records}, key=path_order)
        lines += [
            "",
            "Numbers below come from ok runs made with:",
            "",
            f"- gradbench: {_listed(p.gradbench_version for p in ok)}",
            f"- git: {_listed(p.short_sha for p in ok)}",
            f"- torch: {_listed(p.torch for p in ok)}",
            f"- devices: {_listed(p.hardware for p in ok)}",
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


def render(records: RunSet | Iterable[Record | Mapping[str, object]],
           unsupported: Mapping[str, Iterable[str]] | None = None, problems: Iterable[str] = (),
           links: Links | None = None, notes: Mapping[TableKey, list[str]] | None = None) -> str:
    """The markdown between the markers: provenance header, one table per task setting, legend.

    ``unsupported`` maps a node kind to estimator names that can't run it; the caller computes it
    from the registry so this module stays free of torch. A RunSet brings its own problems and notes.
    """
    runs = records if isinstance(records, RunSet) else RunSet.of(records, problems)
    notes = {**runs.notes, **(notes or {})}
    parts = [_header(runs.records, runs.problems)]
    tables = decide(runs, unsupported)
    if not tables:
        parts.append("No runs recorded yet.")
    parts += [format_table(table, (links or {}).get(key, []), notes.get(key, [])) for key, table in tables.items()]
    for key in sorted(set(notes) - set(tables)):  # a tuning with nothing to report still says so
        parts.append(f"### {key.label} (preset: {key.preset}; budget: {key.budget_text})\n\n" + " ".join(notes[key]))
    if tables:
        legend = [LEGEND]
        legend += [LEGEND_GRADIENT] if any(t.has_gradient for t in tables.values()) else []
        legend += [LEGEND_BIAS] if any(t.has_bias for t in tables.values()) else []
        legend += [LEGEND_PATHS] if not all(t.eager_only for t in tables.values()) else []
        parts.append(" ".join(legend))
    return "\n\n".join(parts) + "\n"


def plot_links(runs_dir: str | Path, out_path: str | Path, key: TableKey) -> list[tuple[str, str]]:
    """(title, relative link) for the PNGs ``gradbench plot`` wrote for this table, if any."""
    folder = Path(runs_dir) / key.task / "plots"
    base = Path(out_path).resolve().parent
    links = []
    for png in sorted(folder.glob(f"{key.slug}--*.png")):
        title = png.stem.split("--", 1)[1].replace("_", " ")
        links.append((title, os.path.relpath(png.resolve(), base)))
    return links


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
    runs = RunSet.load(runs_dir, relabel)
    check_writable(out_path, bool(runs.records))
    links = {key: plot_links(runs_dir, out_path, key) for key in runs.tables()}
    text = render(runs, unsupported, links=links)
    write(out_path, text)
    return text, runs.problems
