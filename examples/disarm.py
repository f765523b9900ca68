"""DisARM (Dong, Mnih & Tucker, 2020) written as a gradbench plugin: a complete estimator in one file.

gradbench ships DisARM as the built-in ``disarm`` (estimators/disarm.py); this file is the same estimator
as a plugin registered under its own name, ``my-disarm``, to show how an estimator is written and
checked outside the package (tests/test_plugin_checks.py pins that both give the same estimate). Run it
without installing anything:

    gradbench validate --estimator my-disarm --plugin examples/disarm.py
    gradbench run --estimator my-disarm --task toy --plugin examples/disarm.py

For Bernoulli logits phi with sigma = sigmoid(phi) and one uniform u per unit, the antithetic pair
b1 = 1[u > 1 - sigma], b2 = 1[u < sigma] gives, per unit i,

    g_i = 1/2 (f(b1) - f(b2)) * 1[b1_i != b2_i] * (-1)^{b2_i} * sigmoid(|phi_i|)

an unbiased estimate of d E[f(b)] / d phi_i with two cost evaluations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

import gradbench
from gradbench import ops


@dataclass(frozen=True)
class DisARMConfig:
    """No hyper-parameters; a frozen dataclass all the same, so `my-disarm:key=value` errors are clear."""


@gradbench.register_estimator("my-disarm")
class DisARM(gradbench.Estimator):
    supports = frozenset({"bernoulli"})
    unbiased = True
    Config = DisARMConfig

    def forward(self, logits: torch.Tensor, cost_fn) -> gradbench.EstimatorOutput:
        phi = logits.detach()
        sigma = torch.sigmoid(phi)
        u = ops.uniform(phi.shape, phi)
        b1 = (u > 1 - sigma).to(phi.dtype)
        b2 = (u < sigma).to(phi.dtype)
        f = cost_fn(torch.stack([b1, b2]))  # (2, batch): one call, leading sample dim
        fd = f.detach()
        weight = (fd[0] - fd[1]).view(-1, *[1] * (phi.dim() - 1)) / 2
        g = weight * (b1 != b2).to(phi.dtype) * (1 - 2 * b2) * torch.sigmoid(phi.abs())
        # A linear surrogate: its gradient w.r.t. logits is g / batch (the batch mean), and the cost
        # function's own parameters get the gradient of the mean cost of both samples.
        linear = (logits * g).flatten(1).sum(-1).mean()
        loss = f.mean() + (linear - linear.detach())
        # cost_evals: cost-function rows evaluated per example, here one call on 2 rows
        return gradbench.EstimatorOutput(sample=b1, cost=fd[0], loss=loss, aux_loss=self.zero(logits),
                                         diagnostics={"cost_evals": 2})
