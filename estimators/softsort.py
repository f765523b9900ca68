"""SoftSort (Prillo & Eisenschlos, 2020) and NeuralSort (Grover, Wang, Zweig & Ermon, 2019): relaxed sorting.

Both replace the permutation matrix P(s) of a vector s (P[i, j] = 1 iff s_j is the i-th smallest, so
P s = sort(s) ascending; docs/nodes.md) by a row-stochastic matrix that tends to it as tau -> 0:

* SoftSort:   P~[i, :] = softmax_j( -|sort(s)_i - s_j| / tau ), with sort(s) differentiable (it is
  piecewise linear; autograd through its values).
* NeuralSort: P~[i, :] = softmax( ((2i - n + 1) s - A_s 1) / tau ), A_s[j, k] = |s_j - s_k|, i = 0..n-1
  (the paper's descending rows (n + 1 - 2i') s - A_s 1, i' = 1..n, read bottom-up for ascending order).

The forward value is the exact hard function; the backward is the relaxation's, straight-through style:
``rank`` (the permutation matrix): y = P + P~ - sg(P~); ``sort`` (the sorted values): y = sort(s) + P~ s -
sg(P~ s). The relaxations act on the last dim. The cost is evaluated once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from gradbench import ops
from gradbench.estimator import Estimator, EstimatorOutput
from gradbench.registry import register_estimator


@dataclass(frozen=True)
class SoftSortConfig:
    variant: Literal["softsort", "neuralsort"] = "softsort"  # which relaxation of the permutation matrix
    tau: float = 1.0  # temperature: smaller is closer to the hard permutation (and steeper)

    def __post_init__(self) -> None:
        if not self.tau > 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")


def softsort(s: torch.Tensor, tau: float) -> torch.Tensor:
    """SoftSort's relaxed permutation matrix, ascending: (..., n) -> (..., n, n)."""
    ascending = s.sort(dim=-1, stable=True).values
    return torch.softmax(-(ascending.unsqueeze(-1) - s.unsqueeze(-2)).abs() / tau, -1)


def neuralsort(s: torch.Tensor, tau: float) -> torch.Tensor:
    """NeuralSort's relaxed permutation matrix, ascending: (..., n) -> (..., n, n)."""
    n = s.shape[-1]
    spread = (s.unsqueeze(-1) - s.unsqueeze(-2)).abs().sum(-1)  # A_s 1: (..., n)
    scale = 2 * torch.arange(n, device=s.device, dtype=s.dtype) - n + 1  # (n,)
    return torch.softmax((scale.unsqueeze(-1) * s.unsqueeze(-2) - spread.unsqueeze(-2)) / tau, -1)


@register_estimator("softsort")
class SoftSort(Estimator):
    supports = frozenset({"sort", "rank"})
    unbiased = False
    Config = SoftSortConfig

    def relaxed(self, logits: torch.Tensor) -> torch.Tensor:
        """The relaxation of the node's value: P~ (rank) or P~ s (sort)."""
        relax = softsort if self.config.variant == "softsort" else neuralsort
        p = relax(logits, self.config.tau)
        return p if self.node.kind == "rank" else (p @ logits.unsqueeze(-1)).squeeze(-1)

    def forward(self, logits, cost_fn) -> EstimatorOutput:
        hard = ops.hard(self.node, logits.detach())
        soft = self.relaxed(logits)
        y = hard + (soft - soft.detach())
        cost = cost_fn(y)
        return EstimatorOutput(sample=hard, cost=cost.detach(), loss=cost.mean(), aux_loss=self.zero(logits),
                               diagnostics={"cost_evals": 1})
