"""ARM (Yin & Zhou 2019) for Bernoulli nodes and its categorical form ARSM (Yin, Yue & Zhou 2019).

Bernoulli, logits phi, sigma = sigmoid(phi), one uniform u per unit (Augment-REINFORCE-Merge):

    g = (f(b1) - f(b2)) * (u - 1/2),    b1 = 1[u > sigmoid(-phi)],  b2 = 1[u < sigmoid(phi)]

Categorical, per variable d with C classes and logits phi_d (Augment-REINFORCE-Swap-Merge): draw
pi_d ~ Dirichlet(1_C) and take z_d = argmin_i pi_di exp(-phi_di) (a Categorical(softmax(phi_d)) draw).
The "pseudo action" z^(c<->j) swaps entries c and j of every pi_d before the argmin; with
F[c, j] = f(z^(c<->j)) (F[c, c] = f(z)) and Fbar_j = mean_m F[m, j],

    g_dc = sum_j (F[c, j] - Fbar_j) * (1/C - pi_dj)

Both are unbiased. With C = 2 classes ARSM and ARM are the same estimator.

Cost: Bernoulli 2 cost evaluations per step (b1 and b2 in one call); categorical 1 + C(C-1)/2 (the sample
and one pseudo action per unordered pair of classes; duplicates are evaluated all the same, so that the
step has no data-dependent shapes). Every evaluated row is itself a draw from the node, so the cost
function's own parameters (and a cost that reaches the logits directly) get the mean over all rows.
"""

from __future__ import annotations

import itertools

import torch

from gradbench import ops
from gradbench.estimator import Estimator, EstimatorOutput, NoConfig
from gradbench.node import Node
from gradbench.registry import register_estimator


@register_estimator("arm")
class ARM(Estimator):
    supports = frozenset({"bernoulli", "categorical"})
    unbiased = True
    Config = NoConfig  # no hyper-parameters

    def __init__(self, node: Node, config: NoConfig | None = None) -> None:
        super().__init__(node, config)
        if node.kind == "categorical":
            classes = node.shape[-1]
            self.pairs = list(itertools.combinations(range(classes), 2))

    def forward(self, logits, cost_fn) -> EstimatorOutput:
        if self.node.kind == "bernoulli":
            return self._arm(logits, cost_fn)
        return self._arsm(logits, cost_fn)

    def _arm(self, logits, cost_fn) -> EstimatorOutput:
        phi = logits.detach()
        u = ops.uniform(phi.shape, phi)
        b1 = (u > torch.sigmoid(-phi)).to(phi.dtype)  # = ops' sample for this u: the reported one
        b2 = (u < torch.sigmoid(phi)).to(phi.dtype)
        f = cost_fn(torch.stack([b1, b2]))  # (2, batch): one call, two rows
        fd = f.detach()
        g = (fd[0] - fd[1]).view(-1, *[1] * len(self.node.shape)) * (u - 0.5)
        return self._output(logits, g, b1, f, 2)

    def _arsm(self, logits, cost_fn) -> EstimatorOutput:
        phi = logits.detach()
        classes = phi.shape[-1]
        # pi ~ Dirichlet(1) per variable: normalised Exp(1) draws; only argmins and pi itself are used.
        e = -torch.log(ops.uniform(phi.shape, phi))
        pi = e / e.sum(-1, keepdim=True)
        log_pi = torch.log(pi)
        swapped = [log_pi]
        for c, j in self.pairs:
            s = log_pi.clone()
            s[..., c], s[..., j] = log_pi[..., j], log_pi[..., c]
            swapped.append(s)
        actions = torch.stack(swapped)  # (1 + pairs, batch, *shape): row 0 is the true draw
        z = torch.nn.functional.one_hot((actions - phi).argmin(-1), classes).to(phi.dtype)
        f = cost_fn(z)  # (1 + pairs, batch)
        fd = f.detach()
        # F[c, j] = f(z^(c<->j)), symmetric, with f(z) on the diagonal: (batch, C, C)
        table = fd[0].view(-1, 1, 1).expand(-1, classes, classes).clone()
        for row, (c, j) in enumerate(self.pairs, start=1):
            table[:, c, j] = table[:, j, c] = fd[row]
        centred = table - table.mean(1, keepdim=True)  # F[c, j] - Fbar_j
        weight = 1.0 / classes - pi  # (batch, *shape): 1/C - pi_dj
        flat_w = weight.flatten(1, -2)  # (batch, variables, C)
        g = torch.einsum("bcj,bvj->bvc", centred, flat_w).reshape(phi.shape)
        return self._output(logits, g, z[0], f, len(self.pairs) + 1)

    def _output(self, logits, g, sample, f, evals: int) -> EstimatorOutput:
        # d loss / d logits = g / batch (the batch mean); the cost's own parameters, and a cost that reaches
        # the logits directly, get the gradient of the mean cost over all rows (each row is a draw).
        linear = (logits * g).flatten(1).sum(-1).mean()
        loss = f.mean(0).mean() + (linear - linear.detach())
        return EstimatorOutput(sample=sample, cost=f[0].detach(), loss=loss, aux_loss=self.zero(logits),
                               diagnostics={"cost_evals": evals})
