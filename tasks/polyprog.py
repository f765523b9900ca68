"""Polynomial programming, as ReinMax's paper defines it (Liu et al. 2023, "Bridging Discrete and
Backpropagation: Straight-Through and Beyond"; code: LiyuanLucasLiu/ReinMax, ``poly/poly_programming.py``).

``latents`` = L independent categorical variables of two classes, with logits theta (L, 2) initialised
U(-0.01, 0.01) and shared by every example of the batch. Each variable's one-hot sample z_i gives
X_i = z_i[0] (1 if the first class is drawn, else 0), and the loss of one example is

    f(X) = ||X - c||_p^p / L = (1/L) sum_i |X_i - c|^p,    c = ``target`` (0.45), p = ``pnorm`` (2; 1.5 and 3)

minimised over theta in expectation. The expectation is exact in closed form (the variables are
independent): E f = (1/L) sum_i [pi_i |1 - c|^p + (1 - pi_i) |c|^p], pi_i = softmax(theta_i)[0]; its
minimum is min(|1 - c|^p, |c|^p) (for c < 1/2: X = 0 everywhere). Metrics, exact, not sampled:
``expected_loss`` (main) and ``gap`` = expected_loss - its minimum. The exact gradient is known, so
gradient statistics report bias against the truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gradbench.node import Node
from gradbench.registry import register_task
from gradbench.task import Preset, Task


@dataclass(frozen=True)
class PolyprogConfig:
    latents: int = 128  # L categorical variables of two classes (ReinMax's --latent-dim)
    target: float = 0.45  # c, the same for every variable
    pnorm: float = 2.0  # p of |X_i - c|^p (ReinMax runs 1.5, 2 and 3)
    init: float = 0.01  # logits start U(-init, init)
    batch_size: int = 64  # examples per step, each its own draw of X
    lr: float = 1e-3  # Adam learning rate of the logits

    def __post_init__(self) -> None:
        if self.latents < 1 or self.batch_size < 1:
            raise ValueError("latents and batch_size must be >= 1")
        if not 0 <= self.target <= 1:
            raise ValueError(f"target must be in [0, 1], got {self.target}")
        if not self.pnorm > 0:
            raise ValueError(f"pnorm must be > 0, got {self.pnorm}")
        if not self.init >= 0:
            raise ValueError(f"init must be >= 0, got {self.init}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


@register_task("polyprog")
class PolyprogTask(Task):
    version = "1"
    Config = PolyprogConfig
    presets = {
        "quick": Preset("ReinMax's problem at its defaults (128 variables, c = 0.45, p = 2, batch 64, Adam 1e-3), "
                        "2,000 steps; CPU, seconds", steps=2000, eval_every=200, grad_draws=1000),
        "paper": Preset("ReinMax's poly_programming.py: 128 variables, c = 0.45, p = 2 (pnorm=1.5 and 3: its "
                        "other runs), batch 64, Adam 1e-3, 40 epochs of 200 steps", steps=8000, eval_every=200,
                        grad_draws=1000),
    }
    metrics = {"expected_loss": False, "gap": False}
    main_metric = "expected_loss"
    node_key = None  # one node: categorical (latents, 2)

    @classmethod
    def node_of(cls, config: PolyprogConfig) -> Node:
        return Node("categorical", (config.latents, 2))

    def __init__(self, config: PolyprogConfig, device: torch.device | str = "cpu") -> None:
        super().__init__(config, device)
        theta = torch.empty(self.node.shape).uniform_(-config.init, config.init)
        self.theta = nn.Parameter(theta.to(self.device))
        c, p = config.target, config.pnorm
        self.loss_one, self.loss_zero = abs(1 - c) ** p, abs(c) ** p  # f's per-variable terms at X_i = 1, 0

    def cost(self, y: torch.Tensor) -> torch.Tensor:
        """||X - c||_p^p / L with X = y[..., 0]: any leading dims, relaxed y accepted."""
        c = self.config
        return (y[..., 0] - c.target).abs().pow(c.pnorm).mean(-1)

    def train_batch(self):
        return self.theta.expand(self.config.batch_size, *self.node.shape), self.cost

    def expected_loss(self) -> torch.Tensor:
        """E f in closed form under the current logits (differentiable: the exact gradient's source)."""
        pi = torch.softmax(self.theta, -1)[:, 0]
        return (pi * self.loss_one + (1 - pi) * self.loss_zero).mean()

    def exact_gradient(self) -> list[torch.Tensor]:
        """The fixed batch is theta repeated, so its expected mean cost is expected_loss()."""
        return list(torch.autograd.grad(self.expected_loss(), [self.theta]))

    def optimum(self) -> float:
        return min(self.loss_one, self.loss_zero)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        e = float(self.expected_loss())
        return {"expected_loss": e, "gap": e - self.optimum()}
