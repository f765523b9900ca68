"""Conformance checks any estimator must pass (the same ones CI runs; ``gradbench validate`` runs them).

Usage from a plugin's own tests, one pytest item per (check, node kind)::

    from gradbench.testing import parametrize_with_checks

    @parametrize_with_checks([MyEstimator, (MyEstimator, {"samples": 4})])
    def test_conforms(estimator_check):
        estimator_check()

or all at once: ``assert all(r.passed for r in check_estimator(MyEstimator))``.

Each check builds the estimator on a small node of every kind it supports (and its config accepts) and a
small cost function with its own parameters that accepts relaxed inputs and leading sample dims.
``diagnostics["cost_evals"]`` must count the cost-function rows evaluated per example in one forward
(``check_cost_evals``: a call on (*prefix, batch, *shape) is prod(prefix) rows). Which checks apply, and
on which node kinds, follows the estimator's tags at the configuration (``Estimator.tags_for``). The
batch-independence check (for estimators whose tags say ``batch_independent``) asks that one example's
gradient not depend on the other examples of its batch; it is exact (same seed, same batch size), so a
batch-independent estimator never fails it. The unbiasedness check (for estimators claiming
``unbiased``) compares the mean of many estimates with the exact gradient of
E[f] computed by enumerating every configuration; its false-failure rate is at most ``ALPHA`` (0.1%)
per node for a truly unbiased estimator (two-sided tests, Bonferroni over coordinates).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from gradbench import ops
from gradbench.config import format_value, non_default
from gradbench.errors import UnsupportedError
from gradbench.estimator import Estimator, EstimatorOutput, EstimatorTags
from gradbench.node import Node
from gradbench.stats import bonferroni_critical, z_scores

ALPHA = 1e-3  # false-failure rate of the unbiasedness test, per node
SMALL_NODES = {
    "sign": Node("sign", (6,)),
    "threshold": Node("threshold", (6,)),
    "argmax": Node("argmax", (2, 4)),
    "bernoulli": Node("bernoulli", (4,)),
    "categorical": Node("categorical", (2, 3)),
    "sort": Node("sort", (2, 4)),
    "rank": Node("rank", (2, 4, 4)),  # two vectors of 4 -> two 4 x 4 permutation matrices
    "topk": Node("topk", (2, 5), k=2),
    "round": Node("round", (6,), levels=4),
    "kmeans": Node("kmeans", (3, 2), centroids=4),  # 3 vectors of dim 2, 4 centroids: input (7, 2)
}
# Other settings of a kind, checked where the estimator's configuration accepts them (not part of nodes_for):
VARIANT_NODES = {
    "kmeans(assignments)": Node("kmeans", (3, 4), centroids=4, output="assignments", dim=2),
}
_LABELS = {node: label for label, node in {**SMALL_NODES, **VARIANT_NODES}.items()}


def node_label(node: Node) -> str:
    """A check's name for its node: the kind, or the kind and setting of a VARIANT_NODES entry."""
    return _LABELS.get(node, node.kind)


@dataclass
class CheckResult:
    check: str
    node: str
    passed: bool
    detail: str = ""

    def __str__(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.check:<18} {self.node:<12} {self.detail}"


class CheckCost(nn.Module):
    """A smooth, nonlinear per-example cost with parameters: f(y) = sum_k (tanh(W y + c)_k - t_k)^2 + a.y."""

    def __init__(self, node: Node, batch_targets: torch.Tensor | None = None, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1234 + seed)
        d = node.numel
        self.node = node
        self.W = nn.Parameter(torch.randn(d, 3, generator=g) * 0.9)
        self.c = nn.Parameter(torch.randn(3, generator=g) * 0.3)
        self.a = nn.Parameter(torch.randn(d, generator=g) * 0.5)
        t = torch.rand(3, generator=g) * 1.6 - 0.8 if batch_targets is None else batch_targets
        self.register_buffer("t", t)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        flat = ops.flat_events(y, self.node)
        h = torch.tanh(flat @ self.W + self.c)
        return (h - self.t).pow(2).sum(-1) + flat @ self.a

    def log_weight(self, y: torch.Tensor) -> torch.Tensor:
        """The optional per-sample log-weight hook (``Task.with_log_weight``) that multi-sample estimators
        such as VIMCO take: one value per sample along the node's first event dim, (*prefix, batch, k).
        The hook's contract holds (the cost is minus the bound, log k - logsumexp_j l_j, so an estimator
        may report the cost from the log-weights): l_j = log k - f(y) + log_softmax_j(-(s + tanh(s)^2)),
        with s = a.y over each sample's elements."""
        ay = y * self.a.view(self.node.shape)
        s = ay.reshape(*ay.shape[:ay.dim() - len(self.node.shape) + 1], -1).sum(-1)
        share = torch.log_softmax(-(s + torch.tanh(s).pow(2)), -1)
        return math.log(s.shape[-1]) - self(y).unsqueeze(-1) + share


def _as_class(estimator: Any) -> type[Estimator]:
    if isinstance(estimator, str):
        from gradbench.registry import get_estimator_class

        return get_estimator_class(estimator)
    return estimator


def _upstream(node: Node, batch: int, seed: int) -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    """A linear layer in front of the node, so 'upstream of logits' is a real parameter; logits have the
    node's input shape (batch, *in_shape), which differs from the output's for rank and kmeans."""
    g = torch.Generator().manual_seed(99 + seed)
    layer = nn.Linear(5, node.in_numel)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 0.7)
        layer.bias.copy_(torch.randn(layer.bias.shape, generator=g) * 0.3)
    x = torch.randn(batch, 5, generator=g)
    return layer, x, layer(x).view(batch, *node.in_shape)


def _grads(output: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor | None]:
    if not output.requires_grad or not params:
        return [None] * len(params)
    return list(torch.autograd.grad(output, params, allow_unused=True, retain_graph=True))


def _moved(grads: list[torch.Tensor | None]) -> bool:
    return any(g is not None and bool((g != 0).any()) for g in grads)


def _shape_problems(out: EstimatorOutput, node: Node, batch: int) -> list[str]:
    """What is wrong with the shapes and types of an EstimatorOutput for ``batch`` examples."""
    problems = []
    if tuple(out.sample.shape) != (batch, *node.shape):
        problems.append(f"sample shape {tuple(out.sample.shape)} != {(batch, *node.shape)}")
    if tuple(out.cost.shape) != (batch,):
        problems.append(f"cost shape {tuple(out.cost.shape)} != {(batch,)}")
    for name in ("loss", "aux_loss"):
        t = getattr(out, name)
        if not isinstance(t, torch.Tensor) or t.dim() != 0:
            problems.append(f"{name} is not a scalar tensor")
    if not isinstance(out.diagnostics, dict) or not all(
        isinstance(v, (int, float)) or (isinstance(v, torch.Tensor) and v.dim() == 0)
        for v in out.diagnostics.values()
    ):
        problems.append("diagnostics must map names to floats or 0-d tensors")
    return problems


def _value_problems(out: EstimatorOutput, node: Node, logits: torch.Tensor, cost_fn: nn.Module) -> list[str]:
    """The sample is the exact hard function (deterministic) or a valid sample; cost is cost_fn there."""
    problems = []
    s = out.sample.detach()
    if node.stochastic:
        valid = ((s == 0) | (s == 1)).all() and (node.kind == "bernoulli" or bool((s.sum(-1) == 1).all()))
        if not valid:
            problems.append("sample is not a valid {0,1} / one-hot value")
    elif not torch.equal(s, ops.hard(node, logits.detach())):
        problems.append("sample differs from the exact hard function of the logits")
    with torch.no_grad():
        expected = cost_fn(s)
    if not torch.allclose(out.cost.detach(), expected, rtol=1e-4, atol=1e-5):
        problems.append("cost is not cost_fn at the sample")
    return problems


def check_output(cls, node, config, seed=0) -> CheckResult:
    """Shapes and types of EstimatorOutput; forward value exact (deterministic) or a valid sample."""
    torch.manual_seed(seed)
    batch = 7
    est = cls(node, config)
    cost_fn = CheckCost(node)
    _, _, logits = _upstream(node, batch, seed)
    out = est(logits, cost_fn)
    if not isinstance(out, EstimatorOutput):
        return CheckResult("output", node_label(node), False,
                           f"forward returned {type(out).__name__}, not EstimatorOutput")
    problems = _shape_problems(out, node, batch) or _value_problems(out, node, logits, cost_fn)
    return CheckResult("output", node_label(node), not problems, "; ".join(problems) or "shapes, values ok")


def check_gradients(cls, node, config, seed=0) -> CheckResult:
    """loss + aux_loss backpropagates to finite, non-zero gradients upstream and on cost parameters."""
    torch.manual_seed(seed)
    est = cls(node, config)
    cost_fn = CheckCost(node)
    layer, _, logits = _upstream(node, 16, seed)
    out = est(logits, cost_fn)
    (out.loss + out.aux_loss).backward()
    problems = []
    for label, params in (("upstream", list(layer.parameters())), ("cost_fn", list(cost_fn.parameters())),
                          ("estimator", [p for p in est.parameters() if p.requires_grad])):
        grads = [p.grad for p in params]
        if any(g is not None and not torch.isfinite(g).all() for g in grads):
            problems.append(f"non-finite gradient on {label} parameters")
        elif label != "estimator" and not _moved(grads):
            problems.append(f"no gradient reaches the {label} parameters")
    return CheckResult("gradients", node_label(node), not problems, "; ".join(problems) or "finite, non-zero")


def check_separation(cls, node, config, seed=0) -> CheckResult:
    """``loss`` moves none of the estimator's parameters; ``aux_loss`` moves nothing else."""
    torch.manual_seed(seed)
    est = cls(node, config)
    cost_fn = CheckCost(node)
    layer, _, logits = _upstream(node, 16, seed)
    out = est(logits, cost_fn)
    own = [p for p in est.parameters() if p.requires_grad]
    others = list(layer.parameters()) + list(cost_fn.parameters())
    problems = []
    if _moved(_grads(out.loss, own)):
        problems.append("loss has a gradient on the estimator's own parameters")
    if _moved(_grads(out.aux_loss, others)):
        problems.append("aux_loss has a gradient on parameters that are not the estimator's")
    detail = "; ".join(problems) or (f"{len(own)} own parameter tensors kept apart" if own else "no own parameters")
    return CheckResult("separation", node_label(node), not problems, detail)


def check_determinism(cls, node, config, seed=0) -> CheckResult:
    """The same torch seed gives the same sample, loss and gradients."""

    def once():
        torch.manual_seed(seed)
        est = cls(node, config)
        cost_fn = CheckCost(node)
        layer, _, logits = _upstream(node, 16, seed)
        out = est(logits, cost_fn)
        (out.loss + out.aux_loss).backward()
        return [out.sample.detach(), out.loss.detach(), layer.weight.grad.clone()]

    a, b = once(), once()
    same = all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    return CheckResult("determinism", node_label(node), same,
                       "identical" if same else "two runs with one seed differ")


def exact_gradient(node: Node, base_logits: torch.Tensor, cost_fn: nn.Module) -> tuple[torch.Tensor, list]:
    """Gradient of E_b[f(b)] w.r.t. one example's logits and cost_fn's parameters, by enumeration."""
    logits = base_logits.clone().requires_grad_(True)
    if node.kind == "bernoulli":
        configs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=node.numel))).view(-1, *node.shape)
    else:
        k = node.shape[-1]
        rows = node.numel // k
        idx = torch.tensor(list(itertools.product(range(k), repeat=rows)))
        configs = torch.nn.functional.one_hot(idx, k).float().view(-1, *node.shape)
    log_p = ops.log_prob(node, logits, configs)  # (n_configs,)
    expected = (log_p.exp() * cost_fn(configs)).sum()
    params = list(cost_fn.parameters())
    grads = torch.autograd.grad(expected, [logits, *params])
    return grads[0], list(grads[1:])


def check_unbiased(cls, node, config, seed=0, batch: int = 2000, rounds: int = 20) -> CheckResult:
    """Mean of ``batch * rounds`` estimates equals the exact gradient (z/t-tests, Bonferroni, ALPHA)."""
    torch.manual_seed(seed)
    est = cls(node, config)
    est.train()
    cost_fn = CheckCost(node)
    g = torch.Generator().manual_seed(7 + seed)
    base = torch.randn(node.shape, generator=g) * 0.8
    exact_logits, exact_params = exact_gradient(node, base, cost_fn)
    per_example, param_rounds = [], []
    params = list(cost_fn.parameters())
    for _ in range(rounds):
        logits = base.expand(batch, *node.shape).clone().requires_grad_(True)
        for p in params:
            p.grad = None
        out = est(logits, cost_fn)
        out.loss.backward()
        if logits.grad is None:
            return CheckResult("unbiased", node_label(node), False, "loss has no gradient w.r.t. the logits")
        per_example.append(logits.grad.detach() * batch)  # loss is a batch mean
        param_rounds.append(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                                       for p in params]))
    est_logits = torch.cat(per_example).flatten(1).double()
    est_params = torch.stack(param_rounds).double()
    exact_p = torch.cat([e.flatten() for e in exact_params]).double()
    n_coords = est_logits.shape[1] + est_params.shape[1]
    z_crit = bonferroni_critical(ALPHA, n_coords)  # logits: batch * rounds draws, normal tails
    t_crit = bonferroni_critical(ALPHA, n_coords, df=rounds - 1)  # cost params: one draw per round
    worst, failures = 0.0, []
    for label, samples, exact, crit in (("logits", est_logits, exact_logits.flatten().double(), z_crit),
                                        ("cost params", est_params, exact_p, t_crit)):
        mean = samples.mean(0)
        se = samples.std(0) / samples.shape[0] ** 0.5
        score = z_scores((mean - exact).numpy(), se.numpy(), exact.numpy())  # se = 0: exact up to rounding or inf
        worst = max(worst, float(score.max() / crit))
        bad = np.flatnonzero(score > crit).tolist()
        if bad:
            i = bad[0]
            failures.append(f"{label}[{i}]: mean {mean[i]:.4f} vs exact {exact[i]:.4f} "
                            f"(|z|={score[i]:.1f} > {crit:.2f})")
    n = est_logits.shape[0]
    detail = (f"{n} draws; max |z|/critical = {worst:.2f}" if not failures
              else f"biased at {len(failures)} group(s): " + "; ".join(failures))
    return CheckResult("unbiased", node_label(node), not failures, detail)


def check_float64(cls, node, config, seed=0) -> CheckResult:
    """float64 logits and cost give a float64 sample, cost and gradient (exact-enumeration users need this)."""
    torch.manual_seed(seed)
    est = cls(node, config)
    cost_fn = CheckCost(node).double()
    logits = (torch.randn(8, *node.in_shape, dtype=torch.float64) * 0.8).requires_grad_(True)
    out = est(logits, cost_fn)
    (out.loss + out.aux_loss).backward()
    problems = [f"{name} is {t.dtype}" for name, t in (("sample", out.sample), ("cost", out.cost),
                                                       ("logits gradient", logits.grad))
                if t is None or t.dtype != torch.float64]
    return CheckResult("float64", node_label(node), not problems, "; ".join(problems) or "float64 throughout")


class _RowCounter(nn.Module):
    """Wraps a cost function and counts the rows it evaluates per example: a call on y of shape
    (*prefix, batch, *shape) evaluates prod(prefix) rows per example; calls add up."""

    def __init__(self, inner: nn.Module, node: Node, batch: int) -> None:
        super().__init__()
        self.inner, self.node, self.batch = inner, node, batch
        self.rows, self.calls = 0.0, 0

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.rows += y.numel() / (self.batch * self.node.numel)
        return self.inner(y)

    def log_weight(self, y: torch.Tensor) -> torch.Tensor:
        """The inner cost's log-weight hook, counted like the cost: a row is a row."""
        self.calls += 1
        self.rows += y.numel() / (self.batch * self.node.numel)
        return self.inner.log_weight(y)


def check_cost_evals(cls, node, config, seed=0) -> CheckResult:
    """``diagnostics["cost_evals"]`` is the number of cost-function rows evaluated per example in one
    forward: ``cost_fn(y)`` with y of shape (*prefix, batch, *shape) counts prod(prefix), calls add up;
    rows evaluated only to report the sample's cost are declared apart, as ``report_evals``."""
    torch.manual_seed(seed)
    batch = 7
    est = cls(node, config)
    counter = _RowCounter(CheckCost(node), node, batch)
    _, _, logits = _upstream(node, batch, seed)
    out = est(logits, counter)
    seen = f"{counter.rows:g} row(s) per example in {counter.calls} call(s)"
    diagnostics = out.diagnostics if isinstance(out.diagnostics, dict) else {}
    if "cost_evals" not in diagnostics:
        return CheckResult("cost_evals", node_label(node), False,
                           f"diagnostics has no 'cost_evals' (cost-function rows per example per step); "
                           f"forward evaluated {seen}")
    reported, reporting = float(diagnostics["cost_evals"]), float(diagnostics.get("report_evals", 0))
    if reported + reporting != counter.rows:
        declared = f"cost_evals={reported:g}" + (f" + report_evals={reporting:g}" if reporting else "")
        return CheckResult("cost_evals", node_label(node), False, f"reports {declared}, but forward evaluated {seen}")
    return CheckResult("cost_evals", node_label(node), True,
                       seen + (f", {reporting:g} only to report the cost (report_evals)" if reporting else ""))


BATCH_ROWS = 5  # examples in the batch-independence check: example 0 and four others to change


def _row_zero(cls, node: Node, config: Any, seed: int, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(example 0's sample, example 0's logits gradient from ``loss``) of a fresh estimator on ``logits``,
    with the global RNG seeded by ``seed`` before it is built, so every call draws the same noise."""
    torch.manual_seed(seed)
    est = cls(node, config)
    est.train()
    x = logits.detach().clone().requires_grad_(True)
    out = est(x, CheckCost(node))
    (g,) = torch.autograd.grad(out.loss, x, allow_unused=True) if out.loss.requires_grad else (None,)
    return out.sample[0].detach(), (g[0] if g is not None else torch.zeros_like(x[0]))


def check_batch_independent(cls, node, config, seed=0) -> CheckResult:
    """Example 0's gradient does not depend on the other examples of its batch, as the tag
    ``batch_independent`` (True unless declared) claims: gradient statistics batch draws by repeating a
    batch, and training at batch size 1 must learn what training at 64 does. With the same seed and the
    same batch size, so that an estimator drawing noise per example draws the same noise for example 0,
    the logits of examples 1.. are replaced twice (fresh values on the logits' scale, then 3x larger);
    example 0's sample and gradient must not move (beyond 1e-5 relative: float rounding)."""
    _, _, logits = _upstream(node, BATCH_ROWS, seed)
    logits = logits.detach()
    g = torch.Generator().manual_seed(31 + seed)
    sample, grad = _row_zero(cls, node, config, seed, logits)
    for scale in (1.0, 3.0):
        other = logits.clone()
        other[1:] = torch.randn(other[1:].shape, generator=g, dtype=other.dtype) * float(logits.std()) * scale
        sample_b, grad_b = _row_zero(cls, node, config, seed, other)
        if not torch.equal(sample, sample_b):
            return CheckResult("batch_independent", node_label(node), False,
                               "example 0's sample changed when only the other examples' logits changed (same "
                               "seed, same batch size): its noise must not depend on the other examples; if it "
                               "does by design, declare batch_independent=False")
        size = float(torch.maximum(grad.abs().max(), grad_b.abs().max()))
        diff = float((grad - grad_b).abs().max())
        if diff > 1e-5 * size + 1e-12:
            return CheckResult("batch_independent", node_label(node), False,
                               f"example 0's gradient changed by {diff / size:.2g} (relative, max over its "
                               f"coordinates) when only the other examples' logits changed (same seed, same batch "
                               f"size): the estimate couples the examples of a batch (a baseline or "
                               f"normalisation over the batch?); declare batch_independent=False (tags) if that "
                               f"is intended")
    return CheckResult("batch_independent", node_label(node), True,
                       f"example 0 unchanged by the other {BATCH_ROWS - 1} examples (2 replacements)")


CHECKS: list[Callable[..., CheckResult]] = [check_output, check_gradients, check_separation, check_determinism,
                                             check_float64, check_cost_evals]


def claimed_checks(tags: EstimatorTags, node: Node) -> list[Callable[..., CheckResult]]:
    """The checks of what ``tags`` claim on ``node``: batch independence unless declared otherwise, and
    unbiasedness on stochastic nodes where claimed."""
    checks: list[Callable[..., CheckResult]] = [check_batch_independent] if tags.batch_independent else []
    if tags.unbiased and node.stochastic:
        checks.append(check_unbiased)
    return checks


def nodes_for(cls: type[Estimator], config: Any = None) -> list[Node]:
    """The small test node of every kind ``cls`` supports at ``config`` (its tags; None: the default)."""
    supports = cls.tags_for(config).supports
    return [SMALL_NODES[k] for k in SMALL_NODES if k in supports]


def accepted_nodes(cls: type[Estimator], config: Any) -> list[Node]:
    """``nodes_for(cls, config)`` less the kinds whose constructor refuses ``config`` (UnsupportedError: a
    plugin that refuses a kind without narrowing its tags). Other construction errors keep the node: its
    checks report them."""
    return _accepting(cls, config, nodes_for(cls, config))


def accepted_variant_nodes(cls: type[Estimator], config: Any) -> list[Node]:
    """The VARIANT_NODES of the kinds ``cls`` supports at ``config`` that its constructor accepts (e.g.
    kmeans assignments: ``dab`` runs them, ``ste`` refuses them)."""
    supports = cls.tags_for(config).supports
    return _accepting(cls, config, [n for n in VARIANT_NODES.values() if n.kind in supports])


def _accepting(cls: type[Estimator], config: Any, candidates: list[Node]) -> list[Node]:
    nodes = []
    with torch.random.fork_rng(devices=[]):  # building a module draws parameters: leave the global RNG as it was
        for node in candidates:
            try:
                cls(node, config)
            except UnsupportedError:
                continue
            except Exception:  # a broken constructor: its checks fail, each with the error
                pass
            nodes.append(node)
    return nodes


def check_supports(cls, node, config, seed=0) -> CheckResult:
    """The failure reported for an estimator with no node kind to check on (``node`` is None)."""
    supports = cls.tags_for(config).supports
    reason = "supports no known node kind" if not nodes_for(cls, config) else "refuses every node kind it supports"
    return CheckResult("supports", "-", False, f"{reason} (supports: {', '.join(sorted(supports)) or 'none'})")


@dataclass(frozen=True)
class EstimatorCheck:
    """One conformance check of one estimator configuration on one small node, as a test item.

    Calling it runs the check, raises AssertionError with the check's detail if it fails, and returns
    the :class:`CheckResult`. ``id`` reads ``<name>[<non-default config>]-<check>-<node kind>``.
    """

    check: Callable[..., CheckResult]
    cls: type[Estimator]
    config: Any
    node: Node | None  # None: the estimator has no node to check on (the "supports" failure)
    seed: int = 0

    @property
    def id(self) -> str:
        name = self.cls.name or self.cls.__name__
        changed = non_default(self.config)
        if changed:
            name += "[" + ",".join(f"{k}={format_value(v)}" for k, v in changed.items()) + "]"
        check = self.check.__name__.removeprefix("check_")
        return f"{name}-{check}" + (f"-{node_label(self.node)}" if self.node is not None else "")

    def __call__(self) -> CheckResult:
        result = self.check(self.cls, self.node, self.config, self.seed)
        if not result.passed:
            raise AssertionError(f"{self.id}: {result}")
        return result


def _entry(entry: Any) -> tuple[type[Estimator], Any]:
    """An estimator class, a registered name, or a (class or name, config dict or Config) pair."""
    values: Any = None
    if isinstance(entry, tuple):
        if len(entry) != 2:
            raise TypeError(f"expected (estimator, config), got a tuple of {len(entry)}")
        entry, values = entry
    cls = _as_class(entry)
    if values is None or isinstance(values, dict):
        from gradbench.multisample import with_samples

        cls, values = with_samples(cls, values or {})  # samples=k: the engine's multi-sample subclass
        return cls, cls.make_config(values)
    return cls, values


def estimator_checks(estimators: Iterable[Any], seed: int = 0) -> list[EstimatorCheck]:
    """Every (check, node kind) item for each entry (see :func:`parametrize_with_checks`): the CHECKS on
    each node kind the configuration accepts, then what its tags claim (``Estimator.tags_for(config)``):
    ``check_batch_independent`` unless it declares ``batch_independent=False``, and on stochastic nodes,
    when it claims ``unbiased``, ``check_unbiased``."""
    items = []
    for entry in estimators:
        cls, config = _entry(entry)
        tags = cls.tags_for(config)
        nodes = accepted_nodes(cls, config) + accepted_variant_nodes(cls, config)
        for node in nodes:
            items += [EstimatorCheck(check, cls, config, node, seed) for check in CHECKS]
            items += [EstimatorCheck(check, cls, config, node, seed) for check in claimed_checks(tags, node)]
        if not nodes:
            items.append(EstimatorCheck(check_supports, cls, config, None, seed))
    return items


def parametrize_with_checks(estimators: Iterable[Any], seed: int = 0) -> Any:
    """A ``pytest.mark.parametrize`` over every conformance check of ``estimators``, for a plugin's tests
    (like scikit-learn's ``parametrize_with_checks``)::

        @parametrize_with_checks([DisARM, ("gumbel", {"hard": True})])
        def test_conforms(estimator_check):
            estimator_check()

    Each entry is an estimator class, a registered name, or a (class or name, config dict) pair. There is
    one test item per (check, node kind), with ids like ``disarm-output-bernoulli`` (non-default config
    values in brackets: ``gumbel[hard=true]-gradients-categorical``); ``estimator_check()`` runs its check
    and raises AssertionError with the detail when it fails.
    """
    import pytest  # a dev dependency: only tests import this function

    items = estimator_checks(estimators, seed)
    return pytest.mark.parametrize("estimator_check", [pytest.param(c, id=c.id) for c in items])


def check_estimator(estimator: Any, config: Any = None, seed: int = 0) -> list[CheckResult]:
    """Run every conformance check on every node kind the estimator (with ``config``) accepts."""
    cls = _as_class(estimator)
    items = estimator_checks([(cls, config if config is not None else cls.Config())], seed)
    return [_guarded(c.check, c.cls, c.node, c.config, c.seed) for c in items]


def _guarded(check, cls, node, config, seed) -> CheckResult:
    try:
        return check(cls, node, config, seed)
    except Exception as e:  # a crash is a failed check, reported like the others
        name = check.__name__.removeprefix("check_")
        return CheckResult(name, node_label(node) if node is not None else "-", False,
                           f"raised {type(e).__name__}: {e}")
