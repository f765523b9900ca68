"""Gradient statistics at fixed parameters: variance, SNR, and bias/MSE/cosine against a reference.

At a checkpoint, K draws of the estimator's gradient are taken on one fixed minibatch for the
parameters upstream of the node (the task's encoder). The draws are batched: the minibatch is
repeated K times along the batch dim (the cost function sees the repeats as a leading sample dim),
the estimator runs once, and the per-draw logits gradients are pulled back to the parameters in one
batched backward (``is_grads_batched``). Where the cost also reaches the encoder directly (a VAE's KL
on the logits), the task's ``repeated_fixed_batch`` builds the repeated batch so that path runs through
the repeated logits too; a task without that hook is measured with the plain loop of K calls, as are
estimators whose per-example estimate depends on the rest of the batch (``batch_independent = False``).

Reference gradient: the task's ``exact_gradient`` where it has one (the toy, by closed form);
otherwise, for stochastic nodes, a high-sample unbiased estimate (REINFORCE with leave-one-out over
many samples, from the registry); for deterministic nodes none (the exact gradient of a piecewise
constant function is zero almost everywhere, so bias against it says nothing).

Everything runs under a forked RNG with its own seed and on a copy of the estimator, so measuring
never changes the training trajectory.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

import torch

from gradbench.estimator import Estimator
from gradbench.stats import bonferroni_p, z_scores
from gradbench.task import Task

REFERENCE_SAMPLES = 64  # RLOO samples per draw for the sampled reference
REFERENCE_DRAWS = 16  # draws of that estimator averaged into the reference (1,024 samples per example)


def _repeat_cost(cost_fn: Callable, repeats: int, batch: int, event_dims: int) -> Callable:
    """The cost of a K-times repeated batch, through cost_fn's support for leading sample dims."""

    def cost(y: torch.Tensor) -> torch.Tensor:
        batch_dim = y.dim() - event_dims - 1
        return cost_fn(y.unflatten(batch_dim, (repeats, batch))).flatten(-2)

    return cost


def _repeat(task: Task, cost_direct: bool, draws: int) -> tuple[torch.Tensor, torch.Tensor, Callable]:
    """(logits, repeated logits leaf, cost of the repeated batch): from the task's own hook where the
    cost reaches the encoder directly, else by repeating a detached copy of the fixed batch."""
    if cost_direct:
        repeated = task.repeated_fixed_batch(draws)
        assert repeated is not None  # batch_mode checked it
        return repeated
    logits, cost_fn = task.fixed_batch()
    batch = logits.shape[0]
    rep = logits.detach().unsqueeze(0).expand(draws, *logits.shape).reshape(draws * batch, *logits.shape[1:])
    return logits, rep.requires_grad_(True), _repeat_cost(cost_fn, draws, batch, logits.dim() - 1)


def _draws_batched(estimator: Estimator, logits: torch.Tensor, rep: torch.Tensor, cost: Callable,
                   params: list[torch.Tensor], draws: int) -> torch.Tensor:
    """(draws, n_params) gradient estimates from one estimator call on the repeated batch ``rep``."""
    out = estimator(rep, cost)
    (g,) = torch.autograd.grad(out.loss, rep)
    g = g.view(draws, *logits.shape) * draws  # the loss averaged over draws * batch
    grads = torch.autograd.grad(logits, params, grad_outputs=g, is_grads_batched=True, retain_graph=True,
                                allow_unused=True)
    return torch.cat([(gp if gp is not None else torch.zeros(draws, *p.shape, device=g.device)).flatten(1)
                      for gp, p in zip(grads, params, strict=True)], dim=1)


def _draws_loop(estimator: Estimator, batch_fn: Callable, params: list[torch.Tensor], draws: int) -> torch.Tensor:
    """(draws, n_params) gradient estimates from ``draws`` separate calls and backward passes."""
    rows = []
    for _ in range(draws):
        logits, cost_fn = batch_fn()
        out = estimator(logits, cost_fn)
        grads = torch.autograd.grad(out.loss, params, allow_unused=True)
        rows.append(torch.cat([(gp if gp is not None else torch.zeros_like(p)).flatten()
                               for gp, p in zip(grads, params, strict=True)]))
    return torch.stack(rows)


def gradient_draws(estimator: Estimator, task: Task, draws: int, seed: int, batched: bool = True,
                   chunk: int | None = None) -> tuple[torch.Tensor, bool]:
    """K gradient estimates w.r.t. the task's encoder parameters on its fixed minibatch, (K, n_params),
    and whether they were batched: when asked and possible (see ``batch_mode``), else the loop; both give
    draws from the same distribution.
    """
    params = [p for p in task.encoder_parameters() if p.requires_grad]
    if not params:
        raise ValueError("the task has no trainable parameters upstream of the node")
    estimator = copy.deepcopy(estimator)  # its buffers (EMA, step counters) must not move
    devices = [task.device] if task.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        mode = batch_mode(estimator, task, params) if batched else None
        if mode is not None:
            batch = task.fixed_batch()[0].shape[0]
            chunk = chunk or max(1, 4096 // batch)  # ~4k rows per call: fast on CPU, bounded memory
            parts, left = [], draws
            while left > 0:
                k = min(chunk, left)
                logits, rep, cost = _repeat(task, mode == "task", k)
                parts.append(_draws_batched(estimator, logits, rep, cost, params, k))
                left -= k
            return torch.cat(parts), True
        return _draws_loop(estimator, task.fixed_batch, params, draws), False


def cost_reaches_encoder(task: Task, params: list[torch.Tensor]) -> bool:
    """Whether the fixed batch's cost depends on the encoder by a path other than the node's output
    (e.g. a KL term on the logits). Probes the cost at an all-zero node output (a legal relaxed value),
    drawing no random numbers."""
    logits, cost_fn = task.fixed_batch()
    with torch.enable_grad():
        cost = cost_fn(torch.zeros_like(logits.detach()))
    if not cost.requires_grad:
        return False
    direct = torch.autograd.grad(cost.sum(), params, allow_unused=True)
    return any(g is not None for g in direct)


def batch_mode(estimator: Estimator, task: Task, params: list[torch.Tensor]) -> str | None:
    """How draws can be batched: "repeat" (a detached repeated copy of the fixed batch), "task" (the
    cost reaches the encoder directly and the task provides ``repeated_fixed_batch``), or None (the
    loop: such a task without the hook, or an estimator that couples the examples of a batch)."""
    if not estimator.batch_independent:
        return None
    if not cost_reaches_encoder(task, params):
        return "repeat"
    return "task" if task.repeated_fixed_batch(1) is not None else None


def reference_gradient(task: Task, seed: int) -> tuple[torch.Tensor | None, str]:
    """(flat reference gradient or None, what it is)."""
    exact = task.exact_gradient()
    if exact is not None:
        return torch.cat([g.flatten() for g in exact]), "exact"
    if not task.node.stochastic:
        return None, "none: deterministic node (the exact gradient is zero almost everywhere)"
    from gradbench.registry import get_estimator_class

    cls = get_estimator_class("reinforce")
    rloo = cls(task.node, cls.make_config({"baseline": "rloo", "samples": REFERENCE_SAMPLES})).to(task.device)
    batch = task.fixed_batch()[0].shape[0]
    g, _ = gradient_draws(rloo, task, REFERENCE_DRAWS, seed + 1, chunk=max(1, 1024 // batch))
    g = g.mean(0)
    return g, f"sampled: reinforce rloo, {REFERENCE_SAMPLES} samples x {REFERENCE_DRAWS} draws"


def summarize(draws: torch.Tensor, reference: torch.Tensor | None, exact: bool = False) -> dict[str, Any]:
    """Variance (mean over parameters), its log10, SNR, and bias^2/MSE/cosine against ``reference``.

    With an exact reference, ``bias_p`` tests "no bias": the largest per-parameter |t| of the mean
    estimate against the reference (t with K - 1 degrees of freedom), Bonferroni-corrected over
    parameters (two-sided). An unbiased
    estimator gets ``bias_p < alpha`` with probability at most alpha.
    """
    d = draws.double()
    mean = d.mean(0)
    var = d.var(0, unbiased=True)
    std = var.sqrt()
    snr = torch.where(std > 0, mean.abs() / std.clamp_min(1e-300), torch.zeros_like(std))
    avg_var = float(var.mean())
    stats: dict[str, Any] = {
        "draws": int(d.shape[0]),
        "variance": avg_var,
        "log10_variance": math.log10(avg_var) if avg_var > 0 else None,
        "snr": float(snr.mean()),
        "mean_norm": float(mean.norm()),
    }
    if reference is not None:
        ref = reference.double().to(d.device)
        bias = mean - ref
        stats["bias_sq"] = float(bias.pow(2).sum())
        stats["mse"] = float((d - ref).pow(2).sum(1).mean())
        denom = float(mean.norm() * ref.norm())
        stats["cosine"] = float(mean @ ref) / denom if denom > 0 else None
        # The noise floor of bias_sq from K draws: E||mean - E g||^2 = trace(Var)/K.
        stats["bias_sq_noise"] = float(var.sum()) / d.shape[0]
        if exact:
            se = std / math.sqrt(d.shape[0])
            # a parameter whose K draws all agree has se = 0: exact up to rounding scores 0, else inf
            z = z_scores(bias.cpu().numpy(), se.cpu().numpy(), ref.cpu().numpy())
            z_max = float(z.max())
            stats["bias_z_max"] = z_max
            # the standard errors come from K draws: Student t tails with K - 1 degrees of freedom
            stats["bias_p"] = bonferroni_p(z_max, d.shape[1], df=d.shape[0] - 1)
    return stats


def measure(estimator: Estimator, task: Task, draws: int, seed: int, label: str, step: int,
            batched: bool = True) -> dict[str, Any]:
    """One checkpoint's statistics (plus its reference and timing), as stored in the record."""
    start = time.perf_counter()
    was_training = (task.training, estimator.training)
    task.train()
    estimator.train()
    try:
        reference, kind = reference_gradient(task, seed)
        g, used_batching = gradient_draws(estimator, task, draws, seed, batched=batched)
    finally:
        task.train(was_training[0])
        estimator.train(was_training[1])
    stats = summarize(g, reference, exact=kind == "exact")
    stats.update({"checkpoint": label, "step": step, "reference": kind, "batched": used_batching,
                  "seconds": time.perf_counter() - start})
    return stats
