"""Straight-through estimators: the forward value is the hard one, the backward pretends it was smooth.

Straight-through is a family; a row label names the variant when it is not the default (``ste`` is
``identity``, ``ste(variant=clipped)`` the clipped one):

* ``identity`` -- backward is the identity on the logits: ``y = f(x) + x - sg(x)``.
* ``clipped``  -- backward is hardtanh's: gradient 1 where |x| <= 1, else 0 (Hubara et al., 2016).
* ``prob``     -- backward through the mean of the node: ``y = f(x) + p - sg(p)`` with
  p = sigmoid(x) (threshold, Bernoulli: "ST-Bernoulli") or softmax(x) (argmax, categorical).
  Not defined for ``sign``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F

from gradbench import ops
from gradbench.errors import UnsupportedError
from gradbench.estimator import Estimator, EstimatorOutput
from gradbench.node import KINDS, Node
from gradbench.registry import register_estimator


@dataclass(frozen=True)
class STEConfig:
    variant: Literal["identity", "clipped", "prob"] = "identity"  # the backward: 1, hardtanh's, or the mean's


@register_estimator("ste")
class StraightThrough(Estimator):
    supports = KINDS
    unbiased = False
    Config = STEConfig

    def __init__(self, node: Node, config: STEConfig | None = None) -> None:
        super().__init__(node, config)
        if self.config.variant == "prob" and node.kind == "sign":
            raise UnsupportedError("estimator 'ste': variant=prob is not defined for sign nodes "
                                   "(use identity or clipped)")

    def forward(self, logits, cost_fn) -> EstimatorOutput:
        if self.node.stochastic:
            z = ops.perturb(self.node, logits.detach(), ops.uniform(logits.shape, logits))
            hard = ops.from_perturbed(self.node, z)
        else:
            hard = ops.hard(self.node, logits.detach())
        variant = self.config.variant
        if variant == "identity":
            surrogate = logits
        elif variant == "clipped":
            surrogate = F.hardtanh(logits)
        else:
            surrogate = ops.probs(self.node, logits)
        y = hard + (surrogate - surrogate.detach())
        cost = cost_fn(y)
        return EstimatorOutput(sample=hard, cost=cost.detach(), loss=cost.mean(), aux_loss=self.zero(logits),
                               diagnostics={"cost_evals": 1})
