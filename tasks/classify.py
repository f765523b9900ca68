"""Image classification through a non-differentiable hidden layer (DAB paper's classification domain).

Model: Linear(D, hidden)-ReLU-Linear(hidden, code) [-Tanh for ``sign``] -> node (``code`` units) ->
Linear(code, hidden)-ReLU-Linear(hidden, 10). Inputs are grey levels in [0, 1]. Cost: cross-entropy of
the class, per example. The node is ``sign`` (with margin, after a Tanh, as in the DAB paper's demo),
``threshold`` (1[x > 0]) or ``bernoulli`` (stochastic; evaluated with one sample from a fixed generator),
or one of the DAB paper's own non-elementwise functions (docs/nodes.md):

* ``sort``: the sort non-linearity, the code units split into groups of ``group`` units, each group sorted
  (``group`` = ``code`` sorts the whole layer); the decoder sees the sorted values (``code`` units).
* ``rank``: each group's permutation matrix (group x group: the layer changes shape, ``code`` -> ``code`` x
  ``group`` units into the decoder; straight-through cannot run it).
* ``round``: a quantized hidden layer, Tanh then uniform quantization to ``levels`` levels over [-1, 1].

The paper's own architecture could not be retrieved; this protocol is gradbench's (docs/tasks.md).
Metrics on the fixed test split: accuracy (main) and mean cross-entropy (``test_loss``); the same on the
fixed validation split as ``valid_accuracy`` and ``valid_loss`` (what tuning selects on).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from gradbench import data, ops
from gradbench.node import Node
from gradbench.registry import register_task
from gradbench.task import Preset, Task, validation_metrics


@dataclass(frozen=True)
class ClassifyConfig:
    dataset: Literal["digits", "fashion-mnist", "mnist"] = "digits"  # digits is embedded; the others load from disk
    node: Literal["sign", "threshold", "bernoulli", "sort", "rank", "round"] = "sign"  # the hidden layer's op
    margin: float = 0.5  # sign's dead zone: 0 for |x| <= margin
    hidden: int = 256  # width of the dense layers around the node
    code: int = 256  # units through the node
    batch_size: int = 64  # training images per step
    lr: float = 1e-3  # Adam learning rate of the model
    group: int = 8  # sort, rank: units per sorted (ranked) group; code must be a multiple
    levels: int = 4  # round: quantization levels over [-1, 1]

    def __post_init__(self) -> None:
        for key in ("hidden", "code", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.node in ("sort", "rank") and (self.group < 2 or self.code % self.group):
            raise ValueError(f"group must be >= 2 and divide code={self.code}, got {self.group}")
        if self.levels < 2:
            raise ValueError(f"levels must be >= 2, got {self.levels}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.margin < 1:
            raise ValueError(f"margin must be in [0, 1), got {self.margin}")


@register_task("classify")
class ClassifyTask(Task):
    version = "2"  # 2: data from the task's own stream (common random numbers); validation metrics
    added_keys = {"group": 8, "levels": 4}  # with the sort, rank and round nodes
    Config = ClassifyConfig
    presets = {
        "quick": Preset("digits (8x8), 256-unit sign layer, batch 64, Adam lr 1e-3, 1500 steps; CPU, seconds",
                        steps=1500, eval_every=250),
        "paper": Preset("Fashion-MNIST, 512-unit sign layer, hidden 512, batch 100, Adam lr 1e-3, 50k steps "
                        "(~91 epochs); gradbench's protocol", steps=50_000, eval_every=5_000, grad_draws=1000,
                        config={"dataset": "fashion-mnist", "hidden": 512, "code": 512, "batch_size": 100}),
    }
    metrics = validation_metrics({"accuracy": True, "test_loss": False})
    main_metric = "accuracy"
    fraction_metrics = frozenset({"accuracy"})  # one validation image moves it by 1/N (tuning's tie rule)

    @classmethod
    def node_of(cls, config: ClassifyConfig) -> Node:
        if config.node == "sign":
            return Node("sign", (config.code,), margin=config.margin)
        groups = (config.code // config.group, config.group)
        if config.node == "sort":
            return Node("sort", groups)
        if config.node == "rank":
            return Node("rank", (*groups, config.group))
        if config.node == "round":
            return Node("round", (config.code,), levels=config.levels)
        return Node(config.node, (config.code,))

    @classmethod
    def check_config(cls, config: ClassifyConfig) -> None:
        data.check(config.dataset)

    def __init__(self, config: ClassifyConfig, device: torch.device | str = "cpu") -> None:
        super().__init__(config, device)
        c = config
        self.data = data.image_set(c.dataset, None, self.device)
        layers = [nn.Linear(self.data.dim, c.hidden), nn.ReLU(), nn.Linear(c.hidden, c.code)]
        if c.node in ("sign", "round"):
            layers.append(nn.Tanh())
        node = self.node
        grouped = len(node.in_shape) > 1  # sort, rank: (groups, group) into the node, flattened after it
        if grouped:
            layers.append(nn.Unflatten(-1, node.in_shape))
        self.encoder = nn.Sequential(*layers)
        head = [nn.Flatten(-len(node.shape))] if grouped else []
        self.decoder = nn.Sequential(*head, nn.Linear(node.numel, c.hidden), nn.ReLU(),
                                     nn.Linear(c.hidden, self.data.classes))
        self.to(self.device)
        self.eval_generator = torch.Generator(device=self.device)

    def cost(self, code: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Cross-entropy per example; ``code`` may carry leading sample dims."""
        logits = self.decoder(code)
        label = label.expand(logits.shape[:-1])
        return F.cross_entropy(logits.flatten(0, -2), label.flatten(), reduction="none").view(label.shape)

    def train_batch(self):
        x, y = self.data.batch(self.config.batch_size, self.data_generator)
        return self.encoder(x), lambda code: self.cost(code, y)

    def _scores(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
        """(accuracy, mean cross-entropy) on one split; stochastic codes from the evaluation generator."""
        hits = loss = 0.0
        for x, y in zip(images.split(4096), labels.split(4096), strict=True):
            code = ops.forward(self.node, self.encoder(x), self.eval_generator)
            hits += (self.decoder(code).argmax(-1) == y).sum()
            loss += self.cost(code, y).sum()
        n = images.shape[0]
        return float(hits) / n, float(loss) / n

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.eval_generator.manual_seed(0)
        accuracy, loss = self._scores(self.data.test_x, self.data.test_y)
        self.eval_generator.manual_seed(1)
        valid_accuracy, valid_loss = self._scores(self.data.valid_x, self.data.valid_y)
        return {"accuracy": accuracy, "test_loss": loss, "valid_accuracy": valid_accuracy, "valid_loss": valid_loss}
