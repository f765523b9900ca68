"""``samples=k`` for any estimator: k independent samples per example, their estimates averaged.

Matched-cost comparisons need it (REINFORCE-RLOO-2 against straight-through Gumbel with 2 samples), and
every estimator, plugins too, gets it from the engine rather than from its own code. An estimator whose
Config already has a ``samples`` field (REINFORCE: its leave-one-out baseline uses the samples) keeps
its own meaning. Otherwise ``NAME:samples=k`` (k > 1) resolves to a subclass of the estimator whose
forward repeats each example's logits k times along the batch, runs the estimator once on the k·B rows
(the cost function sees the repeats as a leading sample dim), and so averages k independent estimates:
the batch-mean loss over k·B rows puts the mean of the k estimates on each example's logits.

The subclass keeps the estimator's name, version and tags (``tags_for``: unbiased claim, batch
independence, ...) at the same config, less the deterministic node kinds it refuses; its Config adds
``samples``, which enters the run id and the label (``gumbel(samples=2)``) only when it is not 1, so
every existing record keeps its id. ``cost_evals`` is k times the estimator's own.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import torch

from gradbench import ops
from gradbench.errors import UnsupportedError, UsageError
from gradbench.estimator import CostFn, Estimator, EstimatorOutput, EstimatorTags
from gradbench.node import STOCHASTIC_KINDS, Node


def estimator_class(name: str, values: dict[str, Any]) -> tuple[type[Estimator], dict[str, Any]]:
    """The registered estimator ``name`` for config ``values``, multi-sample when they ask for it."""
    from gradbench.registry import get_estimator_class

    return with_samples(get_estimator_class(name), values)


def with_samples(cls: type[Estimator], values: dict[str, Any]) -> tuple[type[Estimator], dict[str, Any]]:
    """(the class to build, the config values for it): the multi-sample subclass when ``values`` asks for
    ``samples`` and the estimator has no ``samples`` of its own; ``samples=1`` is the estimator itself."""
    if "samples" not in values or "samples" in {f.name for f in dataclasses.fields(cls.Config)}:
        return cls, values
    rest = {k: v for k, v in values.items() if k != "samples"}
    given = values["samples"]
    if isinstance(given, bool) or not (isinstance(given, int) or str(given).strip().isdigit()) or int(given) < 1:
        raise UsageError(f"estimator {cls.name!r}: samples must be a whole number >= 1, got {given!r}")
    k = int(given)
    return (cls, rest) if k == 1 else (multi_sample(cls), {**rest, "samples": k})


@functools.cache
def multi_sample(cls: type[Estimator]) -> type[Estimator]:
    """The subclass of ``cls`` that averages ``samples`` independent estimates per example."""
    config = dataclasses.make_dataclass(
        f"{cls.Config.__name__}Samples",
        [("samples", int, dataclasses.field(default=1, metadata={"help": "independent samples per example, "
                                                                          "their estimates averaged (engine)"}))],
        bases=(cls.Config,), frozen=True)

    class MultiSample(cls):  # type: ignore[misc, valid-type]
        Config = config

        @classmethod
        def tags_for(cls_, cfg: Any = None) -> EstimatorTags:
            """The estimator's own tags at this config, on stochastic nodes only (the constructor's rule)."""
            tags = super().tags_for(cfg)
            return dataclasses.replace(tags, supports=tags.supports & STOCHASTIC_KINDS)

        def __init__(self, node: Node, cfg: Any = None) -> None:
            super().__init__(node, cfg)
            if not node.stochastic:
                raise UnsupportedError(f"estimator {cls.name!r}: samples={self.config.samples} needs a stochastic "
                                       f"node (a {node.kind!r} node gives the same value every time)")

        def forward(self, logits: torch.Tensor, cost_fn: CostFn) -> EstimatorOutput:
            k, batch = self.config.samples, logits.shape[0]
            rows = logits.unsqueeze(0).expand(k, *logits.shape).reshape(k * batch, *logits.shape[1:])
            out = super().forward(rows, ops.repeated_cost(cost_fn, k, batch, logits.dim() - 1))
            diagnostics = dict(out.diagnostics)
            for key in ("cost_evals", "report_evals"):  # rows per example: k times the estimator's own
                if key in diagnostics:
                    diagnostics[key] = diagnostics[key] * k
            return EstimatorOutput(sample=out.sample[:batch], cost=out.cost[:batch], loss=out.loss,
                                   aux_loss=out.aux_loss, diagnostics=diagnostics)

    MultiSample.__name__ = MultiSample.__qualname__ = f"{cls.__name__}MultiSample"
    MultiSample.__module__ = cls.__module__
    MultiSample.__doc__ = cls.__doc__
    return MultiSample

