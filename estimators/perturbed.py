"""Perturbed optimizers (Berthet, Blondel, Teboul, Cuturi, Vert & Bach, 2020): a Monte Carlo Jacobian.

For a function of argmax form, y(theta) = argmax_{y in C} <y, theta> (argmax: C the one-hot vectors;
top-k: the k-hot masks; rank: the permutation matrices, theta entering as w theta^T), the perturbed
function y_sigma(theta) = E[y(theta + sigma Z)], Z ~ N(0, I), is smooth, and Stein's lemma gives its
Jacobian without differentiating y:

    J(theta) = d y_sigma / d theta = E[ y(theta + sigma Z) Z^T ] / sigma
             = E[ (y(theta + sigma Z) - y(theta)) Z^T ] / sigma      (E[Z] = 0: a control variate)

estimated with M draws Z_1..Z_M per example. The forward value is the exact hard function y(theta) (the
contract of a deterministic node); the backward is J^T dL/dy, carried by the surrogate

    s = 1/(M sigma) * sum_m (y(theta + sigma Z_m) - y(theta)) <Z_m, theta>,   y = y(theta) + s - sg(s)

whose Jacobian in theta is the estimate (the solutions and the Z_m are constants). The noise acts on each
vector of the last input dim separately (each row of a (rows, n) input is its own problem), so <Z_m, theta>
is taken over that dim. The cost is evaluated once; the M solver calls are not cost evaluations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gradbench import ops
from gradbench.estimator import Estimator, EstimatorOutput
from gradbench.registry import register_estimator


@dataclass(frozen=True)
class PerturbedConfig:
    sigma: float = 1.0  # std of the Gaussian perturbation: the smoothing scale, in units of the logits
    perturbations: int = 16  # Monte Carlo draws Z_m per example (solver calls per example per step)
    baseline: bool = True  # subtract y(theta) from each perturbed solution (same mean, lower variance)

    def __post_init__(self) -> None:
        if not self.sigma > 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma}")
        if self.perturbations < 1:
            raise ValueError(f"perturbations must be >= 1, got {self.perturbations}")


@register_estimator("perturbed")
class Perturbed(Estimator):
    supports = frozenset({"argmax", "topk", "rank"})
    unbiased = False  # unbiased for the smoothed function's Jacobian, not for the (zero) derivative of y
    Config = PerturbedConfig

    def forward(self, logits, cost_fn) -> EstimatorOutput:
        node, c = self.node, self.config
        theta = logits.detach()
        hard = ops.hard(node, theta)
        z = torch.randn((c.perturbations, *logits.shape), device=logits.device, dtype=logits.dtype)
        solutions = ops.hard(node, theta + c.sigma * z)  # (M, batch, *shape)
        if c.baseline:
            solutions = solutions - hard
        inner = (z * logits).sum(-1)  # <Z_m, theta> per vector: (M, batch, *rows)
        inner = inner.reshape(*inner.shape, *[1] * (1 + len(node.shape) - len(node.in_shape)))
        s = (solutions * inner).mean(0) / c.sigma  # Jacobian in theta: the Monte Carlo J
        y = hard + (s - s.detach())
        cost = cost_fn(y)
        return EstimatorOutput(sample=hard, cost=cost.detach(), loss=cost.mean(), aux_loss=self.zero(logits),
                               diagnostics={"cost_evals": 1})
