"""Neural sequence sorting through a discrete code (DAB paper section 4.1, "10-sort signum-dense").

Input: a sequence of ``length`` i.i.d. U[0,1) numbers. Target: its argsort (for output position j,
the index of the j-th smallest input). Model: Linear(L,128)-Tanh-Linear(128,128)-Tanh-Linear(128,256)
-Tanh -> node (sign with margin 0.5, 256 units) -> Linear(256, L*L) -> (L, L) logits over input
indices. Cost: cross-entropy per output position, summed over positions.

Training data is either a fresh stream drawn on the device every step (``train_size=0``) or a fixed
set of ``train_size`` sequences generated once from the run's seed, batches drawn uniformly with
replacement; both come from the task's data stream, so for one seed every estimator sees the same
sequences. The test set is fixed (``test_seed``), the same for every run, so runs are paired; so is the
validation set (``valid_seed``, ``valid_size``), on which the same metrics are recorded as ``valid_*``
(what tuning selects on).

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
from gradbench.task import Preset, Task, validation_metrics


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
    valid_size: int = 10_000  # fixed validation sequences (what tuning selects on; never the test set)
    valid_seed: int = 2025  # seed of the fixed validation set

    def __post_init__(self) -> None:
        if self.valid_seed == self.test_seed:
            raise ValueError("valid_seed must differ from test_seed (the validation set would be the test set)")
        for key in ("length", "hidden", "code", "batch_size", "test_size", "valid_size"):
            if getattr(self, key) < (2 if key == "length" else 1):
                raise ValueError(f"{key} must be >= {2 if key == 'length' else 1}, got {getattr(self, key)}")
        if self.train_size < 0:
            raise ValueError(f"train_size must be >= 0, got {self.train_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


@register_task("sort")
class SortTask(Task):
    version = "2"  # 2: data from the task's own stream (common random numbers); validation metrics
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
            config={"length": 10, "batch_size": 1024, "lr": 1e-4, "train_size": 2_000_000, "test_size": 400_000,
                    "valid_size": 40_000}),
    }
    metrics = validation_metrics({"all_or_none": True, "per_element": True, "test_loss": False})
    main_metric = "all_or_none"
    fraction_metrics = frozenset({"all_or_none", "per_element"})  # one sequence moves them by <= 1/N

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
            # from the run's data stream; a buffer, so batched seeds stack each replica's own set
            train_x = torch.rand(c.train_size, c.length, device=self.device, generator=self.data_generator)
            self.register_buffer("train_x", train_x, persistent=False)
        self.test_x = self._fixed_set(c.test_size, c.test_seed)
        self.valid_x = self._fixed_set(c.valid_size, c.valid_seed)
        self.eval_generator = torch.Generator(device=self.device)

    def _fixed_set(self, size: int, seed: int) -> torch.Tensor:
        g = torch.Generator(device="cpu").manual_seed(seed)
        return torch.rand(size, self.config.length, generator=g).to(self.device)

    def cost(self, code: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Summed per-position cross-entropy; ``code`` may carry leading sample dims."""
        L = self.config.length
        logits = self.decoder(code).unflatten(-1, (L, L))
        target = target.expand(*logits.shape[:-1])
        return F.cross_entropy(logits.flatten(0, -2), target.flatten(), reduction="none").view(target.shape).sum(-1)

    def train_batch(self):
        c = self.config
        g = self.data_generator
        if c.train_size:
            x = self.train_x[torch.randint(c.train_size, (c.batch_size,), device=self.device, generator=g)]
        else:
            x = torch.rand(c.batch_size, c.length, device=self.device, generator=g)
        target = x.argsort(-1)
        return self.encoder(x), lambda y: self.cost(y, target)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.eval_generator.manual_seed(self.config.test_seed)
        test = self._scores(self.test_x)
        self.eval_generator.manual_seed(self.config.valid_seed)
        valid = self._scores(self.valid_x)
        return {**test, "valid_all_or_none": valid["all_or_none"], "valid_per_element": valid["per_element"],
                "valid_loss": valid["test_loss"]}

    def _scores(self, sequences: torch.Tensor) -> dict[str, float]:
        """The test metrics' values on ``sequences``; stochastic codes from the evaluation generator."""
        correct_seq = correct_el = loss = 0.0
        for x in sequences.split(8192):
            target = x.argsort(-1)
            code = ops.forward(self.node, self.encoder(x), self.eval_generator)
            L = self.config.length
            logits = self.decoder(code).view(-1, L, L)
            hit = logits.argmax(-1) == target
            correct_seq += hit.all(-1).sum()
            correct_el += hit.sum()
            loss += self.cost(code, target).sum()
        n = sequences.shape[0]
        return {"all_or_none": float(correct_seq) / n, "per_element": float(correct_el) / (n * self.config.length),
                "test_loss": float(loss) / n}
