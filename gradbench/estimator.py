"""The estimator contract (docs/concepts.md): a Module that turns logits and a cost function into a surrogate loss.

``loss`` carries the gradient estimate to everything upstream of ``logits`` and to ``cost_fn``'s own
parameters; ``aux_loss`` trains only the estimator's own parameters. The harness sums them and
backpropagates once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch

from gradbench.config import build_config, label, non_default
from gradbench.errors import UnsupportedError, UsageError
from gradbench.node import Node

CostFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class EstimatorOutput:
    """What one estimator call returns (shapes for logits of shape ``(batch, *shape)``)."""

    sample: torch.Tensor  # (batch, *shape): the hard/discrete value used in the forward pass
    cost: torch.Tensor  # (batch,): cost_fn at that sample, for reporting
    loss: torch.Tensor  # scalar surrogate: its gradient is the estimate
    aux_loss: torch.Tensor  # scalar training only the estimator's own parameters
    diagnostics: dict[str, Any] = field(default_factory=dict)  # floats or 0-d tensors


@dataclass(frozen=True)
class NoConfig:
    """Config of an estimator without hyper-parameters."""


@dataclass(frozen=True)
class EstimatorTags:
    """What an estimator is, at one configuration: the facts the engine acts on (the run record's
    ``unbiased``, which conformance checks apply, how gradient draws and seeds are batched, which
    execution paths may run, which nodes are refused).

    ``Estimator.tags_for(config)`` returns them; by default they are the class's ClassVars, so an
    estimator whose facts do not depend on its config declares nothing more. One whose facts do (NVIL's
    ``normalise=true`` is biased) overrides ``tags_for`` (like scikit-learn's ``__sklearn_tags__``).
    Cost evaluations per step are not a tag: they depend on the node too (ARSM: 1 + C(C-1)/2), so the
    estimator reports them in ``diagnostics["cost_evals"]`` and the conformance suite counts them.
    """

    supports: frozenset[str]  # node kinds this configuration runs (a subset of the class's ``supports``)
    unbiased: bool  # claims E[gradient] = exact gradient of E[f] on stochastic nodes
    batch_independent: bool = True  # each example's estimate ignores the rest of the batch (checked)
    compilable: bool = True  # forward can run under torch.compile
    capturable: bool = True  # a training step can be replayed from a CUDA graph
    batchable: bool = True  # forward can run under torch.func.vmap (batched seeds)
    needs_log_weights: bool = False  # needs the task's per-sample log-weights (VIMCO)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


class Estimator(torch.nn.Module):
    """Base class. Subclasses set the ClassVars, build their parameters in ``__init__`` and implement ``forward``.

    ``Config`` may declare ``lr``: the harness then trains the estimator's own parameters with
    that learning rate (control variates and approximators often need their own).
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    supports: ClassVar[frozenset[str]] = frozenset()
    unbiased: ClassVar[bool] = False
    Config: ClassVar[type] = NoConfig
    batch_independent: ClassVar[bool] = True  # each example's estimate ignores the rest of the batch
    compilable: ClassVar[bool] = True  # False: forward cannot run under torch.compile (e.g. double backward)
    capturable: ClassVar[bool] = True  # False: a training step cannot be replayed from a CUDA graph (host syncs,
    # data-dependent control flow, host-side state); the harness then runs it eagerly
    needs_log_weights: ClassVar[bool] = False  # True: needs the task's per-sample log-weights (VIMCO); run only
    # where ``Task.provides_log_weights(config)``, refused elsewhere before any work
    batchable: ClassVar[bool] = True  # False: forward cannot run under torch.func.vmap (batched seeds), e.g.
    # because it calls torch.autograd.grad; seeds then run one after another

    def __init__(self, node: Node, config: Any = None) -> None:
        super().__init__()
        if node.kind not in self.supports:
            raise UnsupportedError(
                f"estimator {self.name!r} does not support {node.kind!r} nodes "
                f"(it supports: {', '.join(sorted(self.supports))})"
            )
        self.node = node
        self.config = config if config is not None else self.Config()
        if not isinstance(self.config, self.Config):
            raise UsageError(f"estimator {self.name!r} expects a {self.Config.__name__}, got {type(config).__name__}")

    def forward(self, logits: torch.Tensor, cost_fn: CostFn) -> EstimatorOutput:  # pragma: no cover
        raise NotImplementedError

    @classmethod
    def tags_for(cls, config: Any = None) -> EstimatorTags:
        """The facts of this estimator at ``config`` (None: the default config). By default the ClassVars;
        override where a fact depends on the config, starting from ``super().tags_for(config)``::

            @classmethod
            def tags_for(cls, config=None):
                tags = super().tags_for(config)
                return dataclasses.replace(tags, unbiased=not cls.config_or_default(config).normalise)

        A configuration that runs fewer node kinds than the class (``supports``) narrows ``supports`` here
        and refuses the others in its constructor with its own message."""
        facts = {name: bool(getattr(cls, name)) for name in EstimatorTags.names() if name != "supports"}
        return EstimatorTags(supports=frozenset(cls.supports), **facts)

    @classmethod
    def config_or_default(cls, config: Any = None) -> Any:
        """``config``, or the default ``Config()`` for None (for ``tags_for`` overrides)."""
        return cls.Config() if config is None else config

    @property
    def tags(self) -> EstimatorTags:
        """This instance's facts: ``tags_for(self.config)``."""
        return self.tags_for(self.config)

    @classmethod
    def refusal(cls, node: Node) -> str | None:
        """Why this estimator cannot run ``node``, when it can say more than "unsupported kind" (e.g.
        straight-through on a node that changes shape); None otherwise. Shown in the one-line refusal."""
        return None

    @classmethod
    def make_config(cls, values: dict[str, Any] | None = None) -> Any:
        return build_config(cls.Config, values, owner=f"estimator {cls.name!r}")

    @classmethod
    def label_for(cls, config: Any) -> str:
        """Row label: the name plus the non-default config values, e.g. ``ste(variant=clipped)``."""
        return label(cls.name, non_default(config))

    @property
    def label(self) -> str:
        return self.label_for(self.config)

    def zero(self, like: torch.Tensor) -> torch.Tensor:
        """A scalar zero on ``like``'s device, for ``aux_loss`` when there is nothing to train."""
        return like.new_zeros(())

