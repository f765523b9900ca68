"""Blackbox differentiation of combinatorial solvers (Vlastelica, Paulus, Musil, Martius & Rolinek, 2020).

For a solver y(w) = argmin_y <w, y> and a loss L(y), the method returns the gradient of a piecewise
linear interpolation f_lambda of L(y(w)): call the solver once more, at w' = w + lambda dL/dy, and

    dL/dw = -(y(w) - y(w')) / lambda.

Our nodes are of argmax form, y(theta) = argmax_y <c(theta), y> with a linear cost c, i.e. w = -c(theta).
Substituting, the second call is the argmax at c(theta) - lambda dL/dy and

    dL/dc = (y(c) - y(c - lambda dL/dy)) / lambda,      dL/dtheta = (dc/dtheta)^T dL/dc,

the gradient of f_lambda(theta) = (max_y <c(theta), y> - max_y <c(theta) - lambda g, y>) / lambda for a
linear loss <g, y> (by Danskin's theorem; tests check it by finite differences).

* argmax, topk: c(theta) = theta; the second call is argmax / top-k of theta - lambda g.
* rank: P(theta) = argmax over permutation matrices of <P, w theta^T>, w = (0, 1, ..., n-1) (P @ theta is
  theta sorted ascending). The second call, at w theta^T - lambda G, is a linear assignment problem; it is
  solved exactly on the device by dynamic programming over subsets (O(2^n n^2) per vector, n <= 12). Then
  dL/dtheta_j = sum_i w_i (P - P')[i, j] / lambda = (rank_j(theta) - rank'_j) / lambda, the change in the
  ranks (as in Rolinek et al. 2020, "Optimizing rank-based metrics with blackbox differentiation").

lambda applies to each example's own cost gradient: ``loss`` is the batch mean, so the incoming dL/dy is
multiplied by the batch size before the solver call and the result divided by it. The official code
applies lambda to the gradient of its batch-mean loss, so its lambda is ``lam`` times the batch size
(docs/estimators.md derives it; the gradients are then equal). The forward value is the
exact hard function; the cost is evaluated once (the extra solver call evaluates no cost).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from gradbench import ops
from gradbench.errors import UnsupportedError
from gradbench.estimator import Estimator, EstimatorOutput
from gradbench.node import Node
from gradbench.registry import register_estimator

MAX_RANK_N = 12  # the subset DP holds 2^n states per vector


@dataclass(frozen=True)
class BlackboxConfig:
    lam: float = 10.0  # lambda on each example's own cost gradient: the official code's lambda / batch size

    def __post_init__(self) -> None:
        if not self.lam > 0:
            raise ValueError(f"lam must be > 0, got {self.lam}")


@functools.cache
def _subsets(n: int, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per row r: the column sets S of size r + 1 (as bit masks), S - {j} for every column j, and whether
    j is in S. Built once per (n, device), outside any captured step (no host work in the step itself)."""
    cols = torch.arange(n)
    masks = torch.arange(1 << n)
    has = (masks.unsqueeze(-1) >> cols) & 1 == 1  # (2^n, n)
    size = has.sum(-1)
    layers = []
    for row in range(n):
        sets = masks[size == row + 1]
        layers.append((sets.to(device), (sets.unsqueeze(-1) ^ (1 << cols)).to(device), has[sets].to(device)))
    return layers


def max_assignment(cost: torch.Tensor) -> torch.Tensor:
    """The permutation maximising sum_i cost[i, perm[i]], for (..., n, n) -> (..., n), by dynamic programming
    over the set S of columns used by the first |S| rows: best[S] = max_{j in S} best[S - j] + cost[|S|-1, j].
    Exact, batched, and free of host synchronisation (a fixed number of steps); ties go to the lower column."""
    n = cost.shape[-1]
    batch = cost.shape[:-2]
    best = torch.full((*batch, 1 << n), float("-inf"), device=cost.device, dtype=cost.dtype)
    best[..., 0] = 0.0
    choice = torch.zeros((*batch, 1 << n), device=cost.device, dtype=torch.long)  # S -> its last row's column
    for row, (sets, without, has) in enumerate(_subsets(n, cost.device)):  # sets of size row + 1
        candidates = (best[..., without] + cost[..., row, None, :]).masked_fill(~has, float("-inf"))
        value, column = candidates.max(-1)
        best, choice = best.index_copy(-1, sets, value), choice.index_copy(-1, sets, column)  # out of place: vmap
    perm = []
    used = torch.full(batch, (1 << n) - 1, device=cost.device, dtype=torch.long)
    for _ in range(n):  # back from the full set: the last row's column, then the one before
        j = choice.gather(-1, used.unsqueeze(-1)).squeeze(-1)
        perm.append(j)
        used = used ^ (1 << j)
    return torch.stack(perm[::-1], -1)


def _ranks(p: torch.Tensor) -> torch.Tensor:
    """The rank vector of permutation matrices (..., n, n): r_j = sum_i i * P[i, j]."""
    w = torch.arange(p.shape[-1], device=p.device, dtype=p.dtype)
    return (w.unsqueeze(-1) * p).sum(-2)


def second_call(node: Node, theta: torch.Tensor, g: torch.Tensor, lam: float) -> torch.Tensor:
    """(y(c(theta)) - y(c(theta) - lam g)) mapped back to theta: the blackbox gradient times lam."""
    hard = ops.hard(node, theta)
    if node.kind == "rank":
        w = torch.arange(theta.shape[-1], device=theta.device, dtype=theta.dtype)
        shifted = max_assignment(w.unsqueeze(-1) * theta.unsqueeze(-2) - lam * g)
        return _ranks(hard) - _ranks(F.one_hot(shifted, theta.shape[-1]).to(theta.dtype))
    return hard - ops.hard(node, theta - lam * g)


class _Interpolation(torch.autograd.Function):
    """Zero in the forward (added to the hard value); the blackbox gradient in the backward."""

    generate_vmap_rule = True

    @staticmethod
    def forward(theta: torch.Tensor, hard: torch.Tensor, node: Node, lam: float) -> torch.Tensor:
        return torch.zeros_like(hard)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
        theta, _, ctx.node, ctx.lam = inputs
        ctx.save_for_backward(theta)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        (theta,) = ctx.saved_tensors
        batch = theta.shape[0]  # loss is a batch mean: batch * grad is each example's own dL/dy
        return second_call(ctx.node, theta, grad * batch, ctx.lam) / (ctx.lam * batch), None, None, None


@register_estimator("blackbox")
class Blackbox(Estimator):
    supports = frozenset({"argmax", "topk", "rank"})
    unbiased = False
    Config = BlackboxConfig

    def __init__(self, node: Node, config: BlackboxConfig | None = None) -> None:
        super().__init__(node, config)
        if node.kind == "rank" and node.shape[-1] > MAX_RANK_N:
            raise UnsupportedError(f"estimator 'blackbox': its rank solver (exact assignment by subset dynamic "
                                   f"programming) handles vectors of n <= {MAX_RANK_N}, got n={node.shape[-1]}")

    def forward(self, logits, cost_fn) -> EstimatorOutput:
        hard = ops.hard(self.node, logits.detach())
        y = hard + _Interpolation.apply(logits, hard, self.node, self.config.lam)
        cost = cost_fn(y)
        return EstimatorOutput(sample=hard, cost=cost.detach(), loss=cost.mean(), aux_loss=self.zero(logits),
                               diagnostics={"cost_evals": 1})
