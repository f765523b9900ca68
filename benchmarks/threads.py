"""The thread policy on a busy machine: the targets of docs/performance.md, measured side by side.

1. The main job (``gradbench run --estimator dab --task sort``, quick preset) with one other core busy
   (a spinning process), against the same job on the machine as it is; under the policy (the default
   environment) and, for contrast, with torch's old default of one thread per core (``--threads N``).
   Target: the policy's busy/idle ratio within 1.5.
2. ``gradbench sweep --workers 1`` against ``gradbench run`` on the same spec: steps/s ratio.
   Target: the sweep within 1/1.5 of run.

Each measurement is a fresh CLI process (the user's view), its steps/s read from the record it wrote.
Absolute times on a shared machine are noisy; compare the ratios, which are measured in one sitting.

    python benchmarks/threads.py [--steps 1000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GB = [sys.executable, "-m", "gradbench.cli"]


def _env() -> dict[str, str]:
    """The default environment: no OMP_NUM_THREADS, so the policy's own default applies."""
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    return env


def timed(args: list[str], runs: Path) -> tuple[float, float]:
    """(wall seconds, steps/s from the record) of one CLI command writing into a fresh ``runs``."""
    t0 = time.perf_counter()
    proc = subprocess.run(GB + args + ["--runs", str(runs), "--no-progress", "--no-grad-stats"], env=_env(),
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {proc.stderr[-1000:]}")
    (path,) = [p for p in runs.glob("*/*/*.json")]
    return wall, json.loads(path.read_text())["cost"]["steps_per_s"]


class Busy:
    """One other core busy: a process that spins until stopped."""

    def __enter__(self) -> Busy:
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="steps of the main job (its preset: 4000)")
    parser.add_argument("--repeats", type=int, default=2, help="medians over this many runs of each")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    job = ["run", "--task", "sort", "--estimator", "dab", "--steps", str(args.steps)]
    print(f"{cores} cores; main job at {args.steps} steps; medians of {args.repeats}; "
          f"load average before: {os.getloadavg()[0]:.2f}")
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as d:
        for rep in range(args.repeats):  # interleaved, so slow drifts of the machine hit every variant alike
            for name, extra in (("policy", []), (f"{cores} threads", ["--threads", str(cores)])):
                for busy in (False, True):
                    runs = Path(d) / f"{name}-{busy}-{rep}".replace(" ", "")
                    if busy:
                        with Busy():
                            wall, _ = timed(job + extra, runs)
                    else:
                        wall, _ = timed(job + extra, runs)
                    results.setdefault(f"{name}, {'busy' if busy else 'idle'}", []).append(wall)
            spec = ["--task", "sort", "--estimator", "ste", "--steps", str(args.steps)]
            results.setdefault("run steps/s", []).append(timed(["run", *spec], Path(d) / f"run-{rep}")[1])
            sweep = ["sweep", "--tasks", "sort", "--estimators", "ste", "--steps", str(args.steps), "--workers", "1"]
            results.setdefault("sweep --workers 1 steps/s", []).append(timed(sweep, Path(d) / f"sweep-{rep}")[1])
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"\n{'variant':<28}{'median':>10}  (all)")
    for k, v in results.items():
        unit = "" if "steps/s" in k else " s"
        print(f"{k:<28}{med[k]:>9.1f}{unit}  ({', '.join(f'{x:.1f}' for x in v)})")
    policy = med["policy, busy"] / med["policy, idle"]
    old = med[f"{cores} threads, busy"] / med[f"{cores} threads, idle"]
    sweep = med["sweep --workers 1 steps/s"] / med["run steps/s"]
    print(f"\nmain job, busy/idle wall time: policy {policy:.2f} (target <= 1.5), "
          f"{cores} threads {old:.2f}")
    print(f"sweep --workers 1 / run, steps/s: {sweep:.2f} (target >= {1 / 1.5:.2f})")


if __name__ == "__main__":
    main()
