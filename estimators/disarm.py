"""DisARM (Dong, Mnih & Tucker 2020): ARM's antithetic pair with the augmenting noise integrated out.

For Bernoulli logits phi with sigma = sigmoid(phi) and one uniform u per unit, the antithetic pair
b = 1[u > 1 - sigma], b~ = 1[u < sigma] (both Bernoulli(sigma)) gives, per unit i,

    g_i = 1/2 (f(b) - f(b~)) * 1[b_i != b~_i] * (-1)^(b~_i) * sigmoid(|phi_i|)

an unbiased estimate of d E[f(b)] / d phi_i: ARM's estimate averaged over u given (b, b~), so never of
higher variance than ARM at the same two cost evaluations (one call on the pair).

Categorical nodes are refused: the categorical extension (Dong, Mnih & Tucker 2021) couples more than
two samples and is not implemented here; ``arm`` (ARSM) is the unbiased antithetic estimator for them.
"""

from __future__ import annotations

import torch

from gradbench import ops
from gradbench.errors import UnsupportedError
from gradbench.estimator import Estimator, EstimatorOutput, NoConfig
from gradbench.node import Node
from gradbench.registry import register_estimator


@register_estimator("disarm")
class DisARM(Estimator):
    supports = frozenset({"bernoulli"})
    unbiased = True
    Config = NoConfig  # no hyper-parameters

    def __init__(self, node: Node, config: NoConfig | None = None) -> None:
        if node.kind == "categorical":
            raise UnsupportedError("estimator 'disarm' supports Bernoulli nodes only (categorical DisARM is not "
                                   "implemented); for categorical nodes use 'arm' (ARSM)")
        super().__init__(node, config)

    def forward(self, logits, cost_fn) -> EstimatorOutput:
        phi = logits.detach()
        sigma = torch.sigmoid(phi)
        u = ops.uniform(phi.shape, phi)
        b = (u > 1 - sigma).to(phi.dtype)  # ops' sample for this u: the reported one
        b_anti = (u < sigma).to(phi.dtype)
        f = cost_fn(torch.stack([b, b_anti]))  # (2, batch): one call, two rows
        fd = f.detach()
        half_diff = (fd[0] - fd[1]).view(-1, *[1] * len(self.node.shape)) / 2
        g = half_diff * (b != b_anti).to(phi.dtype) * (1 - 2 * b_anti) * torch.sigmoid(phi.abs())
        # d loss / d logits = g / batch; the cost's own parameters (and a cost that reaches the logits
        # directly) get the gradient of the mean cost of both rows, each a draw from the node.
        linear = (logits * g).flatten(1).sum(-1).mean()
        loss = f.mean(0).mean() + (linear - linear.detach())
        return EstimatorOutput(sample=b, cost=fd[0], loss=loss, aux_loss=self.zero(logits),
                               diagnostics={"cost_evals": 2})
