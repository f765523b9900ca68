"""Conformance checks any estimator must pass (the same ones CI runs; ``gradbench validate`` runs them).

Usage from a plugin's own tests::

    from gradbench.testing import check_estimator
    assert all(r.passed for r in check_estimator(MyEstimator))

Each check builds the estimator on a small node of every kind it supports and a small cost function
with its own parameters that accepts relaxed inputs and leading sample dims. The unbiasedness check
(for estimators claiming ``unbiased``) compares the mean of many estimates with the exact gradient of
E[f] computed by enumerating every configuration; its false-failure rate is at most ``ALPHA`` (0.1%)
per node for a truly unbiased estimator (two-sided tests, Bonferroni over coordinates).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from scipy import stats
from torch import nn

from gradbench import ops
from gradbench.estimator import Estimator, EstimatorOutput
from gradbench.node import Node

ALPHA = 1e-3  # false-failure rate of the unbiasedness test, per node
SMALL_NODES = {
    "sign": Node("sign", (6,)),
    "threshold": Node("threshold", (6,)),
    "argmax": Node("argmax", (2, 4)),
    "bernoulli": Node("bernoulli", (4,)),
    "categorical": Node("categorical", (2, 3)),
}


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


def _as_class(estimator: Any) -> type[Estimator]:
    if isinstance(estimator, str):
        from gradbench.registry import get_estimator_class

        return get_estimator_class(estimator)
    return estimator


def _make(cls: type[Estimator], node: Node, config: Any) -> Estimator:
    return cls(node, config)


def _upstream(node: Node, batch: int, seed: int) -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    """A linear layer in front of the node, so 'upstream of logits' is a real parameter."""
    g = torch.Generator().manual_seed(99 + seed)
    layer = nn.Linear(5, node.numel)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 0.7)
        layer.bias.copy_(torch.randn(layer.bias.shape, generator=g) * 0.3)
    x = torch.randn(batch, 5, generator=g)
    return layer, x, layer(x).view(batch, *node.shape)


def _grads(output: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor | None]:
    if not output.requires_grad or not params:
        return [None] * len(params)
    return list(torch.autograd.grad(output, params, allow_unused=True, retain_graph=True))


def _moved(grads: list[torch.Tensor | None]) -> bool:
    return any(g is not None and bool((g != 0).any()) for g in grads)


def check_output(cls, node, config, seed=0) -> CheckResult:
    """Shapes and types of EstimatorOutput; forward value exact (deterministic) or a valid sample."""
    torch.manual_seed(seed)
    batch = 7
    est = _make(cls, node, config)
    cost_fn = CheckCost(node)
    _, _, logits = _upstream(node, batch, seed)
    out = est(logits, cost_fn)
    problems = []
    if not isinstance(out, EstimatorOutput):
        return CheckResult("output", node.kind, False, f"forward returned {type(out).__name__}, not EstimatorOutput")
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
    if not problems:
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
    return CheckResult("output", node.kind, not problems, "; ".join(problems) or "shapes, values ok")


def check_gradients(cls, node, config, seed=0) -> CheckResult:
    """loss + aux_loss backpropagates to finite, non-zero gradients upstream and on cost parameters."""
    torch.manual_seed(seed)
    est = _make(cls, node, config)
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
    return CheckResult("gradients", node.kind, not problems, "; ".join(problems) or "finite, non-zero")


def check_separation(cls, node, config, seed=0) -> CheckResult:
    """``loss`` moves none of the estimator's parameters; ``aux_loss`` moves nothing else."""
    torch.manual_seed(seed)
    est = _make(cls, node, config)
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
    return CheckResult("separation", node.kind, not problems, detail)


def check_determinism(cls, node, config, seed=0) -> CheckResult:
    """The same torch seed gives the same sample, loss and gradients."""

    def once():
        torch.manual_seed(seed)
        est = _make(cls, node, config)
        cost_fn = CheckCost(node)
        layer, _, logits = _upstream(node, 16, seed)
        out = est(logits, cost_fn)
        (out.loss + out.aux_loss).backward()
        return [out.sample.detach(), out.loss.detach(), layer.weight.grad.clone()]

    a, b = once(), once()
    same = all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    return CheckResult("determinism", node.kind, same, "identical" if same else "two runs with one seed differ")


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
    est = _make(cls, node, config)
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
            return CheckResult("unbiased", node.kind, False, "loss has no gradient w.r.t. the logits")
        per_example.append(logits.grad.detach() * batch)  # loss is a batch mean
        param_rounds.append(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                                       for p in params]))
    est_logits = torch.cat(per_example).flatten(1).double()
    est_params = torch.stack(param_rounds).double()
    exact_p = torch.cat([e.flatten() for e in exact_params]).double()
    n_coords = est_logits.shape[1] + est_params.shape[1]
    z_crit = stats.norm.ppf(1 - ALPHA / (2 * n_coords))
    t_crit = stats.t.ppf(1 - ALPHA / (2 * n_coords), df=rounds - 1)
    worst, failures = 0.0, []
    for label, samples, exact, crit in (("logits", est_logits, exact_logits.flatten().double(), z_crit),
                                        ("cost params", est_params, exact_p, t_crit)):
        mean = samples.mean(0)
        se = samples.std(0) / samples.shape[0] ** 0.5
        diff = (mean - exact).abs()
        score = torch.where(se > 0, diff / se.clamp_min(1e-300),
                            torch.where(diff < 1e-6, torch.zeros_like(diff), torch.full_like(diff, float("inf"))))
        worst = max(worst, float(score.max() / crit))
        bad = (score > crit).nonzero().flatten().tolist()
        if bad:
            i = bad[0]
            failures.append(f"{label}[{i}]: mean {mean[i]:.4f} vs exact {exact[i]:.4f} "
                            f"(|z|={score[i]:.1f} > {crit:.2f})")
    n = est_logits.shape[0]
    detail = (f"{n} draws; max |z|/critical = {worst:.2f}" if not failures
              else f"biased at {len(failures)} group(s): " + "; ".join(failures))
    return CheckResult("unbiased", node.kind, not failures, detail)


def check_float64(cls, node, config, seed=0) -> CheckResult:
    """float64 logits and cost give a float64 sample, cost and gradient (exact-enumeration users need this)."""
    torch.manual_seed(seed)
    est = _make(cls, node, config)
    cost_fn = CheckCost(node).double()
    logits = (torch.randn(8, *node.shape, dtype=torch.float64) * 0.8).requires_grad_(True)
    out = est(logits, cost_fn)
    (out.loss + out.aux_loss).backward()
    problems = [f"{name} is {t.dtype}" for name, t in (("sample", out.sample), ("cost", out.cost),
                                                       ("logits gradient", logits.grad))
                if t is None or t.dtype != torch.float64]
    return CheckResult("float64", node.kind, not problems, "; ".join(problems) or "float64 throughout")


CHECKS: list[Callable[..., CheckResult]] = [check_output, check_gradients, check_separation, check_determinism,
                                             check_float64]


def nodes_for(cls: type[Estimator]) -> list[Node]:
    return [SMALL_NODES[k] for k in SMALL_NODES if k in cls.supports]


def check_estimator(estimator: Any, config: Any = None, seed: int = 0) -> list[CheckResult]:
    """Run every conformance check on every node kind the estimator supports."""
    cls = _as_class(estimator)
    config = config if config is not None else cls.Config()
    results = []
    for node in nodes_for(cls):
        for check in CHECKS:
            results.append(_guarded(check, cls, node, config, seed))
        if cls.unbiased and node.stochastic:
            results.append(_guarded(check_unbiased, cls, node, config, seed))
    if not results:
        results.append(CheckResult("supports", "-", False, "supports no known node kind"))
    return results


def _guarded(check, cls, node, config, seed) -> CheckResult:
    try:
        return check(cls, node, config, seed)
    except Exception as e:  # a crash is a failed check, reported like the others
        name = check.__name__.removeprefix("check_")
        return CheckResult(name, node.kind, False, f"raised {type(e).__name__}: {e}")
