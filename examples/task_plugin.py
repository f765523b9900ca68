"""A task plugin in one file: learn the sign of a sum through a layer of binary units.

Run it without installing anything:

    gradbench run --task threshold-sum --estimator reinforce --plugin examples/task_plugin.py
    gradbench run --task threshold-sum:node=sign --estimator dab --plugin examples/task_plugin.py
    gradbench describe threshold-sum --plugin examples/task_plugin.py

Each example is a vector x of ``dim`` standard normal numbers; its label is 1 if sum(x) > 0, else 0.
An encoder maps x to the logits of ``code`` units, the node turns them into discrete values (Bernoulli
samples by default, so every built-in estimator can run it; ``node=sign`` for the deterministic
sign with margin), and a linear decoder reads one logit for the label off the code. The cost is the
binary cross-entropy of the label, per example. Metrics: accuracy and cross-entropy on a fixed test
set. The quick preset trains in a few seconds on a CPU.

The harness owns everything else: the training loop, Adam, seeding, the device, timing, evaluation
schedule, gradient statistics and the run record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

import gradbench
from gradbench import ops
from gradbench.task import Preset


@dataclass(frozen=True)
class ThresholdSumConfig:              # 1. every setting, with defaults; `threshold-sum:key=value` sets one
    dim: int = 10  # numbers per example
    node: Literal["bernoulli", "sign"] = "bernoulli"  # the discrete layer: Bernoulli samples or sign
    code: int = 8  # units in the discrete layer (8 bits: 256 codes, few enough to enumerate)
    hidden: int = 32  # width of the encoder's hidden layer
    batch_size: int = 128  # training examples per step (the harness requires this field)
    lr: float = 1e-2  # Adam learning rate (the harness requires this field)
    test_size: int = 4096  # fixed test examples
    test_seed: int = 0  # seed of the test set: the same for every run, so runs are paired

    def __post_init__(self) -> None:   #    bad values raise ValueError; the CLI reports them in one line
        for key in ("dim", "code", "hidden", "batch_size", "test_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


@gradbench.register_task("threshold-sum")      # 2. the name users type: --task threshold-sum
class ThresholdSum(gradbench.Task):
    version = "1"                              # 3. part of the run id: bump it when what the task computes changes
    Config = ThresholdSumConfig
    presets = {                                # 4. named protocols: config overrides, steps, evaluation interval
        "quick": Preset("10 normal inputs, 8-unit code, batch 128, Adam lr 1e-2, 500 steps; CPU, seconds",
                        steps=500, eval_every=100),
    }
    metrics = {"accuracy": True, "test_loss": False}   # 5. metric -> higher is better
    main_metric = "accuracy"

    @classmethod
    def node_of(cls, config: ThresholdSumConfig) -> gradbench.Node:
        """6. The node a config produces, known without building anything (for support checks)."""
        if config.node == "sign":
            return gradbench.Node("sign", (config.code,), margin=0.5)
        return gradbench.Node("bernoulli", (config.code,))

    def __init__(self, config: ThresholdSumConfig, device: torch.device | str = "cpu") -> None:
        """7. Build the model and the data, on the device, once. The harness has seeded torch already."""
        super().__init__(config, device)
        c = config
        layers = [nn.Linear(c.dim, c.hidden), nn.Tanh(), nn.Linear(c.hidden, c.code)]
        if c.node == "sign":
            layers.append(nn.Tanh())           # sign with margin 0.5 after a Tanh, as in the DAB paper's demo
        self.encoder = nn.Sequential(*layers)  # parameters registered on the module are the ones trained
        self.decoder = nn.Linear(c.code, 1)
        self.to(self.device)
        g = torch.Generator().manual_seed(c.test_seed)  # the test set does not depend on the run's seed
        self.test_x = torch.randn(c.test_size, c.dim, generator=g).to(self.device)
        self.test_y = self.label(self.test_x)
        self.eval_generator = torch.Generator(device=self.device)

    @staticmethod
    def label(x: torch.Tensor) -> torch.Tensor:
        return (x.sum(-1) > 0).to(x.dtype)

    def cost(self, code: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy per example. ``code`` is (*prefix, batch, code): it may be relaxed (continuous)
        and carry leading sample dims; the result is (*prefix, batch)."""
        logit = self.decoder(code).squeeze(-1)
        return F.binary_cross_entropy_with_logits(logit, y.expand_as(logit), reduction="none")

    def train_batch(self):
        """8. One training batch: (logits in front of the node, cost_fn). Drawn on the device, no .item(), and
        from ``self.data_generator`` (the run's data stream), so every estimator sees the same batches."""
        x = torch.randn(self.config.batch_size, self.config.dim, device=self.device, generator=self.data_generator)
        y = self.label(x)
        return self.encoder(x), lambda code: self.cost(code, y)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """9. Every metric on held-out data. A stochastic code gets one sample from a fixed generator,
        so evaluation is deterministic and never draws from training's random stream."""
        self.eval_generator.manual_seed(self.config.test_seed)
        code = ops.forward(self.node, self.encoder(self.test_x), self.eval_generator)
        logit = self.decoder(code).squeeze(-1)
        accuracy = ((logit > 0).to(logit.dtype) == self.test_y).to(torch.float32).mean()
        return {"accuracy": float(accuracy), "test_loss": float(self.cost(code, self.test_y).mean())}

    def exact_gradient(self) -> list[torch.Tensor] | None:
        """10. Optional: the exact gradient of the fixed batch's expected cost, so gradient statistics report
        bias against the truth. Here by enumerating all 2^code codes (None for the sign node)."""
        return self.enumerated_gradient()
