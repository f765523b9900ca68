"""Neural sequence sorting through a discrete code (DAB paper section 4.1, "10-sort signum-dense").

Input: a sequence of ``length`` i.i.d. U[0,1) numbers. Target: its argsort (for output position j,
the index of the j-th smallest input). Model: Linear(L,128)-Tanh-Linear(128,128)-Tanh-Linear(128,256)
-Tanh -> node (sign with margin 0.5, 256 units) -> Linear(256, L*L) -> (L, L) logits over input
indices. Cost: cross-entropy per output position, summed over positions.

Training data is either a fresh stream drawn on the device every step (``train_size=0``) or a fixed
set of ``train_size`` sequences generated once from the run's seed, batches drawn uniformly with
replacement. The test set is fixed (``test_seed``), the same for every run, so runs are paired.

With ``node=bernoulli`` the code is a stochastic Bernoulli layer whose logits are the last Linear's
output (no Tanh), so score-function estimators run too; it is evaluated with one sample drawn from
a fixed evaluation generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from gradbench import ops
from gradbench.node import Node
from gradbench.registry import register_task
from gradbench.task import Preset, Task


@dataclass(frozen=True)
class SortConfig:
    length: int = 10  # numbers per sequence (the paper: 10)
    node: Literal["sign", "bernoulli"] = "sign"  # the code: sign (with margin, the paper's) or bernoulli (stochastic)
    margin: float = 0.5  # sign's dead zone: 0 for |x| <= margin
    hidden: int = 128  # width of the two hidden layers before the code
    code: int = 256  # units through the node
    batch_size: int = 1024  # sequences per step
    lr: float = 1e-4  # Adam learning rate of the model
    train_size: int = 0  # 0: a fresh stream every step
    test_size: int = 400_000  # fixed test sequences
    test_seed: int = 2024  # seed of the fixed test set (the same for every run, so runs are paired)

    def __post_init__(self) -> None:
        for key in ("length", "hidden", "code", "batch_size", "test_size"):
            if getattr(self, key) < (2 if key == "length" else 1):
                raise ValueError(f"{key} must be >= {2 if key == 'length' else 1}, got {getattr(self, key)}")
        if self.train_size < 0:
            raise ValueError(f"train_size must be >= 0, got {self.train_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


@register_task("sort")
class SortTask(Task):
    version = "1"
    Config = SortConfig
    presets = {
        "quick": Preset(
            "5-sort, batch 256, Adam lr 3e-3, fresh data stream, 10k fixed test sequences; CPU, about a minute",
            steps=4000, eval_every=500,
            config={"length": 5, "batch_size": 256, "lr": 3e-3, "test_size": 10_000}),
        "paper": Preset(
            "10-sort signum-dense: 2M fixed training / 400k test sequences, batch 1024, Adam lr 1e-4 "
            "(paper trains up to 15,000 epochs = 29.3M steps; this budget is 200k steps, pass --steps for more)",
            steps=200_000, eval_every=5_000, grad_draws=1000,
            config={"length": 10, "batch_size": 1024, "lr": 1e-4, "train_size": 2_000_000, "test_size": 400_000}),
    }
    metrics = {"all_or_none": True, "per_element": True, "test_loss": False}
    main_metric = "all_or_none"

    @classmethod
    def node_of(cls, config: SortConfig) -> Node:
        if config.node == "sign":
            return Node("sign", (config.code,), margin=config.margin)
        return Node("bernoulli", (config.code,))

    def __init__(self, config: SortConfig, device: torch.device | str = "cpu") -> None:
        super().__init__(config, device)
        c = config
        layers = [nn.Linear(c.length, c.hidden), nn.Tanh(), nn.Linear(c.hidden, c.hidden), nn.Tanh(),
                  nn.Linear(c.hidden, c.code)]
        if c.node == "sign":
            layers.append(nn.Tanh())
        self.encoder = nn.Sequential(*layers)
        self.decoder = nn.Linear(c.code, c.length * c.length)
        self.to(self.device)
        if c.train_size:
            # from the run's seed; a buffer, so batched seeds stack each replica's own set
            self.register_buffer("train_x", torch.rand(c.train_size, c.length, device=self.device), persistent=False)
        g = torch.Generator(device="cpu").manual_seed(c.test_seed)
        self.test_x = torch.rand(c.test_size, c.length, generator=g).to(self.device)
        self.eval_generator = torch.Generator(device=self.device)

    def cost(self, code: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Summed per-position cross-entropy; ``code`` may carry leading sample dims."""
        L = self.config.length
        logits = self.decoder(code).unflatten(-1, (L, L))
        target = target.expand(*logits.shape[:-1])
        return F.cross_entropy(logits.flatten(0, -2), target.flatten(), reduction="none").view(target.shape).sum(-1)

    def train_batch(self):
        c = self.config
        if c.train_size:
            x = self.train_x[torch.randint(c.train_size, (c.batch_size,), device=self.device)]
        else:
            x = torch.rand(c.batch_size, c.length, device=self.device)
        target = x.argsort(-1)
        return self.encoder(x), lambda y: self.cost(y, target)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.eval_generator.manual_seed(self.config.test_seed)
        correct_seq = correct_el = loss = 0.0
        for x in self.test_x.split(8192):
            target = x.argsort(-1)
            code = ops.forward(self.node, self.encoder(x), self.eval_generator)
            L = self.config.length
            logits = self.decoder(code).view(-1, L, L)
            hit = logits.argmax(-1) == target
            correct_seq += hit.all(-1).sum()
            correct_el += hit.sum()
            loss += self.cost(code, target).sum()
        n = self.test_x.shape[0]
        return {"all_or_none": float(correct_seq) / n, "per_element": float(correct_el) / (n * self.config.length),
                "test_loss": float(loss) / n}
