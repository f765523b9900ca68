"""Implicit maximum-likelihood estimation, I-MLE (Niepert, Minervini & Franceschi, 2021).

Perturb-and-MAP with a target distribution. For a MAP solver of argmax form, z = MAP(theta) =
argmax_z <theta, z> (argmax: one-hot; top-k: k-hot), I-MLE treats z as a sample of the perturb-and-MAP
distribution p(z; theta) of MAP(theta + eps) and moves theta towards the target distribution
p(z; theta'), theta' = theta - lambda dL/dz, whose samples have lower loss. With the same noise eps in
both solver calls, the gradient estimate is

    dL/dtheta = (1/S) sum_s [MAP(theta + tau eps_s) - MAP(theta - lambda dL/dz + tau eps_s)] / lambda,

an estimate of (mu(theta) - mu(theta')) / lambda with mu(theta) = E[MAP(theta + tau eps)] the marginals:
for small lambda, the directional derivative of the smoothed map mu along -dL/dz. The paper leaves out the
1/lambda (a constant factor, for the learning rate to absorb); with it, I-MLE at tau = 0 is exactly the
blackbox estimator (``blackbox``) and tau sets the smoothing.

The noise matches the solver: Gumbel(0, 1) for argmax (mu = softmax(theta / tau)); Sum-of-Gamma for
top-k, whose k-fold sum is (as s grows) a Gumbel, so that the k-subset solver sees the perturbation the
paper derives:  eps = sum_{i=1..s} Gamma(shape 1/k, scale 1/i) - log(s) / k.

The forward value is the exact hard function MAP(theta) (the contract of a deterministic node); noise
enters the backward only. ``loss`` is a batch mean, so each example's dL/dz is the incoming gradient times
the batch size; the official code steps along the batch-mean loss's gradient, so its lambda is ``lam`` times
the batch size, and its gradient (no 1/lambda) is lambda times ours (docs/estimators.md). The cost is
evaluated once; the 2 S solver calls are not cost evaluations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from gradbench import ops
from gradbench.estimator import Estimator, EstimatorOutput
from gradbench.node import Node
from gradbench.registry import register_estimator


@dataclass(frozen=True)
class IMLEConfig:
    lam: float = 10.0  # target step on each example's own cost gradient: the official code's lambda / batch size
    tau: float = 1.0  # temperature of the perturbation noise (0: no noise, the blackbox gradient)
    perturbations: int = 1  # noise draws S per example (2 S solver calls per example per step)
    gamma_terms: int = 10  # s: Gamma terms of the Sum-of-Gamma noise (top-k)

    def __post_init__(self) -> None:
        if not self.lam > 0:
            raise ValueError(f"lam must be > 0, got {self.lam}")
        if not self.tau >= 0:
            raise ValueError(f"tau must be >= 0, got {self.tau}")
        if self.perturbations < 1 or self.gamma_terms < 1:
            raise ValueError("perturbations and gamma_terms must be >= 1")


def sum_of_gamma(k: int, terms: int, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """Sum-of-Gamma noise: sum_{i=1..terms} Gamma(1/k, scale 1/i) - log(terms)/k, i.i.d. of ``shape``; the sum
    of k independent copies tends to a Gumbel(0, 1) as ``terms`` grows (Niepert et al. 2021)."""
    alpha = torch.full((terms, *shape), 1.0 / k, device=like.device, dtype=like.dtype)
    scale = 1.0 / torch.arange(1, terms + 1, device=like.device, dtype=like.dtype)
    gammas = torch._standard_gamma(alpha) * scale.view(terms, *[1] * len(shape))  # vmap-safe, unlike Gamma.sample
    return gammas.sum(0) - math.log(terms) / k


def gumbel(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    return -torch.log(-torch.log(ops.uniform(shape, like)))


class _TargetMAP(torch.autograd.Function):
    """Zero in the forward (added to the hard value); I-MLE's gradient in the backward."""

    generate_vmap_rule = True

    @staticmethod
    def forward(theta: torch.Tensor, hard: torch.Tensor, noise: torch.Tensor, node: Node, lam: float) -> torch.Tensor:
        return torch.zeros_like(hard)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
        theta, _, noise, ctx.node, ctx.lam = inputs
        ctx.save_for_backward(theta, noise)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        theta, noise = ctx.saved_tensors  # noise: (S, batch, *shape), already times tau
        batch = theta.shape[0]  # loss is a batch mean: batch * grad is each example's own dL/dz
        target = theta - ctx.lam * batch * grad
        diff = ops.hard(ctx.node, theta + noise) - ops.hard(ctx.node, target + noise)
        return diff.mean(0) / (ctx.lam * batch), None, None, None, None


@register_estimator("imle")
class IMLE(Estimator):
    supports = frozenset({"argmax", "topk"})
    unbiased = False
    Config = IMLEConfig

    def forward(self, logits, cost_fn) -> EstimatorOutput:
        c = self.config
        hard = ops.hard(self.node, logits.detach())
        shape = (c.perturbations, *logits.shape)
        if self.node.kind == "argmax":
            noise = gumbel(shape, logits)
        else:
            noise = sum_of_gamma(self.node.params["k"], c.gamma_terms, shape, logits)
        y = hard + _TargetMAP.apply(logits, hard, c.tau * noise, self.node, c.lam)
        cost = cost_fn(y)
        return EstimatorOutput(sample=hard, cost=cost.detach(), loss=cost.mean(), aux_loss=self.zero(logits),
                               diagnostics={"cost_evals": 1})
