"""Training speed of each estimator on ``vae`` at paper sizes (Fashion-MNIST, 784 pixels, 200 Bernoulli
latents, batch 50): steps/s through the harness and cost evaluations per step, one after another in one
process. Gradient statistics are off and the IW bound uses k=1, so only training is timed (the record's
steps/s already excludes evaluation).

    python benchmarks/vae_speed.py [--steps 500] [--device cpu|cuda] [--arch linear|nonlinear]
"""

from __future__ import annotations

import argparse
import tempfile

from tabulate import tabulate

from gradbench.runner import execute, resolve

ESTIMATORS = ["ste", "dab", "gumbel", "reinforce", "reinforce:baseline=none,samples=1", "relax", "relax:variant=rebar"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--arch", default="linear", choices=["linear", "nonlinear"])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for est in ESTIMATORS:
            spec = resolve("vae", est, preset="paper", steps=args.steps, eval_every=10**9, grad_stats=False,
                           task_config={"arch": args.arch, "iw_samples": 1})
            record = execute(spec, device=args.device, runs_dir=d, force=True)
            if record["status"] != "ok":
                rows.append([est, None, None, record["status"]])
                continue
            c = record["cost"]
            rows.append([est, round(c["steps_per_s"], 1), c["cost_evals_per_step"],
                         round(1000 / c["steps_per_s"], 2)])
    device = record["provenance"].get("device")
    print(f"vae paper sizes (fashion-mnist, {args.arch}, 200 Bernoulli latents, batch 50), {args.steps} steps, "
          f"device {device}")
    print(tabulate(rows, headers=["estimator", "steps/s", "cost evals/step", "ms/step"], tablefmt="github"))


if __name__ == "__main__":
    main()
