"""``gradbench plot``: learning curves and gradient variance from run records, as PNGs beside them.

For every leaderboard table (task setting, preset, budget) three figures are written to
``<runs>/<task>/plots/<table>--<figure>.png``: the main test metric against training step and against
training seconds (mean over ok seeds, band = min..max over them), and log10 gradient variance along
training (``grad/log10_variance`` in the history, measured at every evaluation: mean over ok seeds, band
min..max) with the gradient checkpoints' values as markers. ``gradbench leaderboard`` links the PNGs it
finds under each table.

Failures never vanish from a figure: a row's legend label counts its failed and diverged seeds
(``dab (3/5 ok; 2/5 diverged)``), and each such run's own partial curve is drawn dashed, ending in an
``x`` at its last logged evaluation.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from gradbench.results import TRACE, Metric, Record, Relabel, Row, RunSet, Table, TableKey, columns
from gradbench.results.record import finite


def row_label(label: str, records: Iterable[Record]) -> str:
    """A row's legend label: ``dab (n=5)`` when every seed finished ok, else the failures counted,
    ``dab (3/5 ok; 2/5 diverged)``."""
    statuses = Counter(r.status for r in records)
    total, ok = sum(statuses.values()), statuses.pop("ok", 0)
    if not statuses:
        return f"{label} (n={ok})"
    return f"{label} ({ok}/{total} ok; " + ", ".join(f"{c}/{total} {st}" for st, c in sorted(statuses.items())) + ")"


def _partial(runs_dir: Path, record: Record, key: str, x_key: str) -> tuple[list[float], list[float]]:
    """One run's own (x, value) points of history ``key`` (finite values only), in step order."""
    points = record.series(runs_dir, key, x_key)
    return [x for _, x, _ in points], [v for _, _, v in points]


def curves(runs_dir: Path, records: list[Record], key: str, x_key: str = "step"
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """x, mean, min, max over seeds of history ``key`` (e.g. ``test/<metric>``), at the evaluation steps
    every seed has (a history made before step-0 evaluations were logged starts later; x is the seeds'
    mean ``x_key`` there)."""
    series = [points for r in records if (points := {s: (x, v) for s, x, v in r.series(runs_dir, key, x_key)})]
    steps = sorted(set.intersection(*(set(s) for s in series))) if series else []
    if not steps:
        return None
    xs = np.array([[s[k][0] for k in steps] for s in series], float).mean(0)
    ys = np.array([[s[k][1] for k in steps] for s in series], float)
    return xs, ys.mean(0), ys.min(0), ys.max(0)


def _figure(title: str, xlabel: str, ylabel: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.axes[0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _draw_row(ax: Any, runs_dir: Path, row: Row, color: str, metric: Metric, x_key: str) -> bool:
    """One row's curve (mean over ok seeds, band min..max) and each failed or diverged run's partial curve,
    dashed, ending in an ``x``; the legend label on the first thing drawn. Whether anything was drawn."""
    label = row_label(row.label, row.records.values())
    ok = row.ok()
    key = metric.trace[0]
    c = curves(runs_dir, ok, key, x_key) if ok else None
    if c is not None:
        x, mean, lo, hi = c
        ax.plot(x, mean, color=color, label=label, lw=1.5)
        ax.fill_between(x, lo, hi, color=color, alpha=0.15)
        label = None
    drawn = c is not None
    for r in row.records.values():
        if r.ok:
            continue
        xs, ys = _partial(runs_dir, r, key, x_key)
        if xs:
            ax.plot(xs, ys, color=color, lw=1.0, ls="--", alpha=0.8, label=label)
            ax.plot(xs[-1:], ys[-1:], color=color, marker="x", ms=9, mew=2, ls="none")
            label, drawn = None, True
    if label is not None and row.records:  # nothing to draw: the row still shows in the legend
        ax.plot([], [], color=color, label=label)
    return drawn


def plot_table(runs_dir: Path, key: TableKey, rows: Table, folder: Path | None = None) -> list[Path]:
    """The three figures of one table, in ``folder`` (default: ``<runs>/<task>/plots``); returns the paths
    written."""
    main, metrics = columns(r for row in rows.values() for r in row.records.values())
    metric = next((m for m in metrics if m.name == main), None)
    if metric is None:
        return []
    colors = {label: f"C{i % 10}" for i, label in enumerate(sorted(rows))}
    folder = runs_dir / key.task / "plots" if folder is None else Path(folder)
    what = f"{key.label} ({key.preset})"
    higher = metric.higher_is_better
    better = "" if higher is None else f" ({'higher' if higher else 'lower'} is better)"
    written = []
    for x_key, xlabel, name in (("step", "training step", "curve_by_step"),
                                ("seconds", "training seconds", "curve_by_time")):
        fig, ax = _figure(f"{what}: test {metric.name}{better}\nmean over ok seeds, band min..max; "
                          f"dashed, ending in x: a failed or diverged run", xlabel, metric.name)
        for label in sorted(rows):
            _draw_row(ax, runs_dir, rows[label], colors[label], metric, x_key)
        written.append(_save(fig, folder / f"{key.slug}--{name}.png"))

    written += _variance_figure(runs_dir, rows, colors, what, folder / f"{key.slug}--gradient_variance.png")
    return written


def _by_step(points: Iterable[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, min, max) of (step, value) points, over the seeds that measured each step."""
    by: dict[float, list[float]] = defaultdict(list)
    for step, v in points:
        by[step].append(v)
    steps = sorted(by)
    vals = [by[s] for s in steps]
    return (np.array(steps, float), np.array([np.mean(v) for v in vals]), np.array([min(v) for v in vals]),
            np.array([max(v) for v in vals]))


def _checkpoint_points(records: list[Record]) -> list[tuple[float, float]]:
    return [(float(p.step), v) for r in records for p in r.checkpoints
            if (v := finite(p.stat("log10_variance"))) is not None and finite(p.step) is not None]


def _trace_points(runs_dir: Path, records: list[Record]) -> list[tuple[float, float]]:
    return [pt for r in records for pt in zip(*_partial(runs_dir, r, TRACE, "step"), strict=True)]


def _variance_figure(runs_dir: Path, rows: Table, colors: dict[str, str], what: str,
                     path: Path) -> list[Path]:
    """log10 gradient variance per row: along training from the history (line, band min..max over ok
    seeds) and at the checkpoints (markers; joined by a line when the history has no trace, as in records
    made before it was logged). Written only when some row measured it."""
    fig, ax = _figure(f"{what}: log10 gradient variance of the encoder\nline: every evaluation, mean over ok "
                      "seeds, band min..max; markers: checkpoints", "training step", "log10 per-parameter variance")
    plotted = False
    for label in sorted(rows):
        ok, color = rows[label].ok(), colors[label]
        trace, points = _trace_points(runs_dir, ok), _checkpoint_points(ok)
        name = row_label(label, rows[label].records.values())
        if trace:
            x, mean, lo, hi = _by_step(trace)
            ax.plot(x, mean, color=color, lw=1.5, label=name)
            ax.fill_between(x, lo, hi, color=color, alpha=0.15)
            name = None
        if points:
            x, mean, lo, hi = _by_step(points)
            ax.plot(x, mean, color=color, marker="o", ls="none" if trace else "-", lw=1.0, label=name)
            if not trace:
                ax.fill_between(x, lo, hi, color=color, alpha=0.15)
        plotted = plotted or bool(trace or points)
    if plotted:
        return [_save(fig, path)]
    import matplotlib.pyplot as plt

    plt.close(fig)
    return []


def plot(runs_dir: str | Path, task: str | None = None, relabel: Relabel | None = None) -> list[Path]:
    """Every table's figures (or only ``task``'s); returns the PNG paths. ``relabel`` names rows as the
    leaderboard does (``compare.registry_label``), so old and new labels of one config share a line."""
    runs_dir = Path(runs_dir)
    tables = RunSet.load(runs_dir, relabel).tables()  # tuned tables too, as the leaderboard's
    written: list[Path] = []
    for key, rows in sorted(tables.items()):
        if task is None or key.task == task:
            written += plot_table(runs_dir, key, rows)
    return written


def sides_figure(runs_dir: Path, sides: dict[str, list[Record]], key: str, title: str, ylabel: str,
                 path: Path) -> Path | None:
    """History ``key`` against training step for each side (mean over its ok seeds, band min..max), e.g.
    a study claim's two estimators; None when no side logged it."""
    fig, ax = _figure(title, "training step", ylabel)
    drawn = False
    for i, (label, recs) in enumerate(sides.items()):
        ok = [r for r in recs if r.ok]
        c = curves(runs_dir, ok, key) if ok else None
        if c is not None:
            x, mean, lo, hi = c
            ax.plot(x, mean, color=f"C{i}", lw=1.5, label=row_label(label, recs))
            ax.fill_between(x, lo, hi, color=f"C{i}", alpha=0.15)
            drawn = True
    if drawn:
        return _save(fig, path)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return None
