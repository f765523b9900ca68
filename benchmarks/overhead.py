"""Harness overhead: per-step time of each estimator on ``sort`` (quick) through gradbench's runner
against a hand-written plain PyTorch loop of the same model, data and estimator math, side by side
in one process. Prints ms/step for both and their ratio (target: <= 1.10x).

    python benchmarks/overhead.py [--steps 300] [--repeats 3]

Each case alternates harness and plain runs ``--repeats`` times and reports the medians, so slow
drifts of a shared machine hit both sides alike. Absolute times are noisy; read the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from gradbench import records
from gradbench.spec import resolve
from gradbench.training import Progress, train

L, B, H, D, LR = 5, 256, 128, 256, 3e-3  # the quick preset's sizes


class _NullHistory(records.HistoryWriter):
    def __init__(self) -> None:  # no file
        pass

    def write(self, row) -> None:
        pass

    def close(self) -> None:
        pass


def harness_step_time(task: str, estimator: str, steps: int) -> float:
    spec = resolve(task, estimator, steps=steps, eval_every=steps, grad_stats=False)
    _, cost, _, _ = train([spec], torch.device("cpu"), [_NullHistory()], Progress(spec, enabled=False))[0]
    return cost["train_seconds"] / cost["steps"]


def _mlp(d_in: int, d_out: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                         nn.Linear(hidden, d_out))


def plain_step_time(kind: str, steps: int) -> float:
    """The same model and estimator written out by hand, no gradbench code at all."""
    torch.manual_seed(0)
    layers = [nn.Linear(L, H), nn.Tanh(), nn.Linear(H, H), nn.Tanh(), nn.Linear(H, D)]
    if kind in ("dab", "ste"):
        layers.append(nn.Tanh())
    enc, dec = nn.Sequential(*layers), nn.Linear(D, L * L)
    params = [*enc.parameters(), *dec.parameters()]
    extra: list[nn.Parameter] = []
    if kind == "dab":
        approx = _mlp(D, D, 128)
        extra = list(approx.parameters())
    if kind == "relax":
        log_tau, eta = nn.Parameter(torch.tensor(0.5).log()), nn.Parameter(torch.tensor(1.0))
        cv_net = nn.Sequential(nn.Linear(D, 64), nn.ReLU(), nn.Linear(64, 1))
        extra = [log_tau, eta, *cv_net.parameters()]
    groups = [{"params": params, "lr": LR}] + ([{"params": extra, "lr": 1e-2 if kind == "relax" else LR}]
                                               if extra else [])
    opt = torch.optim.Adam(groups)

    def cost(y, target):
        logits = dec(y).unflatten(-1, (L, L))
        t = target.expand(*logits.shape[:-1])
        return F.cross_entropy(logits.flatten(0, -2), t.flatten(), reduction="none").view(t.shape).sum(-1)

    def uniform(shape):
        return torch.rand(shape).clamp(1e-6, 1 - 1e-6)

    start = time.perf_counter()
    for _ in range(steps):
        x = torch.rand(B, L)
        target = x.argsort(-1)
        h = enc(x)
        aux = torch.zeros(())
        if kind in ("dab", "ste"):
            hard = (h.detach() > 0.5).float() - (h.detach() < -0.5).float()
            if kind == "ste":
                loss = cost(hard + h - h.detach(), target).mean()
            else:
                g = functional_call(approx, {k: v.detach() for k, v in approx.named_parameters()}, (h,))
                loss = cost(hard + g - g.detach(), target).mean()
                aux = 10 * (approx(h.detach()) - hard).pow(2).sum(-1).mean()
        elif kind == "gumbel":
            z = h + torch.logit(uniform(h.shape))
            loss = cost(torch.sigmoid(z), target).mean()
        elif kind == "reinforce":
            b = (h.detach() + torch.logit(uniform((2, *h.shape))) > 0).float()
            f = cost(b, target)
            fd = f.detach()
            logp = (b * F.logsigmoid(h) + (1 - b) * F.logsigmoid(-h)).sum(-1)
            loss = (f + (fd - fd.flip(0)) * (logp - logp.detach())).mean()
        else:  # relax
            xd = h.detach().requires_grad_(True)
            z = xd + torch.logit(uniform(h.shape))
            b = (z.detach() > 0).float()
            theta = torch.sigmoid(xd)
            v = uniform(h.shape)
            zt = xd + torch.logit((b * (1 - theta + v * theta) + (1 - b) * v * (1 - theta)).clamp(1e-6, 1 - 1e-6))
            f = cost(b, target)

            def c(zz, target=target):
                soft = torch.sigmoid(zz / log_tau.exp())
                return eta * cost(soft, target) + cv_net(soft).squeeze(-1)

            c_zt = c(zt)
            (rep,) = torch.autograd.grad((c(z) - c_zt).sum(), xd, create_graph=True)
            g = (f.detach() - c_zt)[:, None] * (b - theta) + rep
            var = g.pow(2).sum(-1).mean()
            grads = torch.autograd.grad(var, extra)
            lin = (h * g.detach()).sum(-1).mean()
            loss = f.mean() + lin - lin.detach()
            aux = sum((p * gp).sum() for p, gp in zip(extra, grads, strict=True))
        opt.zero_grad(set_to_none=True)
        (loss + aux).backward()
        opt.step()
    return (time.perf_counter() - start) / steps


CASES = [("sort", "dab", "dab"), ("sort", "ste", "ste"), ("sort:node=bernoulli", "gumbel", "gumbel"),
         ("sort:node=bernoulli", "reinforce", "reinforce"), ("sort:node=bernoulli", "relax", "relax")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps x {args.repeats} repeats")
    print(f"{'task':<22}{'estimator':<12}{'harness ms/step':>17}{'plain ms/step':>15}{'ratio':>8}")
    for task, est, kind in CASES:
        harness_step_time(task, est, 20)  # warm-up
        plain_step_time(kind, 20)
        h, p = [], []
        for _ in range(args.repeats):
            h.append(harness_step_time(task, est, args.steps))
            p.append(plain_step_time(kind, args.steps))
        mh, mp = statistics.median(h), statistics.median(p)
        print(f"{task:<22}{est:<12}{mh * 1e3:>17.2f}{mp * 1e3:>15.2f}{mh / mp:>7.2f}x", flush=True)


if __name__ == "__main__":
    main()
