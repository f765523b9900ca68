"""What runs took, from their records: per (task, estimator, budget), the number of ok runs, mean steps/s,
training seconds and wall seconds (start to end, evaluation and gradient statistics included), as the
markdown table docs/performance.md quotes for long studies.

    python scripts/run_timings.py [--runs results] [--preset paper] [--tasks classify,autoencode,vae,sort]
                                  [--since 2026-12-07T16:00] [--until ...]

Learning rates are left out of the task label, so a tuning grid's points share a row.
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from datetime import datetime

from gradbench.budget import budget_words
from gradbench.results import RunSet


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.rstrip("Z")) if text else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="results")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--tasks", default="classify,autoencode,vae,sort", help="comma-separated task names")
    parser.add_argument("--since", help="only runs that started at or after this UTC time (ISO)")
    parser.add_argument("--until", help="only runs that ended at or before this UTC time (ISO)")
    args = parser.parse_args()
    tasks = set(args.tasks.split(","))
    since, until = _time(args.since), _time(args.until)
    rows: dict[tuple[str, str, str], list[tuple[float, float, float]]] = defaultdict(list)
    spans: list[tuple[datetime, datetime]] = []
    for r in RunSet.collect(args.runs):
        start, end = _time(r.provenance.start_utc), _time(r.provenance.end_utc)
        if (not r.ok or r.preset != args.preset or r.task not in tasks or start is None or end is None
                or (since and start < since) or (until and end > until)):
            continue
        task = re.sub(r"(, )?lr=[^,)]*", "", r.stored_task_label).replace("()", "").replace("(, ", "(")
        rows[(task, r.stored_label, budget_words(r.budget))].append(
            (r.steps_per_s or 0.0, r.train_seconds, (end - start).total_seconds()))
        spans.append((start, end))
    print("| task | estimator | budget | runs | steps/s | training s | wall s (with evaluation) |")
    print("|---|---|---|---|---|---|---|")
    for (task, est, budget), v in sorted(rows.items()):
        n = len(v)
        print(f"| {task} | {est} | {budget} | {n} | {sum(x[0] for x in v) / n:.0f} | "
              f"{sum(x[1] for x in v) / n:.0f} | {sum(x[2] for x in v) / n:.0f} |")
    if spans:
        first, last = min(s for s, _ in spans), max(e for _, e in spans)
        print(f"\n{len(spans)} runs, {first:%Y-%m-%d %H:%M}-{last:%H:%M} UTC")


if __name__ == "__main__":
    main()
