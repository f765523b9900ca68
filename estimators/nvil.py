"""NVIL (Mnih & Gregor 2014): REINFORCE with an input-dependent learned baseline and variance normalisation.

    g = l * d log p(b) / d logits,   l = f(b) - c - b_psi(x)

* c: a running mean of f - b_psi(x) over past steps (decay ``decay``, bias-corrected like Adam), kept on
  the device; it never includes the current draw.
* b_psi(x): a small network (Linear-Tanh-Linear, ``hidden`` units) on the example's own logits, which are
  a function of the input x (the encoder's output), so the baseline depends on the example. It is
  trained through ``aux_loss`` on the squared centred cost (f - c - b_psi(x))^2, at its own learning rate
  ``lr``; its output layer starts at zero, so the first steps use c alone.
* ``normalise=true``: the paper's variance normalisation, l / max(1, s) with s a running standard
  deviation of f - b_psi(x). It rescales the score-function term by a factor in (0, 1] that the paper
  uses as an adaptive step size; the estimate is then E[g] = exact gradient / max(1, s): biased in
  scale, and in direction where the cost also reaches the logits directly (the ``vae``'s KL). With the
  default ``normalise=false`` the estimate is unbiased (the baseline never depends on the current draw),
  which is what ``unbiased = True`` claims; Adam already normalises step sizes per parameter. The claim
  follows the config (``tags_for``): ``nvil:normalise=true`` says ``unbiased: false`` in its records.

The cost function's own parameters get the ordinary gradient of the sampled cost. Cost: 1 cost evaluation
per step.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from gradbench import ops
from gradbench.estimator import Estimator, EstimatorOutput, EstimatorTags
from gradbench.node import Node
from gradbench.registry import register_estimator


@dataclass(frozen=True)
class NvilConfig:
    hidden: int = 100  # width of the baseline network b_psi on the example's logits
    decay: float = 0.8  # decay per step of the running mean and variance of f - b_psi(x) (the paper's 0.8)
    normalise: bool = False  # true: divide the learning signal by max(1, running std), as the paper (biased)
    lr: float = 3e-3  # learning rate of the baseline network

    def __post_init__(self) -> None:
        if self.hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {self.hidden}")
        if not 0 <= self.decay < 1:
            raise ValueError(f"decay must be in [0, 1), got {self.decay}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


@register_estimator("nvil")
class NVIL(Estimator):
    supports = frozenset({"bernoulli", "categorical"})
    unbiased = True  # with the default normalise=false; tags_for says False for normalise=true
    Config = NvilConfig

    @classmethod
    def tags_for(cls, config: NvilConfig | None = None) -> EstimatorTags:
        """normalise=true divides the estimate by max(1, running std): biased in scale (|z| = 33 on a
        Bernoulli node in the conformance suite's unbiasedness test), so it claims nothing."""
        tags = super().tags_for(config)
        return replace(tags, unbiased=tags.unbiased and not cls.config_or_default(config).normalise)

    def __init__(self, node: Node, config: NvilConfig | None = None) -> None:
        super().__init__(node, config)
        self.net = nn.Sequential(nn.Linear(node.numel, self.config.hidden), nn.Tanh(),
                                 nn.Linear(self.config.hidden, 1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        self.register_buffer("mean", torch.zeros(()))  # running mean of f - b_psi(x)
        self.register_buffer("var", torch.zeros(()))  # running variance of f - b_psi(x)
        self.register_buffer("count", torch.zeros(()))  # updates so far, for bias correction

    def forward(self, logits, cost_fn) -> EstimatorOutput:
        x = logits.detach()
        u = ops.uniform(x.shape, x)
        b = ops.from_perturbed(self.node, ops.perturb(self.node, x, u))
        f = cost_fn(b)  # (batch,); carries gradient to cost_fn's own parameters (and any direct path)
        fd = f.detach()
        dtype = self.net[0].weight.dtype
        baseline = self.net(ops.flat_events(x, self.node).to(dtype)).squeeze(-1).to(x.dtype)  # (batch,)
        debias = (1 - self.config.decay ** self.count).clamp_min(1e-12)
        seen = self.count > 0
        c = torch.where(seen, self.mean / debias, torch.zeros_like(self.mean)).to(x.dtype)
        centred = fd - c - baseline  # its square trains psi; the signal uses it detached
        signal = centred.detach()
        if self.config.normalise:
            std = torch.where(seen, (self.var / debias).sqrt(), torch.zeros_like(self.var)).to(x.dtype)
            signal = signal / std.clamp_min(1.0)
        if self.training:
            with torch.no_grad():
                residual = (fd - baseline).to(self.mean.dtype)
                d = self.config.decay
                self.mean.mul_(d).add_((1 - d) * residual.mean())
                self.var.mul_(d).add_((1 - d) * (residual - c.to(self.var.dtype)).pow(2).mean())
                self.count.add_(1)
        log_p = ops.log_prob(self.node, logits, b)  # (batch,)
        surrogate = f + signal * (log_p - log_p.detach())  # value: the cost
        return EstimatorOutput(sample=b, cost=fd, loss=surrogate.mean(), aux_loss=centred.pow(2).mean(),
                               diagnostics={"cost_evals": 1, "baseline_mse": centred.detach().pow(2).mean()})
