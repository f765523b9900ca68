"""Gradient statistics at fixed parameters: variance, SNR, and bias/MSE/cosine against a reference.

At a checkpoint, K draws of the estimator's gradient are taken on one fixed minibatch for the
parameters upstream of the node (the task's encoder). The draws are batched: the minibatch is
repeated K times along the batch dim (the cost function sees the repeats as a leading sample dim),
the estimator runs once, and the per-draw logits gradients are pulled back to the parameters in one
batched backward (``is_grads_batched``). Where the cost also reaches the encoder directly (a VAE's KL
on the logits), the task's ``repeated_fixed_batch`` builds the repeated batch so that path runs through
the repeated logits too; a task without that hook is measured with the plain loop of K calls, as are
estimators whose per-example estimate depends on the rest of the batch (tag ``batch_independent`` False
at their config).

Reference gradient: the task's ``exact_gradient`` where it has one (the toy, by closed form), and then the
bias test runs on double-precision copies (``exact_bias_test``);
otherwise, for stochastic nodes, a high-sample unbiased estimate (the score function with a
leave-one-out baseline over many samples: ``LeaveOneOutReference``, the engine's own, so the reference
never depends on what the registry holds); for deterministic nodes none (the exact gradient of a piecewise
constant function is zero almost everywhere, so bias against it says nothing).

Everything runs under a forked RNG with its own seed and on a copy of the estimator, so measuring
never changes the training trajectory.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from gradbench import ops
from gradbench.estimator import CostFn, Estimator, EstimatorOutput, NoConfig
from gradbench.node import STOCHASTIC_KINDS, Node
from gradbench.stats import bonferroni_p
from gradbench.task import Task

REFERENCE_SAMPLES = 64  # RLOO samples per draw for the sampled reference
REFERENCE_DRAWS = 16  # draws of that estimator per round (1,024 samples per example)
REFERENCE_MAX_DRAWS = 128  # rounds stop here even when the target precision is not reached
REFERENCE_TARGET_NOISE = 0.1  # the sampled reference's standard error, as a fraction of its norm
BIAS_RANDOM_DIRECTIONS = 7  # random directions of the bias test, beside the reference's own
BIAS_DIRECTION_SEED = 20_240_601
BIAS_BATCHES = 20  # batch means per direction in the bias test
BIAS_ROUNDOFF = 1e-5  # relative accuracy of a float32 gradient: a mismatch below this times |reference| is rounding
TRACE_DRAWS = 16  # draws for the variance along training (history column grad/log10_variance)
BLOCK_ELEMENTS = 1 << 22  # draws x parameters per block of the float64 statistics (32 MB a temporary)


def _column_blocks(k: int, n: int) -> Iterator[slice]:
    """Slices of the n parameters, each ``BLOCK_ELEMENTS // k`` wide: float64 temporaries stay small
    whatever the number of draws k, and the statistics' memory near the float32 draws themselves."""
    width = max(1, BLOCK_ELEMENTS // max(1, k))
    return (slice(s, s + width) for s in range(0, n, width))


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
    return logits, rep.requires_grad_(True), ops.repeated_cost(cost_fn, draws, batch, logits.dim() - 1)


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


def _draws_loop(estimator: Estimator, batch_fn: Callable, params: list[torch.Tensor], draws: int,
                tick: Callable[[int], None] | None = None) -> torch.Tensor:
    """(draws, n_params) gradient estimates from ``draws`` separate calls and backward passes."""
    rows: torch.Tensor | None = None  # filled in place, as in ``gradient_draws``
    for i in range(draws):
        if tick is not None:
            tick(1)
        logits, cost_fn = batch_fn()
        out = estimator(logits, cost_fn)
        grads = torch.autograd.grad(out.loss, params, allow_unused=True)
        row = torch.cat([(gp if gp is not None else torch.zeros_like(p)).flatten()
                         for gp, p in zip(grads, params, strict=True)])
        if rows is None:
            rows = row.new_empty(draws, row.numel())
        rows[i] = row
    assert rows is not None  # draws >= 1
    return rows


def gradient_draws(estimator: Estimator, task: Task, draws: int, seed: int, batched: bool = True,
                   chunk: int | None = None, tick: Callable[[int], None] | None = None) -> tuple[torch.Tensor, bool]:
    """K gradient estimates w.r.t. the task's encoder parameters on its fixed minibatch, (K, n_params),
    and whether they were batched: when asked and possible (see ``batch_mode``), else the loop; both give
    draws from the same distribution. ``tick(n)`` is told as draws are made (a progress bar).
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
            out: torch.Tensor | None = None  # filled in place: a concatenation would hold the draws twice
            done = 0
            while done < draws:
                k = min(chunk, draws - done)
                logits, rep, cost = _repeat(task, mode == "task", k)
                part = _draws_batched(estimator, logits, rep, cost, params, k)
                if out is None:
                    out = part.new_empty(draws, part.shape[1])
                out[done:done + k] = part
                done += k
                if tick is not None:
                    tick(k)
            assert out is not None  # draws >= 1
            return out, True
        return _draws_loop(estimator, task.fixed_batch, params, draws, tick), False


def cost_reaches_encoder(task: Task, params: list[torch.Tensor]) -> bool:
    """Whether the fixed batch's cost depends on the encoder by a path other than the node's output
    (e.g. a KL term on the logits). Probes the cost at an all-zero node output (a legal relaxed value),
    drawing no random numbers."""
    logits, cost_fn = task.fixed_batch()
    with torch.enable_grad():
        # the node's output shape, which is not the input's for rank and kmeans assignments
        cost = cost_fn(logits.new_zeros(logits.shape[:1] + task.node.shape))
    if not cost.requires_grad:
        return False
    direct = torch.autograd.grad(cost.sum(), params, allow_unused=True)
    return any(g is not None for g in direct)


def batch_mode(estimator: Estimator, task: Task, params: list[torch.Tensor]) -> str | None:
    """How draws can be batched: "repeat" (a detached repeated copy of the fixed batch), "task" (the
    cost reaches the encoder directly and the task provides ``repeated_fixed_batch``), or None (the
    loop: such a task without the hook, or an estimator that couples the examples of a batch)."""
    if not estimator.tags.batch_independent:
        return None
    if not cost_reaches_encoder(task, params):
        return "repeat"
    return "task" if task.repeated_fixed_batch(1) is not None else None


class LeaveOneOutReference(Estimator):
    """The sampled reference's estimator: the score function with a leave-one-out baseline over ``samples``
    draws per example (REINFORCE-RLOO, Kool et al. 2019), unbiased for any cost. It computes exactly what
    the built-in ``reinforce:baseline=rloo,samples=N`` does, draw for draw, but belongs to the engine, so
    the reference never looks an estimator up by name (a plugin or a changed built-in cannot move it)."""

    name = "reference-rloo"
    supports = STOCHASTIC_KINDS
    unbiased = True

    def __init__(self, node: Node, samples: int = REFERENCE_SAMPLES) -> None:
        super().__init__(node, NoConfig())
        if samples < 2:
            raise ValueError(f"a leave-one-out baseline needs samples >= 2, got {samples}")
        self.samples = samples

    def forward(self, logits: torch.Tensor, cost_fn: CostFn) -> EstimatorOutput:
        n = self.samples
        u = ops.uniform((n, *logits.shape), logits)
        b = ops.from_perturbed(self.node, ops.perturb(self.node, logits.detach(), u))  # (n, batch, *shape)
        f = cost_fn(b)  # (n, batch): the direct path and cost_fn's own parameters
        fd = f.detach()
        baseline = (fd.sum(0, keepdim=True) - fd) / (n - 1)  # the mean cost of the other draws
        log_p = ops.log_prob(self.node, logits, b)  # (n, batch)
        surrogate = f + (fd - baseline) * (log_p - log_p.detach())
        return EstimatorOutput(sample=b[0], cost=fd[0], loss=surrogate.mean(0).mean(), aux_loss=self.zero(logits),
                               diagnostics={"cost_evals": n})


@dataclass
class Reference:
    """The gradient the estimates are compared with: exact (closed form or enumeration), or the mean of
    ``draws`` independent many-sample unbiased estimates, whose own noise ``noise_trace`` (the trace of
    the covariance of that mean) the debiased figures subtract."""

    mean: torch.Tensor | None
    kind: str
    exact: bool = False
    noise_trace: float = 0.0
    draws: int = 0

    @property
    def relative_noise(self) -> float | None:
        """sqrt(tr Cov(mean)) / ||mean||: the reference's standard error as a fraction of its norm."""
        if self.mean is None:
            return None
        norm = float(self.mean.double().norm())
        return math.sqrt(self.noise_trace) / norm if norm > 0 else None


def reference_gradient(task: Task, seed: int, target_noise: float = REFERENCE_TARGET_NOISE,
                       phase: Callable[[str, int], Callable[[int], None]] | None = None) -> Reference:
    """The task's exact gradient where it has one; else, for a stochastic node, leave-one-out score-function
    draws (``LeaveOneOutReference``) of ``REFERENCE_SAMPLES`` samples each, added in rounds of
    ``REFERENCE_DRAWS`` until the mean's standard error is at most ``target_noise`` of its norm (or
    ``REFERENCE_MAX_DRAWS`` are spent); for a deterministic node none (its exact gradient is zero almost
    everywhere: bias against it says nothing)."""
    exact = task.exact_gradient()
    if exact is not None:
        return Reference(torch.cat([g.flatten() for g in exact]), "exact", exact=True)
    if not task.node.stochastic:
        return Reference(None, "none: deterministic node (the exact gradient is zero almost everywhere)")
    rloo = LeaveOneOutReference(task.node, REFERENCE_SAMPLES).to(task.device)
    tick = phase("reference gradient", REFERENCE_MAX_DRAWS) if phase is not None else None  # an upper bound
    chunk = max(1, 1024 // task.fixed_batch()[0].shape[0])
    parts: list[torch.Tensor] = []
    while sum(len(p) for p in parts) < REFERENCE_MAX_DRAWS:
        parts.append(gradient_draws(rloo, task, REFERENCE_DRAWS, seed + 1 + len(parts), chunk=chunk,
                                    tick=tick)[0].double())
        g = torch.cat(parts)
        mean, noise = g.mean(0), float(g.var(0).sum()) / len(g)
        if math.sqrt(noise) <= target_noise * float(mean.norm()):
            break
    return Reference(mean, f"sampled: reinforce rloo, {REFERENCE_SAMPLES} samples x {len(g)} draws",
                     noise_trace=noise, draws=len(g))


def bias_directions(reference: torch.Tensor, n_random: int = BIAS_RANDOM_DIRECTIONS) -> torch.Tensor:
    """Unit directions the bias test projects on: the reference's own, then ``n_random`` random ones from
    a fixed seed (the same for every run, so the test never looks at the data to choose them)."""
    g = torch.Generator().manual_seed(BIAS_DIRECTION_SEED)
    rand = torch.randn(n_random, reference.numel(), generator=g, dtype=torch.float64).to(reference.device)
    rows = [reference / reference.norm()] if float(reference.norm()) > 0 else []
    rows += list(rand / rand.norm(dim=1, keepdim=True))
    return torch.stack(rows)


def bias_test(draws: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """(p, largest |t|) of "E g = reference", from the K draws projected on ``bias_directions``.

    A per-coordinate t-test fails here: single coordinates of score-function estimates are rare,
    skewed terms, and its false-alarm rate reached 49% at logits -3 on the toy. So each draw is
    projected on a few fixed directions (each projection sums every coordinate), the K projections are
    averaged in ``BIAS_BATCHES`` consecutive batches (batch means: less skew again), and each direction
    gets a t-test on its batch means, Bonferroni over the directions. Simulated on the toy for
    REINFORCE (RLOO-2, single-sample) and RELAX at logits 0 to -5, K = 100: the rate of p < 0.05 for
    these unbiased estimators is 0.04-0.06 (tests/test_gradstats_calibration.py). A direction whose
    batch means are all equal carries no evidence, and when every direction is so the test is
    inconclusive (p = nan, stored as null): an unbiased score-function estimator gives K identical draws
    whenever its rare events never fire in them (logits below about -9 at K = 100), so a constant
    mismatch is not proof of bias there. Bonferroni counts the directions that were tested.

    The standard error has a floor of ``BIAS_ROUNDOFF`` x |reference|, for draws and references that are
    float32 computations. That floor is too small near an optimum, where the gradient is a small difference
    of large costs: there float32 rounding reaches a few % of the gradient. ``measure`` therefore runs the
    test in float64 (``exact_bias_test``), where rounding is about 1e-16 of the cost.
    """
    ref = reference.double().to(draws.device)
    u = bias_directions(ref)
    y = torch.zeros(draws.shape[0], u.shape[0], dtype=torch.float64, device=draws.device)  # (K, J)
    for cols in _column_blocks(*draws.shape):  # in float64 a block at a time (``summarize``)
        y += (draws[:, cols].double() - ref[cols]) @ u[:, cols].T
    batches = min(BIAS_BATCHES, y.shape[0])
    y = y[: (y.shape[0] // batches) * batches].reshape(batches, -1, y.shape[1]).mean(1)
    se = y.std(0, unbiased=True) / math.sqrt(batches)
    spread = se > 0
    if not bool(spread.any()):  # every draw the same: no evidence either way (see the docstring)
        return math.nan, math.nan
    se = torch.sqrt(se.pow(2) + (BIAS_ROUNDOFF * float(ref.norm())) ** 2)
    z = (y.mean(0)[spread].abs() / se[spread]).cpu().numpy()
    z_max = float(z.max())
    return bonferroni_p(z_max, int(spread.sum()), df=batches - 1), z_max


@contextlib.contextmanager
def _float64(task: Task, estimator: Estimator) -> Iterator[tuple[Task, Estimator]]:
    """Double-precision copies of ``task`` and ``estimator``, with float64 the default dtype meanwhile (so
    what they create, their uniforms included, is double too); the originals are left as they were."""
    old = torch.get_default_dtype()
    copies = copy.deepcopy(task).double(), copy.deepcopy(estimator).double()
    torch.set_default_dtype(torch.float64)
    try:
        yield copies
    finally:
        torch.set_default_dtype(old)


def exact_bias_test(estimator: Estimator, task: Task, draws: int, seed: int, batched: bool = True,
                    tick: Callable[[int], None] | None = None) -> dict[str, Any]:
    """The bias test against the exact gradient in double precision: ``draws`` estimates from a float64 copy
    of the estimator on a float64 copy of the task, against the task's exact gradient computed in float64.

    In float32 the test flags estimators that are exact: near an optimum the gradient is a small difference
    of large costs, and float32 rounding, about 1e-7 of the cost, reaches a few % of it. IndeCateR on
    ``toy:variant=categorical`` after 2,000 steps (costs about 70, gradient norm 1.4e-3): its mean estimate
    is 3.1% of the norm from the float32 exact gradient, p = 2e-46, and 5e-11 from the float64 one, p = 1;
    the float32 exact gradient itself is 3e-4 off. Returns ``bias_p``, ``bias_z_max`` and
    ``bias_precision`` ("float64"); a task or an estimator that cannot run in float64 returns only
    ``bias_float64_error``, and the caller keeps its float32 test.
    """
    try:
        with _float64(task, estimator) as (task64, est64):
            exact = task64.exact_gradient()
            if exact is None:
                return {"bias_float64_error": "the task has no exact gradient"}
            ref = torch.cat([g.flatten() for g in exact]).double()
            g, _ = gradient_draws(est64, task64, draws, seed, batched=batched, tick=tick)
    except Exception as e:  # a plugin's float32-only code must not cost the checkpoint its statistics
        return {"bias_float64_error": f"{type(e).__name__}: {e}"}
    p, z = bias_test(g.double(), ref)
    return {"bias_p": p if math.isfinite(p) else None, "bias_z_max": z if math.isfinite(p) else None,
            "bias_precision": "float64"}


def _norm_sq_se(gram: torch.Tensor, c_mean: torch.Tensor) -> float:
    """Standard error of the debiased ||ḡ||² from K draws: sqrt(4 ḡᵀSḡ/K + 2 tr(S²)/K²), with S the
    sample covariance (tr(S²) from the K x K Gram matrix ``gram`` of the centred draws c; it errs on the
    large side), and ``c_mean`` = c ḡ (K values)."""
    k = gram.shape[0]
    gram = gram / (k - 1)
    quad = float(c_mean.pow(2).sum()) / (k - 1)
    return math.sqrt(max(0.0, 4 * quad / k + 2 * float(gram.pow(2).sum()) / k**2))


@dataclass
class _Moments:
    """What ``summarize`` needs from the (K, n) draws, computed in float64 over blocks of parameters
    (``_column_blocks``): a float64 copy of every draw at once (K x n x 8 bytes: 5 GB for 1,000 draws of
    a 665k-parameter encoder) would cost several times the draws themselves."""

    mean: torch.Tensor  # (n,) float64
    var: torch.Tensor  # (n,) unbiased
    gram: torch.Tensor  # (K, K): c cᵀ, c the centred draws
    c_mean: torch.Tensor  # (K,): c ḡ
    sq_dev: torch.Tensor | None  # (K,): ||g_k - r||², given a reference r

    @classmethod
    def of(cls, draws: torch.Tensor, ref: torch.Tensor | None) -> _Moments:
        k, n = draws.shape
        f64 = {"dtype": torch.float64, "device": draws.device}
        mean, var = torch.empty(n, **f64), torch.empty(n, **f64)
        gram, c_mean = torch.zeros(k, k, **f64), torch.zeros(k, **f64)
        sq_dev = torch.zeros(k, **f64) if ref is not None else None
        for cols in _column_blocks(k, n):
            d = draws[:, cols].double()
            m = d.mean(0)
            mean[cols], var[cols] = m, d.var(0, unbiased=True)
            c = d - m
            gram += c @ c.T
            c_mean += c @ m
            if sq_dev is not None and ref is not None:
                sq_dev += (d - ref[cols]).pow(2).sum(1)
        return cls(mean, var, gram, c_mean, sq_dev)


def summarize(draws: torch.Tensor, reference: Reference | torch.Tensor | None, exact: bool = False
              ) -> dict[str, Any]:
    """Variance, SNR and (against a reference) bias², MSE, cosine and the bias test, debiased.

    With K draws g_k of mean ḡ and per-parameter variances s² (tr = their sum), ||ḡ||² overstates
    ||E g||² by tr/K, and a sampled reference r adds its own noise trace T_r. So:

    - ``snr`` = (||ḡ||² - tr/K) / tr: the power ratio ||E g||² / tr Var g, unbiased in its numerator, so
      0 in expectation for a zero-mean gradient (may come out negative); ``snr_raw``: the old mean over
      parameters of |ḡ_i| / s_i, whose floor is about 0.8 / sqrt(K) whatever the gradient.
    - ``bias_sq`` = ||ḡ - r||² - tr/K - T_r, unbiased for ||E g - E r||² (may be negative);
      ``bias_sq_raw`` = ||ḡ - r||².
    - ``mse`` = mean_k ||g_k - r||² - T_r; ``cosine`` = ḡ·r / sqrt((||ḡ||² - tr/K)(||r||² - T_r)), from
      debiased norms, clipped to [-1, 1]; None when ||E g||² is not 2 standard errors above zero (the
      mean is within noise of zero: K draws cannot say where it points); ``cosine_raw`` =
      ḡ·r / (||ḡ|| ||r||), which mistakes variance for bias.
    - ``bias_p`` (exact references only): ``bias_test``.
    """
    if isinstance(reference, torch.Tensor):
        reference = Reference(reference, "exact" if exact else "given", exact=exact)
    k, n = draws.shape
    ref = None if reference is None or reference.mean is None else reference.mean.double().to(draws.device)
    moments = _Moments.of(draws, ref)
    mean, var = moments.mean, moments.var
    trace = float(var.sum())
    std = var.sqrt()
    norm_sq = float(mean @ mean) - trace / k
    measurable = norm_sq > 2 * _norm_sq_se(moments.gram, moments.c_mean)  # ||E g|| is distinguishable from zero
    avg_var = trace / n
    stats: dict[str, Any] = {
        "draws": k, "variance": avg_var, "log10_variance": math.log10(avg_var) if avg_var > 0 else None,
        "snr": norm_sq / trace if trace > 0 else None,
        "snr_raw": float(torch.where(std > 0, mean.abs() / std.clamp_min(1e-300), torch.zeros_like(std)).mean()),
        "mean_norm": float(mean.norm()),
    }
    if reference is None or ref is None or moments.sq_dev is None:
        return stats
    noise = reference.noise_trace
    ref_sq = float(ref @ ref) - noise
    bias_raw = float((mean - ref).pow(2).sum())
    denom = math.sqrt(norm_sq * ref_sq) if measurable and ref_sq > 0 else 0.0
    raw_denom = float(mean.norm() * ref.norm())
    stats.update({
        "bias_sq": bias_raw - trace / k - noise, "bias_sq_raw": bias_raw, "bias_sq_noise": trace / k + noise,
        "mse": float(moments.sq_dev.mean()) - noise,
        "cosine": max(-1.0, min(1.0, float(mean @ ref) / denom)) if denom > 0 else None,
        "cosine_raw": float(mean @ ref) / raw_denom if raw_denom > 0 else None,
        "reference_noise": reference.relative_noise if not reference.exact else 0.0,
    })
    if reference.exact:
        p, z = bias_test(draws, ref)
        stats["bias_p"], stats["bias_z_max"] = (p, z) if math.isfinite(p) else (None, None)
    return stats


def measure(estimator: Estimator, task: Task, draws: int, seed: int, label: str, step: int,
            batched: bool = True, phase: Callable[[str, int], Callable[[int], None]] | None = None
            ) -> dict[str, Any]:
    """One checkpoint's statistics (plus its reference and timing), as stored in the record.
    ``phase(name, total)``, when given, starts a named phase of a progress display (the reference
    gradient: at most ``REFERENCE_MAX_DRAWS`` draws; then the estimator's draws) and returns its tick."""
    start = time.perf_counter()
    with _training_mode(task, estimator):
        reference = reference_gradient(task, seed, phase=phase)
        tick = phase("gradient draws", draws) if phase is not None else None
        g, used_batching = gradient_draws(estimator, task, draws, seed, batched=batched, tick=tick)
        stats = summarize(g, reference)
        if reference.exact:  # the bias test in float64: in float32 rounding can pass for bias
            tick = phase("bias test (float64)", draws) if phase is not None else None
            stats.update(exact_bias_test(estimator, task, draws, seed, batched=batched, tick=tick))
    stats.update({"checkpoint": label, "step": step, "reference": reference.kind, "batched": used_batching,
                  "seconds": time.perf_counter() - start})
    return stats


def trace_variance(estimator: Estimator, task: Task, seed: int, draws: int = TRACE_DRAWS) -> float | None:
    """log10 of the per-parameter gradient variance from a few draws: the cheap figure logged along
    training (the running log-variance that REBAR's and DisARM's papers plot), no reference needed."""
    with _training_mode(task, estimator):
        g, _ = gradient_draws(estimator, task, draws, seed)
    v = float(g.double().var(0, unbiased=True).mean())
    return math.log10(v) if v > 0 else None


@contextlib.contextmanager
def _training_mode(task: Task, estimator: Estimator) -> Iterator[None]:
    """Measure in training mode (what the step sees), then restore each module's mode."""
    was = (task.training, estimator.training)
    task.train()
    estimator.train()
    try:
        yield
    finally:
        task.train(was[0])
        estimator.train(was[1])
