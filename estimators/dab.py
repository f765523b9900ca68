"""DAB: Differentiable Approximation Bridges (Ramapuram & Webb, 2020).

Forward uses the exact hard function y = f(h). A small network g_phi(h) runs beside it; the task's
gradient reaches h as if the layer were g_phi (dL/dh = J_g(h)^T dL/dy), and phi learns only from
gamma * sum_features (g_phi(h) - f(h))^2. As in the official code, the task loss never moves phi and
the DAB loss never moves h.

For stochastic nodes the approximator sees the logits and the uniform noise that drew the sample,
so it can learn the (deterministic) map (logits, noise) -> sample.

Nodes that change shape (docs/nodes.md) are where DAB has an answer and straight-through has none: the
``batch`` approximator maps the flattened input (``node.in_numel`` features: n for ``rank``, the m
vectors and c centroids for ``kmeans``) to the flattened output (``node.numel``: n x n, m x d or
m x c). The ``independent`` approximator sees one element at a time, so it runs only on elementwise
nodes (sign, threshold, bernoulli, round).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import nn
from torch.func import functional_call

from gradbench import ops
from gradbench.errors import UnsupportedError
from gradbench.estimator import Estimator, EstimatorOutput, EstimatorTags
from gradbench.node import ELEMENTWISE_KINDS, KINDS, Node
from gradbench.registry import register_estimator


@dataclass(frozen=True)
class DABConfig:
    gamma: float = 10.0  # weight of the approximator's regression loss
    approximator: Literal["batch", "independent"] = "batch"  # one MLP over all units, or one shared per unit
    hidden: int | None = None  # None: 128 for "batch", 256 for "independent" (the official sizes)
    lr: float | None = None  # None: the approximator trains at the task's learning rate (official)

    def __post_init__(self) -> None:
        if not self.gamma > 0:
            raise ValueError(f"gamma must be > 0, got {self.gamma}")
        if self.hidden is not None and self.hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {self.hidden}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


class _BatchMLP(nn.Module):
    """All features at once: Linear(d_in, H)-Tanh-Linear(H, H)-Tanh-Linear(H, d_out)."""

    def __init__(self, d_in: int, d_out: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                 nn.Linear(hidden, d_out))

    @property
    def dtype(self) -> torch.dtype:
        return self.net[0].weight.dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (batch, channels, features)
        return self.net(x.flatten(start_dim=1))


class _IndependentMLP(nn.Module):
    """One shared per-element MLP: (channels) -> H -> H -> 1, applied to every feature.

    Each output sees only its own feature, so it cannot represent a function of several features such
    as an argmax over classes: DAB refuses it on argmax and categorical nodes."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(channels, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                 nn.Linear(hidden, 1))

    @property
    def dtype(self) -> torch.dtype:
        return self.net[0].weight.dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (batch, channels, features)
        return self.net(x.transpose(1, 2)).squeeze(-1)


@register_estimator("dab")
class DAB(Estimator):
    supports = KINDS
    unbiased = False
    Config = DABConfig

    @classmethod
    def tags_for(cls, config: DABConfig | None = None) -> EstimatorTags:
        """approximator=independent runs only elementwise nodes (the constructor refuses the others)."""
        tags = super().tags_for(config)
        if cls.config_or_default(config).approximator == "independent":
            return replace(tags, supports=tags.supports & ELEMENTWISE_KINDS)
        return tags

    def __init__(self, node: Node, config: DABConfig | None = None) -> None:
        super().__init__(node, config)
        if self.config.approximator == "independent" and node.kind in ("argmax", "categorical"):
            raise UnsupportedError(f"estimator 'dab': approximator=independent sees one class at a time and "
                                   f"cannot represent an argmax over classes ({node.kind} node; use "
                                   f"approximator=batch)")
        if self.config.approximator == "independent" and not node.elementwise:
            raise UnsupportedError(f"estimator 'dab': approximator=independent sees one element at a time and "
                                   f"cannot represent a function of several elements ({node.kind} node; use "
                                   f"approximator=batch)")
        channels = 2 if node.stochastic else 1  # (logit, noise) for stochastic nodes
        if self.config.approximator == "batch":  # input features -> output features (they differ for rank, kmeans)
            self.approximator = _BatchMLP(channels * node.in_numel, node.numel, self.config.hidden or 128)
        else:
            self.approximator = _IndependentMLP(channels, self.config.hidden or 256)

    def _inputs(self, logits: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        flat = ops.flat_inputs(logits, self.node)
        if noise is None:
            return flat.unsqueeze(1)  # (batch, 1, features): a view, no copy
        return torch.stack([flat, ops.flat_events(noise, self.node)], dim=1)  # (batch, 2, features)

    def _approximate(self, x: torch.Tensor, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """g(x) in the approximator's dtype, returned in the input's (float64 logits work too)."""
        dtype = self.approximator.dtype
        inputs = x if x.dtype == dtype else x.to(dtype)
        g = self.approximator(inputs) if params is None else functional_call(self.approximator, params, (inputs,))
        return g if g.dtype == x.dtype else g.to(x.dtype)

    def forward(self, logits: torch.Tensor, cost_fn) -> EstimatorOutput:
        noise = None
        if self.node.stochastic:
            noise = ops.uniform(logits.shape, logits)
            hard = ops.from_perturbed(self.node, ops.perturb(self.node, logits.detach(), noise))
        else:
            hard = ops.hard(self.node, logits.detach())
        x = self._inputs(logits, noise)

        # Task path: phi frozen, so the gradient reaches the logits through J_g only.
        frozen = {k: v.detach() for k, v in self.approximator.named_parameters()}
        g = self._approximate(x, frozen).view_as(hard)
        y = hard + (g - g.detach())
        cost = cost_fn(y)

        # Approximator path: regress g(h) on f(h) with h detached, so only phi moves.
        g_fit = self._approximate(x.detach())
        dab_loss = (g_fit - ops.flat_events(hard, self.node)).pow(2).sum(-1).mean()
        return EstimatorOutput(
            sample=hard,
            cost=cost.detach(),
            loss=cost.mean(),
            aux_loss=self.config.gamma * dab_loss,
            diagnostics={"cost_evals": 1, "dab_loss": dab_loss.detach()},
        )
