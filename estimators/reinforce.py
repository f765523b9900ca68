"""REINFORCE / score-function estimator (Williams, 1992), with three baselines.

gradient = (f(b) - baseline) * d log p(b) / d logits, unbiased for any baseline independent of b.

* ``none`` -- baseline 0; ``samples`` draws averaged.
* ``ema``  -- a moving average of past batch-mean costs (decay ``decay``, bias-corrected like Adam),
  kept on the device; it never includes the current draws, so the estimate stays unbiased.
* ``rloo`` -- leave-one-out over ``samples`` >= 2 draws per example (Kool et al. 2019): each draw's
  baseline is the mean cost of the other draws.

The cost function's own parameters get the ordinary gradient of the mean sampled cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from gradbench import ops
from gradbench.estimator import Estimator, EstimatorOutput
from gradbench.node import Node
from gradbench.registry import register_estimator


@dataclass(frozen=True)
class ReinforceConfig:
    baseline: Literal["none", "ema", "rloo"] = "rloo"  # rloo: leave-one-out over the samples
    samples: int = 2  # samples per example (cost evaluations per step)
    decay: float = 0.9  # the ema baseline's decay per step

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValueError(f"samples must be >= 1, got {self.samples}")
        if self.baseline == "rloo" and self.samples < 2:
            raise ValueError(f"baseline=rloo needs samples >= 2, got samples={self.samples}")
        if not 0 <= self.decay < 1:
            raise ValueError(f"decay must be in [0, 1), got {self.decay}")


@register_estimator("reinforce")
class Reinforce(Estimator):
    supports = frozenset({"bernoulli", "categorical"})
    unbiased = True
    Config = ReinforceConfig

    def __init__(self, node: Node, config: ReinforceConfig | None = None) -> None:
        super().__init__(node, config)
        self.register_buffer("ema", torch.zeros(()))
        self.register_buffer("count", torch.zeros(()))  # EMA updates so far, for bias correction

    def forward(self, logits, cost_fn) -> EstimatorOutput:
        n = self.config.samples
        u = ops.uniform((n, *logits.shape), logits)
        b = ops.from_perturbed(self.node, ops.perturb(self.node, logits.detach(), u))  # (n, batch, *shape)
        f = cost_fn(b)  # (n, batch); carries gradient to cost_fn's own parameters only
        fd = f.detach()
        if self.config.baseline == "rloo":
            baseline = (fd.sum(0, keepdim=True) - fd) / (n - 1)
        elif self.config.baseline == "ema":
            debias = 1 - self.config.decay ** self.count
            baseline = torch.where(self.count > 0, self.ema / debias.clamp_min(1e-12), torch.zeros_like(self.ema))
            if self.training:
                with torch.no_grad():
                    self.ema.mul_(self.config.decay).add_((1 - self.config.decay) * fd.mean())
                    self.count.add_(1)
        else:
            baseline = torch.zeros((), device=logits.device, dtype=logits.dtype)
        log_p = ops.log_prob(self.node, logits, b)  # (n, batch)
        surrogate = f + (fd - baseline) * (log_p - log_p.detach())  # value: the mean cost
        return EstimatorOutput(sample=b[0], cost=fd[0], loss=surrogate.mean(0).mean(), aux_loss=self.zero(logits),
                               diagnostics={"cost_evals": n})
