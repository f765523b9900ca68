"""The one formatter of numbers for every report (a mean ± 95% CI, a figure to a few significant digits, a
relative gain, a p-value, a list of seeds) and the one table writer (``table``: markdown through
``tabulate``, or the compact pipe form of prose-heavy markdown tables, or a plain terminal table).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tabulate import tabulate

MISSING = "—"  # a cell without a value
DATASET_WORDS = {"digits": "8x8 digits", "fashion-mnist": "Fashion-MNIST 28x28", "mnist": "MNIST 28x28",
                 "omniglot": "Omniglot 28x28"}  # the image tasks' ``dataset`` setting, as reports name it


def _decimals(ref: float, sig: int) -> int:
    return max(0, sig - 1 - math.floor(math.log10(ref)))


def mean_ci(mean: float, h: float | None) -> str:
    """``0.9312 ± 0.0041``: 4 significant digits of the larger of |mean| and h, both to the same place
    (the tables' form); ``0.5000`` without a half-width."""
    ref = max(abs(mean), h or 0.0)
    if ref == 0:
        return "0" if h is None else "0 ± 0"
    if ref < 1e-3 or ref >= 1e6:
        return f"{mean:.3e}" if h is None else f"{mean:.3e} ± {h:.1e}"
    d = _decimals(ref, 4)
    return f"{mean:.{d}f}" if h is None else f"{mean:.{d}f} ± {h:.{d}f}"


def sig(v: float | None, digits: int = 3) -> str:
    """``v`` to ``digits`` significant digits without exponent notation for everyday sizes (``812``,
    ``81.2``); ``—`` for none or a non-finite value."""
    if v is None or not math.isfinite(v):
        return MISSING
    if v == 0:
        return "0"
    if abs(v) >= 10 ** (digits - 1):
        return f"{round(v, digits - 1 - math.floor(math.log10(abs(v)))):.0f}"
    return f"{v:.{digits}g}"


def num(x: float | None) -> str:
    """``x`` to 4 significant digits (``0.5495``, ``-27.14``); ``—`` for none or a non-finite value."""
    return MISSING if x is None or not math.isfinite(x) else f"{x:.4g}"


def short_mean_ci(mean: float, h: float | None, n: int) -> str:
    """``0.5495 ± 0.023``: the mean to 4 significant digits, the half-width to 2 (the claims report's
    form); ``—`` without a value."""
    if n == 0:
        return MISSING
    return num(mean) + ("" if h is None else f" ± {h:.2g}")


def pct(x: float) -> str:
    """A fraction as a signed percentage (``+8.1%``); ``unbounded`` for an infinite one, ``—`` for NaN."""
    if math.isnan(x):
        return MISSING
    return "unbounded" if not math.isfinite(x) else f"{100 * x:+.1f}%"


LEVELS = (0.05, 0.01)  # the levels reports decide at: a printed p never sits on the wrong side of one


def pvalue(p: float, digits: int = 3, levels: Iterable[float] = LEVELS) -> str:
    """A p-value to ``digits`` significant digits (``0.0213``, ``1.37e-05``), with more digits where
    rounding would carry it across one of ``levels``: 0.0496 at 2 digits is ``0.0496``, never ``0.05``
    (which reads as not below 0.05), and 0.00996 is ``0.00996``, never ``0.01``."""
    if not math.isfinite(p):
        return f"{p}"
    levels = tuple(levels)
    for d in range(digits, 18):
        text = f"{p:.{d}g}"
        if all((float(text) < a) == (p < a) for a in levels):
            return text
    return repr(p)


def arrow(higher_is_better: bool | None) -> str:
    """`` ↑`` / `` ↓``: a metric's better direction after its name; nothing when unknown."""
    if higher_is_better is None:
        return ""
    return " ↑" if higher_is_better else " ↓"


def grid_text(grid: Mapping[str, Any]) -> str:
    """``lr ∈ {1e-4, 3e-4}; tau ∈ {0.5, 1}``: a tuning grid, key by key."""
    return "; ".join(f"{k} ∈ {{{', '.join(map(str, v))}}}" for k, v in grid.items())


def values_text(values: Mapping[str, Any]) -> str:
    """``lr=0.003, tau=0.5``: a setting's keys and values."""
    return ", ".join(f"{k}={v}" for k, v in values.items())


def dataset_text(name: str) -> str:
    """A task's ``dataset`` setting in a report's words (``Fashion-MNIST 28x28``); an unknown one as is."""
    return DATASET_WORDS.get(name, name)


def seeds_text(seeds: Iterable[Any]) -> str:
    """``0-4`` for a run of three or more consecutive seeds, else ``0,2,5``."""
    seeds = sorted(int(s) for s in seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


def cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], style: str = "markdown",
          align: Sequence[str] | None = None, numparse: bool = False) -> str:
    """Rows under headers. ``markdown``: a padded GitHub table (``tabulate``); ``compact``: a markdown table
    without padding, for prose-heavy cells, with ``align`` per column (``l`` or ``r``); ``plain``: a
    terminal table. Cells are shown as given, never re-read as numbers unless ``numparse``."""
    if style == "compact":
        align = align or ["l"] * len(headers)
        rule = "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"
        lines = ["| " + " | ".join(headers) + " |", rule]
        return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])
    fmt = {"markdown": "github", "plain": "simple"}[style]
    return tabulate(list(rows), headers=list(headers), tablefmt=fmt, disable_numparse=not numparse)
