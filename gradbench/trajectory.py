"""The gradient variance along the training trajectory, as REBAR's and DisARM's code measure it.

Every training step, after the backward pass, moving averages of the encoder's gradient g and of g^2 are
updated in place (decay d, both starting at zero, no zero-debiasing: what TensorFlow's
``ExponentialMovingAverage(d)`` does with the zero-initialised gradient variables of DisARM's launcher);
the logged figure is the mean over the encoder's parameter components of avg(g^2) - avg(g)^2. It mixes the
estimator's noise with the minibatch's and with the drift of training, so it is not the fixed-batch
variance of ``gradbench.gradstats``: it is there to set beside the papers' plots.

The update runs on the device without host synchronisation (it can be captured in a CUDA graph); the
figure is read only when a history row is written. A task asks for it with ``Task.ema_variance_decay``.
"""

from __future__ import annotations

import torch


class EmaVariance:
    """Moving averages of the gradients of ``tensors``. ``replicas``: None for plain parameters, S for a
    seed batch's stacked parameters (a leading replica dim), which get one figure per replica."""

    def __init__(self, tensors: list[torch.Tensor], decay: float, replicas: int | None = None) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"the moving-average decay must be in (0, 1), got {decay}")
        self.tensors, self.decay, self.replicas = tensors, decay, replicas
        self.mean = [torch.zeros_like(t, memory_format=torch.contiguous_format) for t in tensors]
        self.square = [torch.zeros_like(t, memory_format=torch.contiguous_format) for t in tensors]
        self.components = sum(t[0].numel() if replicas is not None else t.numel() for t in tensors)

    @torch.no_grad()
    def update(self) -> None:
        """Fold the gradients now in ``.grad`` into the averages (a tensor without one counts as zero)."""
        grads = [t.grad if t.grad is not None else torch.zeros_like(t) for t in self.tensors]
        weight = 1 - self.decay  # avg <- avg + (1 - d) (g - avg) = d avg + (1 - d) g
        torch._foreach_lerp_(self.mean, grads, weight)
        torch._foreach_lerp_(self.square, torch._foreach_mul(grads, grads), weight)

    @torch.no_grad()
    def read(self) -> list[float]:
        """The mean per-component variance avg(g^2) - avg(g)^2: one figure, or one per replica."""
        total = None
        for m, s in zip(self.mean, self.square, strict=True):
            v = (s.double() - m.double().square())
            v = v.flatten(1).sum(1) if self.replicas is not None else v.sum().reshape(1)
            total = v if total is None else total + v
        assert total is not None
        return (total / self.components).tolist()


def for_model(model) -> EmaVariance | None:
    """The tracker of what trains (a ``replicas.Pair`` or ``SeedBatch``) over its task's encoder parameters,
    when the task asks for one (``Task.ema_variance_decay``); else None."""
    task = model.pairs[0][0]
    decay = task.ema_variance_decay()
    if decay is None:
        return None
    encoder = {id(p) for p in task.encoder_parameters()}
    names = [name for name, p in task.named_parameters() if id(p) in encoder]
    return EmaVariance(model.task_tensors(names), decay, model.replicas)
