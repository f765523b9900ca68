"""Gumbel-Rao (Paulus, Maddison & Krause 2021): straight-through Gumbel-Softmax, Rao-Blackwellised.

Straight-through Gumbel-Softmax (``gumbel:hard=true``) uses the discrete draw D = H(z), z = log pi + G,
forward and the relaxed sample softmax(z / tau) backward: its gradient is J(z)^T f'(D), with J the
Jacobian of softmax(z / tau) in the logits at fixed noise G. Gumbel-Rao replaces J(z) by its conditional
mean given D, estimated from ``draws`` (M) noises drawn from p(G | H(log pi + G) = D):

    y = D + s - stopgrad(s),   s = 1/M sum_m softmax((log pi + G_m) / tau),   G_m ~ p(G | D), held fixed

(sigmoid((x + L_m) / tau) with logistic noise L_m for Bernoulli nodes). The noises are conditioned on
the observed D and then held fixed, so the estimate is E[ST-Gumbel's estimate | D] up to Monte Carlo
error: the same mean as ``gumbel:hard=true`` at the same tau, and a variance that falls with M towards
that of the exact conditional mean. Biased like straight-through Gumbel.

Cost: 1 cost evaluation per step, whatever M (the M relaxed samples only enter the backward).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gradbench import ops
from gradbench.estimator import Estimator, EstimatorOutput
from gradbench.registry import register_estimator


@dataclass(frozen=True)
class GumbelRaoConfig:
    tau: float = 1.0  # temperature of the relaxed samples
    draws: int = 10  # M: conditional noise draws averaged per example (M = 1 has ST-Gumbel's variance)

    def __post_init__(self) -> None:
        if not self.tau > 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")
        if self.draws < 1:
            raise ValueError(f"draws must be >= 1, got {self.draws}")


@register_estimator("gumbel-rao")
class GumbelRao(Estimator):
    supports = frozenset({"bernoulli", "categorical"})
    unbiased = False
    Config = GumbelRaoConfig

    def forward(self, logits, cost_fn) -> EstimatorOutput:
        node, m = self.node, self.config.draws
        x = logits.detach()
        hard = ops.from_perturbed(node, ops.perturb(node, x, ops.uniform(x.shape, x)))
        # M noises given the draw, as perturbed logits z_m = (log pi or x) + G_m at the detached logits...
        xs = x.expand(m, *x.shape)
        z = ops.conditional_perturb(node, xs, hard.expand(m, *hard.shape), ops.uniform(xs.shape, x))
        # ... then the noise G_m = z_m - (log pi or x) is held fixed and the logits re-enter with their graph.
        base = torch.log_softmax(logits, -1) if node.kind == "categorical" else logits
        z = z - base.detach() + base
        soft = ops.relaxed(node, z, self.config.tau).mean(0)
        y = hard + (soft - soft.detach())
        cost = cost_fn(y)
        return EstimatorOutput(sample=hard, cost=cost.detach(), loss=cost.mean(), aux_loss=self.zero(logits),
                               diagnostics={"cost_evals": 1})
