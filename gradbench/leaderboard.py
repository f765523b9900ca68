"""The leaderboard: every run record summarised as markdown tables, one per task setting; a view of the
results layer (``gradbench.results``), which reads the records, groups them and decides each table's
statistics and verdicts (``results.ranking``). This module only renders and writes.

Cells are ``mean ± h`` with ``h = t(0.975, n-1) * s / sqrt(n)`` over *seeds* (a 95% CI of the mean
across independent runs, not a standard error over evaluation examples); ``n`` shows ok seeds / seeds
run, and a gradient cell that fewer seeds have says how many (``0.93 ± 0.02 (3/5)``). steps/s is a mean
over runs of one execution path only, never a blend of paths. The header and its counts are made from the
records, so they cannot go stale.

Only the block between the markers in the output file is rewritten, so prose written around it survives.
No torch and no registry import: the caller passes in which estimator/task pairs are unsupported, and
optionally how to relabel a record.
"""

from __future__ import annotations

import os
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
    Outlier,
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
from gradbench.results.header import header
from gradbench.results.ranking import OUTLIER_SDS, ROUNDING_MISMATCH

BEGIN = "<!-- gradbench:leaderboard:begin -->"
END = "<!-- gradbench:leaderboard:end -->"
Links = Mapping[TableKey, list[tuple[str, str]]]
OUTLIER_MARK = "†"  # a cell with an outlier seed (``results.ranking.outlier_seeds``), named under the table
ROUNDING_MARK = "‡"  # a bias flag that float32 rounding alone could raise (``RowStats.flag_may_be_rounding``)


def _metric_cell(stat: tuple[float, float | None, int], row: RowStats, ranked: bool, bold: bool,
                 outliers: Iterable[Outlier] = ()) -> str:
    """``mean ± h``, with why the row is not ranked in this column when it is not: ``(n=1, not ranked)``,
    ``(n=2, 1 non-finite, not ranked)``, ``(outlier seed 1†, not ranked)``, or ``(not ranked)`` for a row
    with failed/diverged seeds."""
    mean, h, n = stat
    if n == 0:
        return fmt.MISSING if row.n_ok == 0 else f"{fmt.MISSING} (non-finite)"
    text = fmt.mean_ci(mean, h)
    why = []
    if n < MIN_RANKED:
        why.append(f"n={n}")
    elif n < row.n_ok:
        why.append(f"n={n}, {row.n_ok - n} non-finite")
    seeds = [str(o.seed) for o in outliers]
    if seeds:
        why.append(f"outlier seed {', '.join(seeds)}{OUTLIER_MARK}")
    if why or not ranked:
        text += f" ({', '.join([*why, 'not ranked'])})"
    return f"**{text}**" if bold else text


def gradient_cell(stat: tuple[float, float | None, int], n_ok: int) -> str:
    """``mean ± h`` of a gradient statistic over the ok seeds that have it, with ``(k/n)`` when only k of the
    row's n ok seeds do (e.g. a cosine that is null where the mean estimate is within noise of zero)."""
    mean, h, n = stat
    if n == 0:
        return fmt.MISSING
    text = fmt.mean_ci(mean, h)
    return text if n >= n_ok else f"{text} ({n}/{n_ok})"


def bias_cell(row: RowStats) -> str:
    """``flagged (p=1.2e-05, Holm 4.8e-05)`` / ``not flagged (p=0.0496, Holm 0.4)``: the row's combined bias
    p and, where it differs, its Holm-adjusted p over the table's rows, which decides the flag; ``k/n
    seeds`` when only k of the row's n ok seeds have a bias test; ``‡`` on a flag float32 rounding could
    raise; ``—`` without a test."""
    if row.bias is None:
        return fmt.MISSING
    p, n = row.bias
    adjusted = row.bias_holm
    holm = "" if adjusted is None or adjusted == p else f", Holm {fmt.pvalue(adjusted, 2)}"
    seeds = "" if n >= row.n_ok else f"; {n}/{row.n_ok} seeds"
    mark = ROUNDING_MARK if row.flag_may_be_rounding else ""
    return f"{'flagged' if row.flagged else 'not flagged'}{mark} (p={fmt.pvalue(p, 2)}{holm}{seeds})"


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
                           label in table.rankings[m.name].bold, s.outliers.get(m.name, ())) for m in table.columns]
    if table.has_gradient:
        cells += [gradient_cell(s.gradient[k], s.n_ok) for k in TABLE_GRADIENT]
    if table.has_bias:
        cells.append(bias_cell(s))
    cells.append(f"{s.n_ok}/{s.n_total}")
    cells.append(fmt.MISSING if s.evals_per_step is None else f"{s.evals_per_step:g}")
    cells.append(speed_cell(s.steps_per_s, table.eager_only))
    if table.has_failed:
        cells.append(", ".join(f"{c} {st}" for st, c in sorted(s.failed.items())))
    return cells


def footnotes(table: TableStats) -> list[str]:
    """The table's footnotes, one per marked row: its outlier seeds (``†``: which seed, in which columns, how
    far) and a bias flag that float32 rounding could raise (``‡``: how close the estimate was)."""
    lines = []
    for label in table.order:
        s = table.rows[label]
        by_seed: dict[str, list[str]] = {}
        for m in table.columns:
            for o in s.outliers.get(m.name, ()):
                by_seed.setdefault(str(o.seed), []).append(
                    f"{m.name} {fmt.num(o.value)} against the row's median {fmt.num(o.median)} (Dixon's Q "
                    f"{o.q:.3f}, {o.sds:.0f} robust SDs)")
        for seed, where in by_seed.items():
            lines.append(f"{OUTLIER_MARK} {fmt.cell(label)}, seed {seed}: {'; '.join(where)}. An outlier seed: the row "
                         f"is not ranked in {'that column' if len(where) == 1 else 'those columns'}.")
        if s.flag_may_be_rounding and s.bias_mismatch is not None:
            lo, hi = s.bias_mismatch
            span = f"{100 * lo:.2g}%" if f"{100 * lo:.2g}" == f"{100 * hi:.2g}" else f"{100 * lo:.2g}-{100 * hi:.2g}%"
            lines.append(f"{ROUNDING_MARK} {fmt.cell(label)}: flagged by float32 bias tests, with the mean estimate "
                         f"{span} of its norm away from the exact gradient: float32 rounding alone can do that "
                         f"near an optimum, where the gradient is a small difference of large costs (IndeCateR, "
                         f"exact for the toy's additive cost, is 3% off in float32 there and 5e-11 in float64; "
                         f"docs/gradient-statistics.md). Records made since test in float64.")
    return lines


def format_table(table: TableStats, links: Iterable[tuple[str, str]] = (), notes: Iterable[str] = ()) -> str:
    """One decided table as markdown: heading, notes (how a tuned table was tuned), the table, its
    footnotes, and links to its plots."""
    main = table.main_metric
    main_text = (main.column if main else table.main) or "none"
    data = f"data: {', '.join(map(fmt.dataset_text, table.datasets))}; " if table.datasets else ""
    heading = (f"### {table.key.label} ({data}preset: {table.key.preset}; budget: {table.key.budget_text}; "
               f"node: {', '.join(table.nodes) or '?'}; main metric: {main_text})")
    body = [_row_cells(table, label) for label in table.order if not table.rows[label].unsupported]
    text = fmt.table(_headers(table), body)
    na = [label for label in table.order if table.rows[label].unsupported]
    if na:  # one line, not a row each: with many estimators, n/a rows would bury the table
        text += f"\n\nn/a (cannot run a {', '.join(table.nodes) or '?'} node): {', '.join(map(fmt.cell, na))}"
    marks = footnotes(table)
    if marks:
        text += "\n\n" + "\n".join(f"- {line}" for line in marks)
    links = list(links)
    if links:
        text += "\n\nPlots: " + ", ".join(f"[{title}]({link})" for title, link in links)
    notes = list(notes)
    return "\n\n".join([heading, *([" ".join(notes)] if notes else []), text])


LEGEND = (
    "Cells: mean ± 95% CI half-width over the ok seeds, t(0.975, n-1)·s/√n. ↑ higher is better, ↓ lower is "
    "better. `n`: ok seeds / seeds run; `failed` counts the failed and diverged runs. Ranking: a row is "
    f"ranked only with ≥ {MIN_RANKED} ok seeds, no failed or diverged seed and no outlier seed in that column; "
    "other rows are shown but never bold (`(n=1, not ranked)`: a single ok seed; `(not ranked)`: some seeds "
    "failed or diverged, and the survivors' mean would flatter the row; `(outlier seed 1†, not ranked)`: "
    "below). Rows are sorted by the main metric, ranked rows first. **Bold**: "
    "the best mean among ranked rows, and every ranked row tied with it: a two-sided t-test at "
    f"α = {ALPHA} gives p ≥ {ALPHA}, paired (scipy.stats.ttest_rel) over the seeds both rows share when "
    f"they share ≥ {MIN_RANKED}, else Welch's (scipy.stats.ttest_ind, equal_var=False). Of two rows that differ "
    f"only by seed noise, the worse is marked not tied with probability ≤ {ALPHA}; among more equal rows the best "
    "is the luckiest, so each other one is unbolded more often (simulated: 0.08 per row for 5 equal rows of 5 "
    f"seeds). {OUTLIER_MARK} An outlier seed, named under the table: at an end of its row (of ≥ 3 seeds), "
    f"Dixon's Q (its gap to the nearest seed / the row's range) above the two-sided 5% point (0.970 at 3 "
    f"seeds, 0.710 at 5) and more than {OUTLIER_SDS:g} robust SDs from the row's median (1.4826 × the median "
    "absolute deviation from the rows' medians, pooled over the table); a row of normal seeds is marked with "
    "probability ≤ 0.05 whatever its spread, 0.002-0.026 when its spread is the table's (simulated). A tie that "
    "rests on one collapsed seed's spread is no tie, so such a row is not ranked in that column. `n/a`: the "
    "estimators that cannot run this task's node. A label ending in `(v2)`: records made with version 2 of "
    "the estimator, not the installed version; they never share a row with the installed version's records "
    "(within a row, the newest record of a seed wins). p-values are printed with the digits it takes to stay "
    "on their side of 0.05 and 0.01 (0.0496, never 0.05)."
)
LEGEND_GRADIENT = (
    "Gradient columns, at the last checkpoint, mean ± CI over the ok seeds that have the figure, `(3/5)` when "
    "only 3 of the row's 5 ok seeds do: log10 of the per-parameter variance "
    "of the encoder's gradient estimate (averaged over parameters); the same per unit of work, log10(variance × "
    "cost evaluations per step), which compares estimators at equal cost (lower is better: an estimator that "
    "evaluates the cost k times per step must cut its variance k-fold to break even); and the debiased cosine "
    "between the mean "
    "estimate and the reference gradient (its norms corrected for the draws' and the reference's noise; "
    "exact reference where the task has one, else a many-sample RLOO estimate; — where there is no "
    "reference, e.g. deterministic nodes, or the mean is within noise of zero, and a seed where it is within "
    "noise is left out of the mean: hence `(3/5)`; — also for tuning grid runs, made without gradient "
    "statistics, where they are a plain table's only runs of a seed)."
)
LEGEND_BIAS = (
    "bias (end): each seed's test of \"E[estimate] = exact gradient\" at the last checkpoint (exact "
    "references only), combined over the row's seeds by Bonferroni, p = min(1, n·min p) (`; 3/5 seeds` when "
    "only 3 of 5 ok seeds have a test), then adjusted by Holm's step-down method over the table's rows "
    f"(`Holm`, shown where it differs); `flagged` when the adjusted p < {BIAS_ALPHA}. The chance that any "
    f"unbiased row of a table is flagged is at most {BIAS_ALPHA}, however many rows it has (without the "
    "adjustment a table of 17 unbiased rows would show about 0.83 false flags); `not flagged` is not proof of "
    f"unbiasedness (small biases need more draws). {ROUNDING_MARK} A flag that float32 rounding alone could "
    "raise: every seed's test ran in float32 (records made before the double-precision bias test) and the mean "
    f"estimate is within {ROUNDING_MISMATCH:.0%} of its norm of the exact gradient on every seed; the footnote "
    "says how close."
)
LEGEND_PATHS = (
    "steps/s: mean over the runs of one execution path, never a blend. A plain number: every run of that "
    "table ran eagerly; otherwise each figure names its path (eager: plain PyTorch; graph: the whole step "
    "replayed as a CUDA graph; compile: torch.compile), and a row whose runs used several paths shows each, "
    "e.g. `136 (eager) / 2400 (graph)`."
)


def render(records: RunSet | Iterable[Record | Mapping[str, object]],
           unsupported: Mapping[str, Iterable[str]] | None = None, problems: Iterable[str] = (),
           links: Links | None = None, notes: Mapping[TableKey, list[str]] | None = None,
           versions: Mapping[str, str] | None = None) -> str:
    """The markdown between the markers: provenance header, one table per task setting, legend.

    ``unsupported`` maps a node kind to estimator names that can't run it, and ``versions`` an estimator
    name to its installed version (for the header); the caller computes both from the registry so this
    module stays free of torch. A RunSet brings its own problems and notes.
    """
    runs = records if isinstance(records, RunSet) else RunSet.of(records, problems)
    notes = {**runs.notes, **(notes or {})}
    parts = [header(runs.records, runs.problems, runs.set_aside, versions)]
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
          relabel: Relabel | None = None, versions: Mapping[str, str] | None = None) -> tuple[str, list[str]]:
    """Collect, render and write the leaderboard; returns (rendered block, problems). ``versions``
    (estimator name -> installed version) shows records of other versions in rows of their own.

    A missing ``runs_dir`` is a UsageError rather than an empty leaderboard written over a real one.
    """
    if not Path(runs_dir).is_dir():
        what = "is not a folder" if Path(runs_dir).exists() else "does not exist"
        raise UsageError(f"runs folder {os.fspath(runs_dir)!r} {what}; pass --runs DIR with the run records")
    runs = RunSet.load(runs_dir, relabel, versions)
    check_writable(out_path, bool(runs.records))
    links = {key: plot_links(runs_dir, out_path, key) for key in runs.tables()}
    text = render(runs, unsupported, links=links, versions=versions)
    write(out_path, text)
    return text, runs.problems
