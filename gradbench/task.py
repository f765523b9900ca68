"""The task contract: a model and data behind a non-differentiable node, and how to score it.

The harness owns the training loop, optimizer, seeding, device, timing and progress; a task only
builds its model and data, hands out ``(logits, cost_fn)`` for a training batch and evaluates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from gradbench.config import build_config, config_dict, label, non_default
from gradbench.errors import UsageError
from gradbench.node import Node


@dataclass(frozen=True)
class Preset:
    """A named protocol: config overrides, a default step budget and how often to evaluate."""

    description: str
    steps: int
    eval_every: int
    config: dict[str, Any] = field(default_factory=dict)


class Task(torch.nn.Module):
    """Base class for tasks. ``Config`` must have ``lr`` and ``batch_size`` fields.

    Subclasses implement ``node``, ``train_batch`` and ``evaluate``; parameters registered on the
    module are the ones the harness optimises. Training batches must be made on the device without
    host synchronisation (no ``.item()``), so the step can later be graph-captured.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    Config: ClassVar[type]
    presets: ClassVar[dict[str, Preset]]
    metrics: ClassVar[dict[str, bool]]  # metric name -> higher is better
    main_metric: ClassVar[str]

    def __init__(self, config: Any, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.config = config
        self.device = torch.device(device)

    @classmethod
    def node_of(cls, config: Any) -> Node:  # pragma: no cover - abstract
        """The node a config produces, known without building the model (for support checks)."""
        raise NotImplementedError

    @property
    def node(self) -> Node:
        return self.node_of(self.config)

    def train_batch(self) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:  # pragma: no cover
        """Draw one training batch: logits ``(batch, *node.shape)`` and its ``cost_fn``."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:  # pragma: no cover
        """Metrics on held-out data (every name in ``metrics``)."""
        raise NotImplementedError

    @classmethod
    def make_config(cls, values: dict[str, Any] | None = None, preset: str = "quick") -> Any:
        """The preset's config with ``values`` on top; raises UsageError on bad keys/values."""
        owner = f"task {cls.name!r}"
        if preset not in cls.presets:
            raise UsageError(f"{owner} has no preset {preset!r}; presets: {', '.join(cls.presets)}")
        base = build_config(cls.Config, cls.presets[preset].config, owner)
        return build_config(cls.Config, values, owner, base=base)

    def describe(self, preset: str) -> dict[str, Any]:
        preset_config = self.make_config(None, preset)
        return {"name": self.name, "version": self.version, "config": config_dict(self.config),
                "label": label(self.name, non_default(self.config, preset_config)),
                "node": self.node.to_dict()}
