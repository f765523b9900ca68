"""MuProp (Gu, Levine, Sutskever & Mnih 2016): REINFORCE with a first-order Taylor control variate.

With mu = E[b] (sigmoid or softmax of the logits: the mean-field point), b a draw and f' = df/dy at mu,

    g = [f(b) - f(mu) - f'^T (b - mu)] * d log p(b)/d logits  +  f'^T d mu/d logits

The control variate h(b) = f(mu) + f'^T (b - mu) is linear in b, so its expectation f(mu) is known and
its score-function part is replaced by the exact derivative of E[h] = f'^T d mu / d logits (f(mu) and f'
held fixed): unbiased for any cost. A cost that also reaches the logits directly (the ``vae``'s KL) keeps
that path through f(b), and the cost function's own parameters get the gradient of the sampled cost.

Cost: 2 cost evaluations per step (b and mu, in one call). f' comes from ``torch.autograd.grad`` inside
forward, so the estimator runs neither under ``vmap`` nor under ``torch.compile``.
"""

from __future__ import annotations

import torch

from gradbench import ops
from gradbench.estimator import Estimator, EstimatorOutput, NoConfig
from gradbench.registry import register_estimator


@register_estimator("muprop")
class MuProp(Estimator):
    supports = frozenset({"bernoulli", "categorical"})
    unbiased = True
    Config = NoConfig  # no hyper-parameters
    compilable = False  # autograd.grad inside forward
    batchable = False  # ... which cannot run under vmap

    def forward(self, logits, cost_fn) -> EstimatorOutput:
        node = self.node
        x = logits.detach()
        b = ops.from_perturbed(node, ops.perturb(node, x, ops.uniform(x.shape, x)))
        mu = ops.probs(node, x).requires_grad_(True)  # the mean-field point, a leaf
        with torch.enable_grad():
            f = cost_fn(torch.stack([b, mu]))  # (2, batch): f(b) and f(mu) in one call
            (slope,) = torch.autograd.grad(f[1].sum(), mu, retain_graph=True, allow_unused=True)
        if slope is None:  # a cost that ignores its input
            slope = torch.zeros_like(x)
        fd = f.detach()
        taylor = fd[1] + ops.flat_events(slope * (b - mu.detach()), node).sum(-1)  # h(b), (batch,)
        log_p = ops.log_prob(node, logits, b)
        mean = ops.probs(node, logits)  # mu with its graph to the logits
        analytic = ops.flat_events(slope * mean, node).sum(-1)  # d/dlogits: f'^T dmu/dlogits
        surrogate = (fd[0] - taylor) * (log_p - log_p.detach()) + (analytic - analytic.detach())
        return EstimatorOutput(sample=b, cost=fd[0], loss=(f[0] + surrogate).mean(), aux_loss=self.zero(logits),
                               diagnostics={"cost_evals": 2})
