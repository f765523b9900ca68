"""IndeCateR (De Smet, Sansone & Zuidberg Dos Martires 2023): per-variable Rao-Blackwellised gradients.

For independent categorical variables x_1..x_V of K classes each (a Bernoulli unit is K = 2), the exact
gradient of E[f(x)] is sum_v sum_k grad p(x_v = k) E_{x_-v}[f(x_-v, x_v = k)]. IndeCateR estimates the
inner expectation with the draw's own other variables: from one draw x,

    g = sum_v sum_k grad p(x_v = k) * f(x with x_v set to k)

which is unbiased, and exact in each variable given the others (the sum over k replaces a score-function
term). Per draw that takes f at x and at every single-variable change of x: 1 + V (K - 1) rows, i.e.
1 + numel cost evaluations for a Bernoulli node of numel units, 1 + V (K - 1) for V categorical variables
of K classes (the paper's D K N counts f(x) once per variable). N draws per example, as in the paper:
``indecater:samples=N`` (the engine averages N independent estimates, N times the cost).

The changed rows only weigh the logits' gradient and are evaluated without a graph, in chunks of about
``CHUNK_ELEMENTS`` numbers (memory only: the result is the same); f(x) keeps its graph, so the cost
function's own parameters (and a cost that reaches the logits directly) get the gradient of the sampled
cost.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from gradbench import ops
from gradbench.estimator import Estimator, EstimatorOutput, NoConfig
from gradbench.node import Node
from gradbench.registry import register_estimator


@register_estimator("indecater")
class IndeCateR(Estimator):
    supports = frozenset({"bernoulli", "categorical"})
    unbiased = True
    Config = NoConfig  # no hyper-parameters; N draws per example: indecater:samples=N (the engine's)
    CHUNK_ELEMENTS: ClassVar[int] = 2**22  # numbers per cost call for the changed rows

    def __init__(self, node: Node, config: NoConfig | None = None) -> None:
        super().__init__(node, config)
        self.classes = node.shape[-1] if node.kind == "categorical" else 2
        self.variables = node.numel // self.classes if node.kind == "categorical" else node.numel
        self.rows = self.variables * (self.classes - 1)  # changed rows per draw

    def forward(self, logits, cost_fn) -> EstimatorOutput:
        node, k, v = self.node, self.classes, self.variables
        x = logits.detach()
        sample = ops.from_perturbed(node, ops.perturb(node, x, ops.uniform(x.shape, x)))
        batch = x.shape[0]
        f = cost_fn(sample)  # (batch,), with its graph
        # the draw as class indices, (batch, V), and the logits as (batch, V, K)
        if node.kind == "bernoulli":
            index = sample.reshape(batch, v).long()
            class_logits = torch.stack([torch.zeros_like(logits), logits], -1).reshape(batch, v, k)
        else:
            index = sample.reshape(batch, v, k).argmax(-1)
            class_logits = logits.reshape(batch, v, k)
        # row r = (variable r // (K-1), shift 1 + r % (K-1)): that variable moved to class (x_v + shift) mod K
        rows = torch.arange(self.rows, device=x.device)
        var, shift = rows // (k - 1), 1 + rows % (k - 1)
        # the class each changed row sets, (rows, batch)
        at = var.view(-1, 1, 1).expand(-1, batch, 1)
        moved = (index.expand(self.rows, batch, v).gather(-1, at).squeeze(-1) + shift.view(-1, 1)) % k
        step = max(1, self.CHUNK_ELEMENTS // (batch * node.numel))
        parts = []
        with torch.no_grad():  # out of place throughout, so that the step also runs under vmap
            for start in range(0, self.rows, step):
                r = slice(start, min(start + step, self.rows))
                idx = index.expand(r.stop - r.start, batch, v).scatter(-1, at[r], moved[r].unsqueeze(-1))
                parts.append(cost_fn(self._values(idx, x.dtype)))  # (rows in chunk, batch)
        changed = torch.cat(parts)
        # F[b, v, c] = f(x with x_v = c): f(x) at the drawn class, the changed rows elsewhere
        table = f.detach().view(batch, 1).expand(batch, v * k)
        table = table.scatter(1, (var.view(-1, 1) * k + moved).t(), changed.t()).view(batch, v, k)
        p = torch.softmax(class_logits, -1)
        surrogate = ((p - p.detach()) * table).flatten(1).sum(-1)  # d/dlogits: sum_v sum_c grad p_vc F_vc
        return EstimatorOutput(sample=sample, cost=f.detach(), loss=(f + surrogate).mean(),
                               aux_loss=self.zero(logits), diagnostics={"cost_evals": 1 + self.rows})

    def _values(self, index: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Node values (*lead, batch, *shape) from class indices (*lead, batch, V)."""
        if self.node.kind == "bernoulli":
            return index.to(dtype).view(*index.shape[:-1], *self.node.shape)
        return F.one_hot(index, self.classes).to(dtype).view(*index.shape[:-1], *self.node.shape)
