"""Gumbel-Softmax / binary Concrete (Jang et al. 2017; Maddison et al. 2017).

The cost is evaluated at the relaxed sample softmax((log p + G) / tau) (sigmoid for Bernoulli), so the
gradient is a biased, low-variance reparameterisation gradient. ``hard=true`` is the straight-through
form: the forward value is the discrete sample, the backward the relaxed one's.

Temperature: constant ``tau`` or, with ``anneal_rate > 0``, tau_t = max(tau_min, tau * exp(-rate * t))
(the official notebook's schedule). The step counter is a device buffer, so the schedule needs no
host synchronisation.

Cost: 1 cost evaluation per step. With ``hard=false`` the cost is also evaluated at the discrete
sample, in the same call, to report the sample's cost (``EstimatorOutput.cost``: what every estimator
reports, so training curves compare); no gradient comes from that row, so it is not charged to
``cost_evals`` (which sets the steps of an ``--evals`` budget) but declared as ``report_evals``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gradbench import ops
from gradbench.estimator import Estimator, EstimatorOutput
from gradbench.node import Node
from gradbench.registry import register_estimator


@dataclass(frozen=True)
class GumbelConfig:
    tau: float = 1.0  # temperature of the relaxation
    hard: bool = False  # true: straight-through Gumbel (discrete forward, relaxed backward)
    anneal_rate: float = 0.0  # per step; 0 keeps tau constant
    tau_min: float = 0.5  # floor of the annealed temperature

    def __post_init__(self) -> None:
        if not self.tau > 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")
        if not self.tau_min > 0:
            raise ValueError(f"tau_min must be > 0, got {self.tau_min}")
        if not self.anneal_rate >= 0:
            raise ValueError(f"anneal_rate must be >= 0, got {self.anneal_rate}")


@register_estimator("gumbel")
class GumbelSoftmax(Estimator):
    supports = frozenset({"bernoulli", "categorical"})
    unbiased = False
    Config = GumbelConfig

    def __init__(self, node: Node, config: GumbelConfig | None = None) -> None:
        super().__init__(node, config)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def temperature(self) -> torch.Tensor:
        c = self.config
        tau = torch.full((), c.tau, device=self.step.device)
        if c.anneal_rate > 0:
            tau = torch.clamp(tau * torch.exp(-c.anneal_rate * self.step.float()), min=c.tau_min)
        return tau

    def forward(self, logits, cost_fn) -> EstimatorOutput:
        tau = self.temperature().to(logits.dtype)
        z = ops.perturb(self.node, logits, ops.uniform(logits.shape, logits))
        soft = ops.relaxed(self.node, z, tau)
        hard = ops.from_perturbed(self.node, z.detach())
        if self.config.hard:
            y = hard + (soft - soft.detach())
            cost = cost_fn(y)
            reported, report_evals = cost.detach(), 0
        else:
            # One call on [relaxed, discrete]: the gradient comes from the relaxed row; the discrete
            # row only reports the sample's cost: charged 1 row, plus 1 declared as report_evals.
            both = cost_fn(torch.stack([soft, hard]))
            cost, reported, report_evals = both[0], both[1].detach(), 1
        if self.training:
            self.step += 1
        diagnostics = {"cost_evals": 1, "tau": tau.detach()}
        if report_evals:
            diagnostics["report_evals"] = report_evals
        return EstimatorOutput(sample=hard, cost=reported, loss=cost.mean(), aux_loss=self.zero(logits),
                               diagnostics=diagnostics)
