"""How fast steps run on each execution path, side by side in one process, through the harness (gradient
statistics off): steady-state steps/s of each estimator on ``sort``, eager against the accelerated path
(``graph`` on CUDA, ``compile`` on a CPU), and batched seeds (``--batch-seeds``: S replicas per step) on
the accelerated path where it applies; on CUDA also peak GPU memory and, with ``--target``, the time
``dab`` takes to reach 94.2% all-or-none on 10-sort.

    python benchmarks/accel_speed.py [--preset paper] [--steps 300] [--seeds 5] [--device cpu|cuda]
                                     [--target] [--target-steps 500000] [--target-lr 1e-3]

Steady state: from the first log row at or after step 50 to the last (so compilation, CUDA-graph
warm-up and capture are excluded; they are printed as "setup s"). "5 seeds / 1 seed" is the wall time of
one batched step over one single-seed step on the same path: 1.0 would mean the extra seeds are free.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from tabulate import tabulate

from gradbench.execution import pick_device
from gradbench.runner import execute, execute_seeds, resolve

ESTIMATORS = {"sort": ["dab", "ste"], "sort:node=bernoulli": ["gumbel", "reinforce", "relax"]}


def history(record: dict) -> list[dict]:
    return [json.loads(line) for line in Path(record["path"].replace(".json", ".history.jsonl")).open()]


def steady_rate(record: dict) -> float:
    """Steps/s between the first log row at or after step 50 and the last row (training clock)."""
    rows = [r for r in history(record) if "step" in r]
    first = next(r for r in rows if r["step"] >= 50)
    last = rows[-1]
    return (last["step"] - first["step"]) / (last["seconds"] - first["seconds"])


def setup_seconds(record: dict) -> float:
    c = record["cost"]
    return c["first_step_seconds"] + (c.get("capture_seconds") or 0.0)


def speed_table(args: argparse.Namespace, cuda: bool, out: str) -> None:
    fast = "graph" if cuda else "compile"
    rows = []
    for task, estimators in ESTIMATORS.items():
        for est in estimators:
            one = [resolve(task, est, preset=args.preset, steps=args.steps, eval_every=10**9, grad_stats=False)]
            seeds = [resolve(task, est, preset=args.preset, seed=s, steps=args.steps, eval_every=10**9,
                             grad_stats=False) for s in range(args.seeds)]
            got = {}
            for accel in ("none", fast):
                got[accel] = execute(one[0], device=args.device, runs_dir=f"{out}/{accel}", force=True, accel=accel)
            batch_accel = fast if cuda else "none"  # on a CPU compile under vmap is not what is measured here
            batched = execute_seeds(seeds, device=args.device, runs_dir=f"{out}/batch", force=True,
                                    accel=batch_accel, batch=True)
            for rec in [*got.values(), *batched]:
                if rec["status"] != "ok":
                    raise SystemExit(f"{task} {est}: {rec['status']}: {rec['error']}")
            eager, accel_rate = steady_rate(got["none"]), steady_rate(got[fast])
            single_same_path = accel_rate if batch_accel == fast else eager
            is_batched = "seed_batch" in batched[0]
            b_rate = steady_rate(batched[0])
            row = [task, est, round(eager, 1), round(accel_rate, 1), f"{accel_rate / eager:.2f}x",
                   round(setup_seconds(got[fast]), 1), got[fast]["accel"]["used"],
                   f"{single_same_path / b_rate:.2f}x" if is_batched else "not batched"]
            if cuda:
                row += [round(got["none"]["cost"]["peak_memory_mb"]), round(got[fast]["cost"]["peak_memory_mb"]),
                        round(batched[0]["cost"]["peak_memory_mb"])]
            rows.append(row)
    print(f"preset {args.preset}, {args.steps} steps, device {got['none']['provenance']['device_name']}, "
          f"torch {torch.__version__}; batched: {args.seeds} seeds on the {batch_accel} path")
    headers = ["task", "estimator", "eager steps/s", f"{fast} steps/s", "speed-up", "setup s", "path run",
               f"{args.seeds} seeds / 1 seed"]
    if cuda:
        headers += ["peak MiB eager", f"peak MiB {fast}", f"peak MiB {args.seeds} seeds"]
    print(tabulate(rows, headers=headers, tablefmt="github"))


def time_to_target(args: argparse.Namespace, out: str) -> None:
    """dab on 10-sort (paper preset) at lr ``--target-lr`` with the cosine schedule over ``--target-steps``:
    the training time at which an evaluation first reaches 94.2% all-or-none."""
    spec = resolve("sort", "dab", preset="paper", steps=args.target_steps, eval_every=args.target_eval_every,
                   grad_stats=False, lr_schedule="cosine", task_config={"lr": args.target_lr})
    rec = execute(spec, device=args.device, runs_dir=f"{out}/target", force=True)
    if rec["status"] != "ok":
        raise SystemExit(f"time to target: {rec['status']}: {rec['error']}")
    evals = [(r["step"], r["seconds"], r["test/all_or_none"]) for r in history(rec) if "test/all_or_none" in r]
    hit = next(((step, s) for step, s, acc in evals if acc >= 0.942), None)
    print(f"\ndab, sort paper, lr {args.target_lr} cosine over {args.target_steps} steps, path "
          f"{rec['accel']['used']}: {rec['cost']['steps_per_s']:.0f} steps/s overall, final all-or-none "
          f"{rec['metrics']['all_or_none']['value']:.4f}")
    print("reached 94.2% " + (f"at step {hit[0]}, {hit[1]:.0f} s of training" if hit else "never"))
    print(tabulate([[step, round(s), f"{acc:.4f}"] for step, s, acc in evals],
                   headers=["step", "train s", "all-or-none"], tablefmt="github"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--target", action="store_true", help="also time dab to 94.2%% on 10-sort (CUDA)")
    parser.add_argument("--target-steps", type=int, default=500_000)
    parser.add_argument("--target-eval-every", type=int, default=25_000)
    parser.add_argument("--target-lr", type=float, default=1e-3)
    args = parser.parse_args()
    cuda = pick_device(args.device).type == "cuda"
    with tempfile.TemporaryDirectory() as out:
        speed_table(args, cuda, out)
        if args.target:
            time_to_target(args, out)


if __name__ == "__main__":
    main()
