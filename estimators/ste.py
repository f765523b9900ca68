"""Straight-through estimators: the forward value is the hard one, the backward pretends it was smooth.

Straight-through is a family; a row label names the variant when it is not the default (``ste`` is
``identity``, ``ste(variant=clipped)`` the clipped one):

* ``identity`` -- backward is the identity on the logits: ``y = f(x) + x - sg(x)``.
* ``clipped``  -- backward is hardtanh's: gradient 1 where |x| <= 1, else 0 (Hubara et al., 2016); on a
  ``round`` node, 1 inside the node's range [low, high] (quantization-aware training's usual form).
* ``prob``     -- backward through the mean of the node: ``y = f(x) + p - sg(p)`` with
  p = sigmoid(x) (threshold, Bernoulli: "ST-Bernoulli") or softmax(x) (argmax, categorical).
  Not defined for ``sign`` or the structured kinds.

Straight-through copies the output's gradient onto the input, so it needs an input of the output's
shape. It runs on ``sort`` (the naive identity backward: position i of the sorted output passes its
gradient to input i, whatever the permutation), ``topk``, ``round`` and ``kmeans`` with
``output=vectors``: there the gradient of the quantized vector e_i goes to the encoder's vector z_i
(VQ-VAE: z_q = z_e + sg(e - z_e)). VQ-VAE's commitment term beta * ||z_e - sg(e)||^2 is part of the
objective, not of the estimator: the ``autoencode`` task's ``commitment`` setting adds it to the cost for
every estimator (a new field here would change the run id of every existing ``ste`` record). It refuses
``rank`` (n -> n x n) and kmeans assignments (m x d -> m x c): a gradient cannot be copied across a
change of shape.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch.nn.functional as F

from gradbench import ops
from gradbench.errors import UnsupportedError
from gradbench.estimator import Estimator, EstimatorOutput, EstimatorTags
from gradbench.node import Node
from gradbench.registry import register_estimator

CLASSIC_KINDS = frozenset({"sign", "threshold", "argmax", "bernoulli", "categorical"})


@dataclass(frozen=True)
class STEConfig:
    variant: Literal["identity", "clipped", "prob"] = "identity"  # the backward: 1, hardtanh's, or the mean's


def _refusal(node: Node) -> str | None:
    """Why straight-through cannot run ``node`` (None when it can): the output's shape is not the input's."""
    if node.kind == "rank":
        return (f"estimator 'ste' cannot run a rank node: it copies the output's gradient onto the input, and "
                f"rank changes shape (n -> n x n, {node.in_shape} -> {node.shape}); use dab, perturbed, "
                f"blackbox or softsort")
    if node.kind == "kmeans" and node.params["output"] == "assignments":
        return (f"estimator 'ste' cannot run kmeans with output=assignments: it copies the output's gradient "
                f"onto the input, and the assignments (vectors x centroids, {node.shape}) have another shape "
                f"than the vectors (vectors x dim); use output=vectors or dab")
    return None


@register_estimator("ste")
class StraightThrough(Estimator):
    supports = CLASSIC_KINDS | frozenset({"sort", "topk", "round", "kmeans"})
    unbiased = False
    Config = STEConfig

    @classmethod
    def refusal(cls, node: Node) -> str | None:
        return _refusal(node)

    @classmethod
    def tags_for(cls, config: STEConfig | None = None) -> EstimatorTags:
        """variant=prob needs a mean that is a sigmoid or softmax: no sign or structured nodes."""
        tags = super().tags_for(config)
        if cls.config_or_default(config).variant == "prob":
            return replace(tags, supports=tags.supports & (CLASSIC_KINDS - {"sign"}))
        return tags

    def __init__(self, node: Node, config: STEConfig | None = None) -> None:
        reason = _refusal(node)
        if reason:
            raise UnsupportedError(reason)
        super().__init__(node, config)
        if self.config.variant == "prob" and node.kind == "sign":
            raise UnsupportedError("estimator 'ste': variant=prob is not defined for sign nodes "
                                   "(use identity or clipped)")
        if self.config.variant == "prob" and node.kind not in CLASSIC_KINDS:
            raise UnsupportedError(f"estimator 'ste': variant=prob needs a node whose mean is a sigmoid or "
                                   f"softmax of the logits, not a {node.kind} node (use identity or clipped)")

    def forward(self, logits, cost_fn) -> EstimatorOutput:
        if self.node.stochastic:
            z = ops.perturb(self.node, logits.detach(), ops.uniform(logits.shape, logits))
            hard = ops.from_perturbed(self.node, z)
        else:
            hard = ops.hard(self.node, logits.detach())
        # the part of the input whose shape is the output's: the encoder's vectors for kmeans
        source = ops.kmeans_parts(self.node, logits)[0] if self.node.kind == "kmeans" else logits
        variant = self.config.variant
        if variant == "identity":
            surrogate = source
        elif variant == "clipped" and self.node.kind == "round":
            surrogate = source.clamp(self.node.params["low"], self.node.params["high"])
        elif variant == "clipped":
            surrogate = F.hardtanh(source)
        else:
            surrogate = ops.probs(self.node, source)
        y = hard + (surrogate - surrogate.detach())
        cost = cost_fn(y)
        return EstimatorOutput(sample=hard, cost=cost.detach(), loss=cost.mean(), aux_loss=self.zero(logits),
                               diagnostics={"cost_evals": 1})


