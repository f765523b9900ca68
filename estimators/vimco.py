"""VIMCO (Mnih & Rezende 2016): leave-one-out baselines for the multi-sample importance-weighted bound.

The task draws k latent samples per example along the node's first event dim (``vae:iw_k=k``: node
shape (k, latents)) and trains the bound L = log 1/k sum_j exp(l_j), whose per-sample log-weights
l_j = log p(x, h_j) - log q(h_j | x) it hands over through the optional hook ``cost_fn.log_weight``
(``Task.with_log_weight``; its cost is -L). With l^_(-j) the mean of the other samples' log-weights and

    L_(-j) = log 1/k (sum_(i != j) exp(l_i) + exp(l^_(-j)))

the estimate of the gradient of L is

    sum_j (L - L_(-j)) * d log q(h_j | x)  +  sum_j w~_j * d l_j,      w~_j = exp(l_j) / sum_i exp(l_i)

the first term with a baseline for each sample that does not depend on it (so unbiased), the second
the exact gradient of L at the drawn samples (it carries the decoder's, the prior's and log q's direct
terms). The loss is -L.

VIMCO is unbiased for the gradient of E[L], which is the expected cost on a task whose cost is -L (the
``vae`` with ``iw_k >= 2``, tested by enumeration); ``unbiased`` is False because the contract's claim
covers any cost. A task without the hook, or with fewer than 2 samples per example, is refused in one
line at the first step (``needs_log_weights`` and ``Task.provides_log_weights`` let a harness refuse it
before). Cost: 1 cost evaluation per step (the log-weights of the k samples, one row); the reported
cost, log k - logsumexp_j l_j, comes from those log-weights (``Task.with_log_weight``'s contract: the
cost is minus the bound), so the cost function is not called again (version 1 called it, and reported
2 evaluations, which halved its steps under an ``--evals`` budget).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from gradbench import ops
from gradbench.errors import UnsupportedError, UsageError
from gradbench.estimator import Estimator, EstimatorOutput, NoConfig
from gradbench.node import Node
from gradbench.registry import register_estimator


@register_estimator("vimco")
class VIMCO(Estimator):
    supports = frozenset({"bernoulli", "categorical"})
    unbiased = False  # unbiased for the k-sample bound's gradient, not for an arbitrary cost (see above)
    Config = NoConfig  # no hyper-parameters: k is the task's (vae:iw_k)
    needs_log_weights: ClassVar[bool] = True  # runs only where Task.provides_log_weights(config) is True

    def __init__(self, node: Node, config: NoConfig | None = None) -> None:
        super().__init__(node, config)
        if node.kind == "categorical" and len(node.shape) < 2:
            raise UnsupportedError(f"estimator 'vimco' needs k samples along a categorical node's first dim, "
                                   f"shape (k, ..., classes); got {node.shape}")
        self.k = node.shape[0]
        # one sample's node: what follows the samples dim (a single unit when a Bernoulli node is 1-D)
        self.one = Node(node.kind, node.shape[1:] if len(node.shape) > 1 else (1,))

    def forward(self, logits, cost_fn) -> EstimatorOutput:
        log_weight = getattr(cost_fn, "log_weight", None)
        if log_weight is None:
            raise UsageError("estimator 'vimco' needs per-sample log importance weights from the task (a cost "
                             "function with a log_weight hook); this task has none: use --task vae:iw_k=5")
        k = self.k
        if k < 2:
            raise UsageError(f"estimator 'vimco' needs >= 2 samples per example along the node's first dim, "
                             f"got {k}: use --task vae:iw_k=5")
        x = logits.detach()
        b = ops.from_perturbed(self.node, ops.perturb(self.node, x, ops.uniform(x.shape, x)))
        lw = log_weight(b)  # (batch, k), with its graph to the cost's parameters and the logits' direct path
        if lw.shape[-1:] != (k,):
            raise UsageError(f"estimator 'vimco': the task's log_weight gave shape {tuple(lw.shape)}, expected "
                             f"(batch, {k}): one log-weight per sample along the node's first dim")
        with torch.no_grad():
            lwd = lw.detach()
            cost = math.log(k) - torch.logsumexp(lwd, -1)  # the cost of b, -L, from the same log-weights
            bound = torch.logsumexp(lwd, -1, keepdim=True)  # L + log k, (batch, 1)
            others = (lwd.sum(-1, keepdim=True) - lwd) / (k - 1)  # l^_(-j), (batch, k)
            eye = torch.eye(k, dtype=torch.bool, device=x.device)
            swapped = torch.where(eye, others.unsqueeze(-1), lwd.unsqueeze(-2))  # row j: l_j replaced by l^_(-j)
            signal = bound - torch.logsumexp(swapped, -1)  # L - L_(-j), (batch, k)
        per_sample = (logits, b) if len(self.node.shape) > 1 else (logits.unsqueeze(-1), b.unsqueeze(-1))
        log_q = ops.log_prob(self.one, *per_sample)  # log q(h_j | x), (batch, k)
        objective = torch.logsumexp(lw, -1) - math.log(k)  # L, (batch,)
        surrogate = objective + (signal * (log_q - log_q.detach())).sum(-1)
        return EstimatorOutput(sample=b, cost=cost, loss=-surrogate.mean(), aux_loss=self.zero(logits),
                               diagnostics={"cost_evals": 1})
