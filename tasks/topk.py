"""Feature selection through a top-k mask, with a known answer (an L2X-style synthetic problem).

Data: x in R^n. ``k`` of the n features are informative, z ~ N(0, 1) each; ``proxies`` further features
are noisy copies of the first informative ones, rho * z_i + sqrt(1 - rho^2) e (correlation rho: partly
informative, a trap for a selector that settles early); the rest are N(0, 1) noise. The label is
argmax_c (W z)_c over ``classes`` classes, W a fixed Gaussian matrix, so the k informative features (and
only all of them) determine it. Which features play which part, and W, are fixed by ``problem_seed`` (the
same for every run and seed, so runs are paired); the positions are shuffled.

Model: a selector Linear(n, hidden)-ReLU-Linear(hidden, n) gives per-example scores -> node ``topk`` (the
k-hot mask of the k largest scores) -> a classifier Linear(n, hidden)-ReLU-Linear(hidden, classes) on the
masked input x * mask. Cost: the classifier's cross-entropy, per example. The known answer is to select
the informative set in every example.

Metrics on the fixed test set: ``precision`` (main): the mean over examples of |selected & informative| / k;
``accuracy`` and ``test_loss`` of the classifier through the hard mask; the same on the fixed validation set
as ``valid_precision``, ``valid_accuracy``, ``valid_loss``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gradbench import ops
from gradbench.node import Node
from gradbench.registry import register_task
from gradbench.task import Preset, Task, validation_metrics


@dataclass(frozen=True)
class TopkConfig:
    features: int = 32  # n: input features, the top-k is taken over them
    k: int = 4  # informative features, and the size of the selected set
    proxies: int = 4  # noisy copies of informative features (at most k)
    rho: float = 0.8  # correlation of a proxy with the informative feature it copies
    classes: int = 4  # label classes
    hidden: int = 64  # width of the selector's and the classifier's hidden layer
    batch_size: int = 128  # examples per step
    lr: float = 3e-3  # Adam learning rate of the model
    problem_seed: int = 0  # which features are informative, and W (the same for every run)
    test_size: int = 10_000  # fixed test examples
    test_seed: int = 2024  # seed of the fixed test set
    valid_size: int = 5_000  # fixed validation examples (what tuning selects on)
    valid_seed: int = 2025  # seed of the fixed validation set

    def __post_init__(self) -> None:
        for key in ("features", "k", "classes", "hidden", "batch_size", "test_size", "valid_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if not 0 <= self.proxies <= self.k:
            raise ValueError(f"proxies must be in [0, k={self.k}], got {self.proxies}")
        if self.k + self.proxies >= self.features:
            raise ValueError(f"k + proxies must be < features, got {self.k} + {self.proxies} >= {self.features}")
        if self.classes < 2:
            raise ValueError(f"classes must be >= 2, got {self.classes}")
        if not 0 <= self.rho < 1:
            raise ValueError(f"rho must be in [0, 1), got {self.rho}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.valid_seed == self.test_seed:
            raise ValueError("valid_seed must differ from test_seed (the validation set would be the test set)")


@register_task("topk")
class TopkTask(Task):
    version = "1"
    Config = TopkConfig
    presets = {
        "quick": Preset("32 features, 4 informative + 4 proxies (rho 0.8), 4 classes, hidden 64, batch 128, "
                        "Adam lr 3e-3, 2000 steps; CPU, seconds", steps=2000, eval_every=250),
        "paper": Preset("128 features, 8 informative + 8 proxies (rho 0.8), 10 classes, hidden 256, batch 256, "
                        "Adam lr 1e-3, 20k steps; gradbench's protocol (no published one)", steps=20_000,
                        eval_every=2_000, grad_draws=1000,
                        config={"features": 128, "k": 8, "proxies": 8, "classes": 10, "hidden": 256,
                                "batch_size": 256, "lr": 1e-3}),
    }
    metrics = validation_metrics({"precision": True, "accuracy": True, "test_loss": False})
    main_metric = "precision"
    fraction_metrics = frozenset({"precision", "accuracy"})  # one example moves them by <= 1/N
    node_key = None  # one node kind (topk): no setting selects another

    @classmethod
    def node_of(cls, config: TopkConfig) -> Node:
        return Node("topk", (config.features,), k=config.k)

    def __init__(self, config: TopkConfig, device: torch.device | str = "cpu") -> None:
        super().__init__(config, device)
        c = config
        g = torch.Generator().manual_seed(c.problem_seed)
        order = torch.randperm(c.features, generator=g)
        self.register_buffer("informative", order[:c.k].to(self.device), persistent=False)
        self.register_buffer("proxy", order[c.k:c.k + c.proxies].to(self.device), persistent=False)
        self.register_buffer("W", torch.randn(c.classes, c.k, generator=g).to(self.device), persistent=False)
        self.selector = nn.Sequential(nn.Linear(c.features, c.hidden), nn.ReLU(), nn.Linear(c.hidden, c.features))
        self.classifier = nn.Sequential(nn.Linear(c.features, c.hidden), nn.ReLU(), nn.Linear(c.hidden, c.classes))
        self.to(self.device)
        self.test_x, self.test_y = self._fixed_set(c.test_size, c.test_seed)
        self.valid_x, self.valid_y = self._fixed_set(c.valid_size, c.valid_seed)

    def sample(self, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``size`` examples (x, label) drawn on the device from ``generator``."""
        c = self.config
        x = torch.randn(size, c.features, device=self.device, generator=generator)
        z = x[:, self.informative]
        copies = c.rho * z[:, :c.proxies] + math.sqrt(1 - c.rho**2) * x[:, self.proxy]
        x = x.index_copy(1, self.proxy, copies)
        return x, (z @ self.W.T).argmax(-1)

    def _fixed_set(self, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator(device=self.device).manual_seed(seed)
        return self.sample(size, g)

    def cost(self, mask: torch.Tensor, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Cross-entropy per example of the classifier on x * mask; ``mask`` may carry leading sample dims."""
        logits = self.classifier(x * mask)
        label = label.expand(logits.shape[:-1])
        return F.cross_entropy(logits.flatten(0, -2), label.flatten(), reduction="none").view(label.shape)

    def train_batch(self):
        x, label = self.sample(self.config.batch_size, self.data_generator)
        return self.selector(x), lambda mask: self.cost(mask, x, label)

    def _scores(self, xs: torch.Tensor, labels: torch.Tensor) -> tuple[float, float, float]:
        """(precision, accuracy, mean cross-entropy) on one fixed set."""
        truth = torch.zeros(self.config.features, device=self.device).index_fill(0, self.informative, 1.0)
        hits = correct = loss = 0.0
        for x, y in zip(xs.split(8192), labels.split(8192), strict=True):
            mask = ops.hard(self.node, self.selector(x))
            hits += (mask * truth).sum()
            correct += (self.classifier(x * mask).argmax(-1) == y).sum()
            loss += self.cost(mask, x, y).sum()
        n = xs.shape[0]
        return float(hits) / (n * self.config.k), float(correct) / n, float(loss) / n

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        precision, accuracy, loss = self._scores(self.test_x, self.test_y)
        v_precision, v_accuracy, v_loss = self._scores(self.valid_x, self.valid_y)
        return {"precision": precision, "accuracy": accuracy, "test_loss": loss, "valid_precision": v_precision,
                "valid_accuracy": v_accuracy, "valid_loss": v_loss}
