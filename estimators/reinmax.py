"""ReinMax (Liu, Zhao, Wang, Gao & Han 2023): second-order straight-through at one cost evaluation.

Categorical logits theta, pi0 = softmax(theta), D a one-hot draw, temperature tau:

    pi1 = (D + softmax(theta / tau)) / 2
    pi1 = softmax(stopgrad(log pi1 - theta) + theta)      # value pi1, Jacobian that of a softmax at pi1
    pi2 = 2 pi1 - pi0 / 2
    y   = pi2 - stopgrad(pi2) + D                          # forward: D; backward: through pi2

The backward is Heun's method for the exact gradient sum_ij pi_i pi_j (f(I_i) - f(I_j)): with tau = 1 it
approximates each difference f(I_i) - f(I_j) by the trapezoid rule on the cost's gradient, which is exact
for a cost quadratic in y. So at tau = 1 ReinMax is unbiased for quadratic costs (straight-through only
for linear ones) and biased otherwise. A Bernoulli node is the two-class case with theta = (0, x).

Cost: 1 cost evaluation per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gradbench import ops
from gradbench.estimator import Estimator, EstimatorOutput
from gradbench.registry import register_estimator


@dataclass(frozen=True)
class ReinMaxConfig:
    tau: float = 1.0  # temperature of softmax(theta / tau) in pi1; 1 is exact for quadratic costs (paper: 1 to 2)

    def __post_init__(self) -> None:
        if not self.tau > 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")


@register_estimator("reinmax")
class ReinMax(Estimator):
    supports = frozenset({"bernoulli", "categorical"})
    unbiased = False
    Config = ReinMaxConfig

    def forward(self, logits, cost_fn) -> EstimatorOutput:
        node = self.node
        sample = ops.from_perturbed(node, ops.perturb(node, logits.detach(), ops.uniform(logits.shape, logits)))
        if node.kind == "bernoulli":  # two classes (b = 0, b = 1) with logits (0, x)
            theta = torch.stack([torch.zeros_like(logits), logits], -1)
            d = torch.stack([1 - sample, sample], -1)
        else:
            theta, d = logits, sample
        pi0 = torch.softmax(theta, -1)
        pi1 = (d + torch.softmax(theta.detach() / self.config.tau, -1)) / 2
        pi1 = torch.softmax((torch.log(pi1) - theta).detach() + theta, -1)
        pi2 = 2 * pi1 - pi0 / 2
        y = pi2 - pi2.detach() + d
        if node.kind == "bernoulli":
            y = y[..., 1]
        cost = cost_fn(y)
        return EstimatorOutput(sample=sample, cost=cost.detach(), loss=cost.mean(), aux_loss=self.zero(logits),
                               diagnostics={"cost_evals": 1})
