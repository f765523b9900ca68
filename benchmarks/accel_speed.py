"""Steps/s of each estimator, eager against ``--accel compile``, side by side in one process, through the
harness (gradient statistics off). The compile column excludes the first step (the compilation), which
is printed separately: compile pays off only once a run is long enough to amortise it.

    python benchmarks/accel_speed.py [--preset quick] [--steps 300] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import tempfile

from tabulate import tabulate

from gradbench.runner import execute, resolve

ESTIMATORS = {"sort": ["dab", "ste"], "sort:node=bernoulli": ["gumbel", "reinforce", "relax"]}


def steady_rate(record: dict) -> float:
    """Steps/s after the first step (which carries compilation)."""
    c = record["cost"]
    return (c["steps"] - 1) / (c["train_seconds"] - c["first_step_seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for task, estimators in ESTIMATORS.items():
            for est in estimators:
                spec = resolve(task, est, preset=args.preset, steps=args.steps, eval_every=10**9, grad_stats=False)
                got = {}
                for accel in ("none", "compile"):
                    rec = execute(spec, device=args.device, runs_dir=f"{d}/{accel}", force=True, accel=accel)
                    if rec["status"] != "ok":
                        raise SystemExit(f"{task} {est} {accel}: {rec['status']}: {rec['error']}")
                    got[accel] = rec
                eager, comp = steady_rate(got["none"]), steady_rate(got["compile"])
                rows.append([task, est, round(eager, 1), round(comp, 1), f"{comp / eager:.2f}x",
                             round(got["compile"]["cost"]["first_step_seconds"], 1), got["compile"]["accel"]["used"]])
    device = got["none"]["provenance"].get("device")
    print(f"preset {args.preset}, {args.steps} steps, device {device}")
    print(tabulate(rows, headers=["task", "estimator", "eager steps/s", "compile steps/s", "speed-up",
                                  "compile s (first step)", "path run"], tablefmt="github"))


if __name__ == "__main__":
    main()
