"""Side-by-side figures for the papers' own comparisons that a CPU can run (docs/estimators.md quotes them).

    python benchmarks/paper_comparisons.py variance [--steps 2000] [--draws 200]
    python benchmarks/paper_comparisons.py reinmax [--steps 2000] [--seeds 0-2]

``variance``: DisARM against ARM (and 2-sample REINFORCE-LOO, the DisARM paper's "strong independent sample
baseline"), and MuProp against NVIL and REBAR (the REBAR README's log-variance ordering), at the *same*
parameters: one linear Bernoulli VAE (the ``vae`` quick preset: digits, 200 latents) is trained with
DisARM; at checkpoints every estimator draws K gradient estimates of the encoder's parameters on the
task's fixed minibatch (gradbench.gradstats.gradient_draws, the harness's own protocol), and the
per-parameter variance averaged over parameters is printed as log10. Estimators with parameters of their
own (NVIL's baseline network, REBAR's eta and tau) train them along the same trajectory through their
aux_loss, each with its own optimizer, so their variance is the one they would have at that point.

``reinmax``: ReinMax against straight-through Gumbel-Softmax (``gumbel:hard=true``) and ST-Bernoulli
(``ste:variant=prob``) trained on the same VAE, Bernoulli and categorical (30 variables of 10 classes, the
Gumbel-Softmax notebook's latent space), test ELBO after ``--steps`` steps, mean over seeds.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import torch

import gradbench
from gradbench import gradstats
from gradbench.registry import get_estimator_class, get_task_class

VARIANCE_ESTIMATORS = [("arm", {}), ("disarm", {}), ("reinforce", {"baseline": "rloo", "samples": 2}),
                       ("muprop", {}), ("nvil", {}), ("relax", {"variant": "rebar"})]


def _make(task, name: str, values: dict):
    cls = get_estimator_class(name)
    return cls(task.node, cls.make_config(values))


def variance(steps: int, draws: int, checkpoints: list[int], seed: int = 0) -> None:
    torch.manual_seed(seed)
    task_cls = get_task_class("vae")
    task = task_cls(task_cls.make_config({}, "quick"))
    driver = _make(task, "disarm", {})
    opt = torch.optim.Adam(task.parameters(), lr=task.config.lr)
    shadows = [(name, values, _make(task, name, values)) for name, values in VARIANCE_ESTIMATORS]
    shadow_opts = {name: torch.optim.Adam(est.parameters(), lr=getattr(est.config, "lr", 1e-3))
                   for name, _, est in shadows if any(p.requires_grad for p in est.parameters())}
    labels = [get_estimator_class(n).label_for(get_estimator_class(n).make_config(v)) for n, v, _ in shadows]
    print(f"vae quick (digits, linear, 200 Bernoulli latents), trained by disarm; K = {draws} draws on the "
          f"fixed batch; log10 of the per-parameter variance of the encoder gradient, averaged over parameters")
    print("| step | " + " | ".join(labels) + " | disarm / arm | P(b = b~) |")
    print("|---" * (len(labels) + 3) + "|")
    t0 = time.perf_counter()
    for step in range(steps + 1):
        if step in checkpoints:
            row = []
            for i, (_, _, est) in enumerate(shadows):
                g, _ = gradstats.gradient_draws(est, task, draws, seed=1000 + i)
                row.append(float(g.double().var(0).mean()))
            ratio = row[1] / row[0]
            with torch.no_grad():  # how often DisARM's pair agrees (its estimate is then 0): |2 sigma - 1|
                agree = float((2 * torch.sigmoid(task.fixed_batch()[0]) - 1).abs().mean())
            print(f"| {step} | " + " | ".join(f"{math.log10(v):.2f}" for v in row) + f" | {ratio:.3f} | {agree:.2f} |",
                  flush=True)
        if step == steps:
            break
        logits, cost_fn = task.train_batch()
        out = driver(logits, cost_fn)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        for name, _, est in shadows:  # the estimators' own parameters follow the same trajectory
            if name in shadow_opts:
                logits, cost_fn = task.train_batch()
                shadow_opts[name].zero_grad()
                est(logits.detach(), cost_fn).aux_loss.backward()
                shadow_opts[name].step()
                task.zero_grad()
    print(f"({time.perf_counter() - t0:.0f} s; torch {torch.__version__}, {torch.get_num_threads()} threads)")


def toy_ratio(draws: int = 20000) -> None:
    """DisARM / ARM variance on the 100-unit toy f(b) = sum_i (b_i - 0.45)^2 with every logit at x: DisARM's
    estimate is 0 where its pair agrees (probability |2 sigma(x) - 1|), so its advantage grows with |x|."""
    from gradbench import Node

    node = Node("bernoulli", (100,))
    print(f"toy, 100 units, t = 0.45, {draws} draws: variance of the estimate of d E[f] / d x (per unit)")
    print("| logit x | P(b = b~) | arm | disarm | disarm / arm |")
    print("|---|---|---|---|---|")
    for x in (0.0, 1.0, 2.0, 4.0):
        row = []
        for name in ("arm", "disarm"):
            torch.manual_seed(0)
            cls = get_estimator_class(name)
            logits = torch.full((draws, 100), x, requires_grad=True)
            cls(node, cls.make_config({}))(logits, lambda y: (y - 0.45).pow(2).sum(-1)).loss.backward()
            row.append(float((logits.grad * draws).var(0).mean()))
        agree = abs(2 * torch.sigmoid(torch.tensor(x)).item() - 1)
        print(f"| {x:g} | {agree:.2f} | {row[0]:.3g} | {row[1]:.3g} | {row[1] / row[0]:.3f} |")


def reinmax(steps: int, seeds: list[int]) -> None:
    cases = [("vae", ["reinmax", "gumbel:hard=true", "ste:variant=prob"]),
             ("vae:node=categorical,latents=30", ["reinmax", "gumbel:hard=true", "ste:variant=prob"])]
    print(f"test ELBO (nats) after {steps} steps, quick preset (digits), mean ± sd over seeds {seeds}")
    print("| task | estimator | test ELBO | train ELBO |")
    print("|---|---|---|---|")
    t0, runs = time.perf_counter(), tempfile.mkdtemp(prefix="gradbench-paper-")
    for task, estimators in cases:
        for est in estimators:
            test, train = [], []
            for s in seeds:
                rec = gradbench.run(task, est, seed=s, steps=steps, device="cpu", grad_stats=False, progress=False,
                                    runs=runs)
                assert rec["status"] == "ok", rec["error"]
                test.append(rec["metrics"]["test_elbo"]["value"])
                train.append(rec["metrics"]["train_elbo"]["value"])
            t, r = torch.tensor(test), torch.tensor(train)
            print(f"| {task} | {est} | {t.mean():.2f} ± {t.std():.2f} | {r.mean():.2f} ± {r.std():.2f} |", flush=True)
    print(f"({time.perf_counter() - t0:.0f} s)")
    torch.manual_seed(0)  # how far apart the two backwards are on the Bernoulli model: one fixed batch, one draw
    task_cls = get_task_class("vae")
    task = task_cls(task_cls.make_config({}, "quick"))
    grads = []
    for name, values in (("reinmax", {}), ("ste", {"variant": "prob"})):
        torch.manual_seed(1)
        logits, cost_fn = task.fixed_batch()
        out = _make(task, name, values)(logits, cost_fn)
        grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(out.loss, list(task.encoder.parameters()))]))
    rel = float((grads[0] - grads[1]).norm() / grads[1].norm())
    cos = float(torch.nn.functional.cosine_similarity(grads[0], grads[1], 0))
    print(f"vae at initialisation, one draw on the fixed batch: |g_reinmax - g_ste| / |g_ste| = {rel:.3f}, "
          f"cosine {cos:.4f}")


def _seeds(text: str) -> list[int]:
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    v = sub.add_parser("variance")
    v.add_argument("--steps", type=int, default=2000)
    v.add_argument("--draws", type=int, default=200)
    r = sub.add_parser("reinmax")
    r.add_argument("--steps", type=int, default=2000)
    r.add_argument("--seeds", default="0-2")
    args = parser.parse_args()
    if args.what == "variance":
        toy_ratio()
        variance(args.steps, args.draws, sorted({0, args.steps // 4, args.steps}))
    else:
        reinmax(args.steps, _seeds(args.seeds))


if __name__ == "__main__":
    main()
