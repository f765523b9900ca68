"""Exact-gradient toys: minimise E[f(b)] over the logits of independent discrete variables.

* ``bernoulli`` (REBAR/RELAX toy): f(b) = sum_i (b_i - t)^2, b_i ~ Bernoulli(sigmoid(phi_i)), over
  ``dim`` variables. The optimum puts every b_i at 0 when t < 0.5, so min E[f] = dim * t^2; with
  t = 0.45 the two choices differ little, and at t = 0.499 almost nothing (the RELAX hard case).
* ``categorical``: f(b) = sum_i ||b_i - t||^2 over ``dim`` one-hot variables of ``classes`` classes,
  with t a fixed near-uniform vector (t_c = (1 + spread * (c/(C-1) - 1/2)) / C). The optimum picks
  the class with the largest t_c.

The model is just the logits phi (initialised at 0), repeated over the batch. Metrics are exact,
not sampled: the expected cost under the current logits, and its gap to the optimum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from gradbench import ops
from gradbench.node import Node
from gradbench.registry import register_task
from gradbench.task import Preset, Task


@dataclass(frozen=True)
class ToyConfig:
    variant: Literal["bernoulli", "categorical"] = "bernoulli"  # bernoulli (the REBAR/RELAX toy) or categorical
    dim: int = 100  # independent discrete variables
    classes: int = 4  # classes per variable (categorical)
    target: float = 0.45  # t of the Bernoulli variant
    spread: float = 0.2  # how far the categorical target is from uniform
    batch_size: int = 1  # copies of the logits per step (independent samples)
    lr: float = 1e-2  # Adam learning rate of the logits

    def __post_init__(self) -> None:
        if self.dim < 1 or self.batch_size < 1:
            raise ValueError("dim and batch_size must be >= 1")
        if self.classes < 2:
            raise ValueError(f"classes must be >= 2, got {self.classes}")
        if not 0 <= self.target <= 1:
            raise ValueError(f"target must be in [0, 1], got {self.target}")
        if not 0 <= self.spread < 2:
            raise ValueError(f"spread must be in [0, 2), got {self.spread}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


@register_task("toy")
class ToyTask(Task):
    version = "2"  # 2: the estimator's noise is its own stream, reseeded after the model is built
    Config = ToyConfig
    presets = {
        "quick": Preset("100 Bernoulli variables, t=0.45, batch 1, Adam lr 1e-2, 2000 steps; 1000 gradient draws "
                        "per checkpoint (cheap here, and enough to resolve the mean gradient)", steps=2000,
                        eval_every=200, grad_draws=1000),
        "paper": Preset("RELAX's hard toy: t=0.499, 100 variables, 10,000 steps", steps=10_000, eval_every=1000,
                        grad_draws=1000,
                        config={"target": 0.499}),
    }
    metrics = {"gap": False, "expected_cost": False}
    main_metric = "gap"
    node_key = "variant"  # selects the node: bernoulli or categorical

    @classmethod
    def node_of(cls, config: ToyConfig) -> Node:
        if config.variant == "bernoulli":
            return Node("bernoulli", (config.dim,))
        return Node("categorical", (config.dim, config.classes))

    def __init__(self, config: ToyConfig, device: torch.device | str = "cpu") -> None:
        super().__init__(config, device)
        self.phi = nn.Parameter(torch.zeros(self.node.shape, device=self.device))
        if config.variant == "bernoulli":
            t = torch.full((), config.target)
        else:
            c = torch.arange(config.classes, dtype=torch.get_default_dtype())
            t = (1 + config.spread * (c / (config.classes - 1) - 0.5)) / config.classes
        self.register_buffer("t", t.to(self.device))

    def cost(self, y: torch.Tensor) -> torch.Tensor:
        return ops.flat_events((y - self.t).pow(2), self.node).sum(-1)

    def train_batch(self):
        return self.phi.expand(self.config.batch_size, *self.node.shape), self.cost

    def expected_cost(self) -> torch.Tensor:
        """E[f] in closed form under the current logits (differentiable: the exact gradient's source)."""
        p = ops.probs(self.node, self.phi)
        if self.config.variant == "bernoulli":
            t = self.t
            return (p * (1 - t) ** 2 + (1 - p) * t**2).sum()
        per_class = 1 - 2 * self.t + self.t.pow(2).sum()  # ||e_c - t||^2
        return (p * per_class).sum()

    def exact_gradient(self) -> list[torch.Tensor]:
        """The fixed batch is phi repeated, so its expected mean cost is expected_cost()."""
        return list(torch.autograd.grad(self.expected_cost(), [self.phi]))

    def optimum(self) -> float:
        c = self.config
        if c.variant == "bernoulli":
            return c.dim * min(c.target, 1 - c.target) ** 2
        per_class = 1 - 2 * self.t + self.t.pow(2).sum()
        return c.dim * float(per_class.min())

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        e = float(self.expected_cost())
        return {"gap": e - self.optimum(), "expected_cost": e}
