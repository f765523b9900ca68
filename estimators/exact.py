"""Exact: autograd through the true hard function, for nodes whose function has a useful derivative.

``sort`` is piecewise linear: on the open set where the input has no ties, sort(x) = P(x) x with P the
(locally constant) sorting permutation, so its Jacobian is P and autograd through ``torch.sort``'s values
gives the exact gradient almost everywhere: dL/dx = P^T dL/dy (the sorted position's gradient goes back to
the entry that landed there). This is the reference the estimators of a sort node are measured against;
straight-through's identity backward (dL/dx = dL/dy, position to position) is the naive baseline.

The other kinds are piecewise constant (sign, threshold, argmax, rank, topk, round, kmeans assignments),
so autograd would give zero; kmeans vectors would send the gradient only to the centroids. They are not
supported.
"""

from __future__ import annotations

from gradbench.estimator import Estimator, EstimatorOutput
from gradbench.registry import register_estimator


@register_estimator("exact")
class Exact(Estimator):
    supports = frozenset({"sort"})
    unbiased = False  # a claim about stochastic nodes; on sort the gradient is exact (no estimate at all)

    def forward(self, logits, cost_fn) -> EstimatorOutput:
        y = logits.sort(dim=-1, stable=True).values  # the same values as ops.hard, with autograd's Jacobian P
        cost = cost_fn(y)
        return EstimatorOutput(sample=y.detach(), cost=cost.detach(), loss=cost.mean(), aux_loss=self.zero(logits),
                               diagnostics={"cost_evals": 1})
