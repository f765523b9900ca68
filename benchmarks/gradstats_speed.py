"""Gradient statistics: K draws batched (one estimator call, one batched backward) against the naive loop
(K calls and K backward passes), side by side in one process. Prints seconds and the speed-up
(target: >= 5x at K = 1000).

    python benchmarks/gradstats_speed.py [--draws 1000]
"""

from __future__ import annotations

import argparse
import time

import torch

from gradbench import gradstats
from gradbench.registry import get_estimator_class, get_task_class

CASES = [("toy", {}, "reinforce", {}), ("toy", {}, "relax", {}), ("toy", {}, "gumbel", {}),
         ("sort", {}, "dab", {}), ("sort", {}, "ste", {}), ("sort", {"node": "bernoulli"}, "reinforce", {}),
         ("sort", {"node": "bernoulli"}, "relax", {}), ("vae", {}, "reinforce", {}), ("vae", {}, "gumbel", {}),
         ("vae", {}, "relax", {})]


def timed(est, task, draws: int, batched: bool) -> float:
    start = time.perf_counter()
    gradstats.gradient_draws(est, task, draws, seed=0, batched=batched)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=1000)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, K = {args.draws} draws, quick presets")
    print(f"{'task':<22}{'estimator':<12}{'batched s':>11}{'loop s':>10}{'speed-up':>10}")
    for task_name, task_cfg, est_name, est_cfg in CASES:
        torch.manual_seed(0)
        task_cls = get_task_class(task_name)
        task = task_cls(task_cls.make_config({**task_cfg, "test_size": 100} if task_name == "sort" else task_cfg))
        cls = get_estimator_class(est_name)
        est = cls(task.node, cls.make_config(est_cfg))
        gradstats.gradient_draws(est, task, 5, seed=0)  # warm-up
        batched = timed(est, task, args.draws, batched=True)
        loop = timed(est, task, args.draws, batched=False)
        label = task_name + ("(node=bernoulli)" if task_cfg else "")
        print(f"{label:<22}{est_name:<12}{batched:>11.2f}{loop:>10.2f}{loop / batched:>9.1f}x", flush=True)


if __name__ == "__main__":
    main()
