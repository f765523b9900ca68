"""``gradbench plot``: learning curves and gradient variance from run records, as PNGs beside them.

For every leaderboard table (task setting, preset, budget) three figures are written to
``<runs>/<task>/plots/<table>--<figure>.png``: the main test metric against training step and against
training seconds (mean over seeds, band = min..max over seeds), and log10 gradient variance at the
gradient checkpoints. ``gradbench leaderboard`` links the PNGs it finds under each table.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from gradbench.leaderboard import TableKey, collect, group, table_slug
from gradbench.records import history_path, read_history, record_path


def _history(runs_dir: Path, record: dict[str, Any]) -> list[dict[str, Any]]:
    return read_history(history_path(record_path(runs_dir, record["task"]["name"], record["estimator"]["name"],
                                                 record["run_id"])))


def _curves(runs_dir: Path, records: list[dict[str, Any]], metric: str, x_key: str
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """x, mean, min, max over seeds of ``test/<metric>``, at the evaluation steps every seed has (a history
    made before step-0 evaluations were logged starts later; x is the seeds' mean ``x_key`` there)."""
    series = []
    for r in records:
        rows = {h["step"]: h for h in _history(runs_dir, r) if h.get(f"test/{metric}") is not None}
        if rows:
            series.append(rows)
    steps = sorted(set.intersection(*(set(s) for s in series))) if series else []
    if not steps:
        return None
    xs = np.array([[s[k][x_key] for k in steps] for s in series], float).mean(0)
    ys = np.array([[s[k][f"test/{metric}"] for k in steps] for s in series], float)
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


def plot_table(runs_dir: Path, key: TableKey, rows: dict[str, Any]) -> list[Path]:
    """The three figures of one table; returns the paths written."""
    ok = {label: row.ok() for label, row in rows.items() if row.ok()}
    if not ok:
        return []
    first = next(iter(ok.values()))[0]
    metric = first["main_metric"]
    higher = first["metrics"][metric]["higher_is_better"]
    slug = table_slug(key)
    folder = runs_dir / key[0] / "plots"
    what = f"{key[2]} ({key[1]})"
    written = []
    for x_key, xlabel, name in (("step", "training step", "curve_by_step"),
                                ("seconds", "training seconds", "curve_by_time")):
        fig, ax = _figure(f"{what}: test {metric} ({'higher' if higher else 'lower'} is better); "
                          f"mean over seeds, band min..max", xlabel, metric)
        for label, recs in sorted(ok.items()):
            c = _curves(runs_dir, recs, metric, x_key)
            if c is not None:
                x, mean, lo, hi = c
                line, = ax.plot(x, mean, label=f"{label} (n={len(recs)})", lw=1.5)
                ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15)
        written.append(_save(fig, folder / f"{slug}--{name}.png"))

    written += _variance_figure(ok, what, folder / f"{slug}--gradient_variance.png")
    return written


def _variance_figure(ok: dict[str, list[dict[str, Any]]], what: str, path: Path) -> list[Path]:
    """log10 gradient variance at the checkpoints, per row (written only when some row measured it)."""
    fig, ax = _figure(f"{what}: gradient variance of the encoder at checkpoints; mean over seeds, band min..max",
                      "training step", "log10 per-parameter variance")
    plotted = False
    for label, recs in sorted(ok.items()):
        by_step: dict[int, list[float]] = defaultdict(list)
        for r in recs:
            for point in (r.get("gradient") or {}).get("checkpoints") or []:
                if point.get("log10_variance") is not None:
                    by_step[int(point["step"])].append(float(point["log10_variance"]))
        if by_step:
            steps = sorted(by_step)
            vals = [by_step[s] for s in steps]
            line, = ax.plot(steps, [np.mean(v) for v in vals], marker="o", label=label, lw=1.5)
            ax.fill_between(steps, [min(v) for v in vals], [max(v) for v in vals], color=line.get_color(), alpha=0.15)
            plotted = True
    if plotted:
        return [_save(fig, path)]
    import matplotlib.pyplot as plt

    plt.close(fig)
    return []


def plot(runs_dir: str | Path, task: str | None = None) -> list[Path]:
    """Every table's figures (or only ``task``'s); returns the PNG paths."""
    runs_dir = Path(runs_dir)
    records, _ = collect(runs_dir)
    written: list[Path] = []
    for key, rows in sorted(group(records).items()):
        if task is None or key[0] == task:
            written += plot_table(runs_dir, key, rows)
    return written
