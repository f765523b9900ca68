"""Sweep throughput: runs per minute for a small toy grid run in one process (no executor), through the
local pool with 1 and 2 workers, and through a local Ray instance with 2 workers; the overhead per
run of each backend against the in-process runs. Every variant writes to a fresh folder.

    python benchmarks/sweep_throughput.py [--steps 500] [--seeds 0-3]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from gradbench.runner import execute
from gradbench.sweep import expand, make_executor, parse_seeds, run_sweep

ESTIMATORS = "reinforce,ste,gumbel"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seeds", default="0-3")
    args = parser.parse_args()
    grid = expand("toy", ESTIMATORS, parse_seeds(args.seeds), steps=args.steps)
    n = len(grid.specs)
    print(f"toy quick x {{{ESTIMATORS}}} x seeds {args.seeds}, {args.steps} steps: {n} runs")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        start = time.perf_counter()
        for spec in grid.specs:
            execute(spec, device="cpu", runs_dir=f"{d}/inproc")
        base = time.perf_counter() - start
        rows.append(("in-process, sequential", base))
        for backend, workers in (("local", 1), ("local", 2), ("ray", 2)):
            try:
                executor = make_executor(backend, workers, None, "cpu")
            except Exception as e:  # e.g. Ray not installed
                print(f"{backend} x{workers}: skipped ({e})")
                continue
            start = time.perf_counter()
            run_sweep(grid, f"{d}/{backend}{workers}", executor, device="cpu", progress=False)
            rows.append((f"{backend}, {workers} worker(s)", time.perf_counter() - start))
    print(f"{'backend':<26}{'seconds':>9}{'runs/min':>10}{'overhead/run vs in-process':>29}")
    for name, seconds in rows:
        workers = 2 if "2" in name else 1
        overhead = (seconds * workers - base) / n  # worker-seconds beyond the in-process cost, per run
        print(f"{name:<26}{seconds:>9.1f}{60 * n / seconds:>10.1f}{overhead:>27.2f} s")


if __name__ == "__main__":
    main()
