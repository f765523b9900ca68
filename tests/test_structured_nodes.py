"""DAB's own domain: sort, rank, topk, kmeans and round nodes, their exact forwards and their estimators.

* The exact forwards are checked against independent implementations (numpy's sort and argsort, scipy's
  rankdata, numpy's argpartition, scipy's nearest-centroid ``vq``, a nearest-level search).
* The estimators are checked against what they claim to differentiate: ``exact`` against the sorting
  permutation, ``softsort`` against finite differences of the relaxation, ``blackbox`` against finite
  differences of its piecewise-linear interpolation f_lambda, ``perturbed`` against finite differences
  of the Gaussian-smoothed objective (common random numbers), ``imle`` against the closed-form marginals of
  Gumbel perturb-and-MAP and against ``blackbox`` at tau = 0.
* The statistical tests are seeded (deterministic outcomes); each states its false-failure rate for a
  correct implementation, and a sensitivity check shows it rejects a wrong scale.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gradbench.estimators.blackbox import max_assignment
from gradbench.estimators.imle import gumbel, sum_of_gamma
from gradbench.estimators.softsort import neuralsort, softsort
from scipy.cluster.vq import vq
from scipy.optimize import linear_sum_assignment
from scipy.stats import norm, rankdata

import gradbench
from gradbench import Node, ops
from gradbench.errors import UnsupportedError
from gradbench.testing import SMALL_NODES, VARIANT_NODES, check_estimator, parametrize_with_checks

ALPHA = 1e-3  # false-failure rate of each statistical test below (Bonferroni over its coordinates)


def _crit(coords: int) -> float:
    return float(norm.ppf(1 - ALPHA / (2 * coords)))


# ---------------------------------------------------------------- nodes: shapes, params, records


def test_existing_kinds_keep_their_record_description():
    assert Node("sign", (256,)).to_dict() == {"kind": "sign", "shape": [256], "margin": 0.5}
    assert Node("argmax", (20, 10)).to_dict() == {"kind": "argmax", "shape": [20, 10]}
    assert Node("bernoulli", 4).to_dict() == {"kind": "bernoulli", "shape": [4]}
    for kind in ("sign", "threshold", "argmax", "bernoulli", "categorical"):
        assert SMALL_NODES[kind].in_shape == SMALL_NODES[kind].shape


def test_shape_rules_and_params():
    rank = Node("rank", (3, 5, 5))
    assert rank.in_shape == (3, 5) and rank.numel == 75 and rank.in_numel == 15
    vectors = Node("kmeans", (20, 8), centroids=16)
    assert vectors.in_shape == (36, 8) and vectors.params == {"centroids": 16, "output": "vectors", "dim": 8}
    assert vectors == Node("kmeans", (20, 8), centroids=16, dim=8)
    assignments = Node("kmeans", (20, 16), centroids=16, output="assignments", dim=8)
    assert assignments.in_shape == (36, 8) and assignments.numel == 320
    assert Node("round", 6, levels=3, low=-2, high=2).to_dict() == {"kind": "round", "shape": [6], "levels": 3,
                                                                   "low": -2.0, "high": 2.0}
    assert Node("topk", (2, 5), k=2).to_dict() == {"kind": "topk", "shape": [2, 5], "k": 2}
    assert Node("round", 4).elementwise and not Node("sort", 4).elementwise


@pytest.mark.parametrize("kind,shape,params,needle", [
    ("rank", (4,), {}, "(..., n, n)"),
    ("rank", (4, 5), {}, "(..., n, n)"),
    ("topk", (5,), {"k": 5}, "k must be <"),
    ("topk", (5,), {"k": 0}, "k must be a whole number >= 1"),
    ("round", (5,), {"levels": 1}, "levels must be"),
    ("round", (5,), {"low": 1, "high": 1}, "high must be > low"),
    ("kmeans", (5, 3), {"output": "codes"}, "output must be one of"),
    ("kmeans", (5, 4), {"output": "assignments"}, "needs dim"),
    ("kmeans", (5, 3), {"output": "assignments", "dim": 2, "centroids": 4}, "assignments have shape"),
    ("kmeans", (5, 3), {"dim": 2}, "differs from"),
    ("sort", (5,), {"k": 2}, "takes params none"),
])
def test_bad_nodes_are_refused_with_one_line(kind, shape, params, needle):
    with pytest.raises(ValueError) as info:
        Node(kind, shape, **params)
    assert needle in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------- exact forwards vs independent implementations


def _x(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_sort_matches_numpy():
    x = _x(50, 3, 7)
    assert np.array_equal(ops.hard(Node("sort", (3, 7)), x).numpy(), np.sort(x.numpy(), -1))


def test_rank_matches_argsort_and_rankdata():
    x = _x(40, 6)
    p = ops.hard(Node("rank", (6, 6)), x).numpy()
    assert set(np.unique(p)) == {0.0, 1.0} and (p.sum(-1) == 1).all() and (p.sum(-2) == 1).all()
    assert np.array_equal(p.argmax(-1), np.argsort(x.numpy(), -1, kind="stable"))  # row i: the i-th smallest
    assert np.array_equal(p.argmax(-2), rankdata(x.numpy(), axis=-1, method="ordinal") - 1)  # column j: its rank
    assert np.allclose(p @ x.numpy()[..., None], np.sort(x.numpy(), -1)[..., None])


def test_rank_ties_go_to_the_lower_index():
    p = ops.rank_matrix(torch.tensor([1.0, 0.0, 1.0, 0.0]))
    assert p.argmax(-1).tolist() == [1, 3, 0, 2]


@pytest.mark.parametrize("k", [1, 3, 6])
def test_topk_matches_argpartition(k):
    x = _x(60, 7).numpy()
    mask = ops.hard(Node("topk", (7,), k=k), torch.from_numpy(x)).numpy()
    expected = np.zeros_like(x)
    np.put_along_axis(expected, np.argpartition(-x, k - 1, axis=-1)[:, :k], 1.0, axis=-1)
    assert np.array_equal(mask, expected)


@pytest.mark.parametrize("levels,low,high", [(2, -1.0, 1.0), (4, -1.0, 1.0), (5, 0.0, 2.0)])
def test_round_is_the_nearest_level(levels, low, high):
    x = _x(2000, seed=3).numpy() * 2
    q = ops.hard(Node("round", (2000,), levels=levels, low=low, high=high), torch.from_numpy(x)).numpy()
    grid = np.linspace(low, high, levels)
    nearest = grid[np.abs(np.clip(x, low, high)[:, None] - grid[None, :]).argmin(-1)]
    assert np.allclose(q, nearest, atol=1e-12)


@pytest.mark.parametrize("output", ["vectors", "assignments"])
def test_kmeans_matches_scipy_nearest_centroid(output):
    m, c, d = 9, 5, 3
    node = Node("kmeans", (m, d if output == "vectors" else c), centroids=c, output=output, dim=d)
    x = _x(20, m + c, d, seed=4)
    y = ops.hard(node, x).numpy()
    for b in range(20):
        vectors, centroids = x[b, :m].numpy(), x[b, m:].numpy()
        index, _ = vq(vectors, centroids, check_finite=True)
        expected = centroids[index] if output == "vectors" else np.eye(c)[index]
        assert np.allclose(y[b], expected), b


@pytest.mark.parametrize("output", ["vectors", "assignments"])
def test_kmeans_is_right_in_float32_far_from_the_origin(output):
    """2,000 float32 vectors and 16 centroids (dim 8) around (1000, ..., 1000): the assignments equal the
    float64 ones (squared distances of the same float32 inputs computed in float64, element by element).
    The expansion ||v||^2 - 2 v.c + ||c||^2 cancels there: it got 961 of 2,000 wrong. Seeded inputs and
    deterministic arithmetic: no false failures."""
    m, c, d = 2000, 16, 8
    node = Node("kmeans", (m, d if output == "vectors" else c), centroids=c, output=output, dim=d)
    g = torch.Generator().manual_seed(25)
    x = 1000.0 + torch.randn(1, m + c, d, generator=g)  # float32
    vectors, centroids = x[0, :m].double(), x[0, m:].double()
    expected = (vectors[:, None, :] - centroids[None, :, :]).pow(2).sum(-1).argmin(-1)
    got = ops.hard(node, x)[0]
    index = got.argmax(-1) if output == "assignments" else (got[:, None, :] == x[0, m:][None]).all(-1).int().argmax(-1)
    wrong = int((index != expected).sum())
    assert wrong == 0, f"{wrong} of {m} vectors assigned to a centroid that is not the nearest"


def test_max_assignment_matches_scipy():
    for n in (1, 2, 4, 7):
        cost = _x(30, n, n, seed=n)
        perm = max_assignment(cost).numpy()
        for b in range(30):
            assert np.array_equal(perm[b], linear_sum_assignment(cost[b].numpy(), maximize=True)[1])


# ---------------------------------------------------------------- who runs what; refusals


def test_dab_supports_every_kind_and_maps_input_to_output_shape():
    dab = gradbench.registry.get_estimator_class("dab")
    assert {"sort", "rank", "topk", "kmeans", "round"} <= dab.supports
    for node in (Node("rank", (3, 4, 4)), VARIANT_NODES["kmeans(assignments)"], Node("kmeans", (3, 2), centroids=4)):
        est = gradbench.create_estimator("dab", node)
        first, last = est.approximator.net[0], est.approximator.net[-1]
        assert (first.in_features, last.out_features) == (node.in_numel, node.numel)
    with pytest.raises(UnsupportedError, match="one element at a time"):
        gradbench.create_estimator("dab", Node("sort", (4,)), approximator="independent")
    gradbench.create_estimator("dab", Node("round", (4,)), approximator="independent")


@pytest.mark.parametrize("node,needle", [(Node("rank", (4, 4)), "rank changes shape"),
                                         (VARIANT_NODES["kmeans(assignments)"], "output=assignments")])
def test_ste_refuses_a_change_of_shape_with_one_line(node, needle):
    with pytest.raises(UnsupportedError) as info:
        gradbench.create_estimator("ste", node)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_ste_on_structured_kinds():
    x = _x(3, 5).requires_grad_(True)
    g = _x(3, 5, seed=1)
    out = gradbench.create_estimator("ste", Node("sort", (5,)))(x, lambda y: (g * y).sum(-1))
    out.loss.backward()
    assert torch.equal(out.sample, x.detach().sort(-1).values) and torch.allclose(x.grad * 3, g)  # the identity
    x = torch.tensor([[-2.0, -0.4, 0.4, 2.0]], requires_grad=True)
    out = gradbench.create_estimator("ste", Node("round", (4,), levels=3, low=-1, high=1), variant="clipped")(
        x, lambda y: y.sum(-1))
    out.loss.backward()
    assert out.sample.tolist() == [[-1.0, 0.0, 0.0, 1.0]] and x.grad.tolist() == [[0.0, 1.0, 1.0, 0.0]]
    with pytest.raises(UnsupportedError, match="variant=prob"):
        gradbench.create_estimator("ste", Node("topk", (4,), k=2), variant="prob")


def test_ste_on_kmeans_vectors_passes_the_gradient_to_the_encoders_vectors():
    node = Node("kmeans", (3, 2), centroids=4)
    x = _x(5, 7, 2).requires_grad_(True)
    g = _x(5, 3, 2, seed=2)
    out = gradbench.create_estimator("ste", node)(x, lambda y: (g * y).flatten(-2).sum(-1))
    out.loss.backward()
    assert torch.allclose(x.grad[:, :3] * 5, g) and (x.grad[:, 3:] == 0).all()  # centroids get nothing


@pytest.mark.parametrize("name", ["perturbed", "blackbox", "imle", "softsort", "exact"])
def test_new_estimators_pass_the_conformance_checks(name):
    results = check_estimator(name)
    assert results and all(r.passed for r in results), [str(r) for r in results if not r.passed]


@parametrize_with_checks([("perturbed", {"baseline": False, "perturbations": 2}), ("imle", {"tau": 0.0}),
                          ("imle", {"perturbations": 3}), ("softsort", {"variant": "neuralsort", "tau": 0.3}),
                          ("ste", {"variant": "clipped"})])
def test_other_configurations_conform(estimator_check):
    estimator_check()


def test_variant_nodes_are_checked_where_accepted():
    from gradbench.testing import estimator_checks

    ids = {c.id for c in estimator_checks(["dab", "ste"])}
    assert "dab-output-kmeans(assignments)" in ids and "dab-output-kmeans" in ids
    assert "ste-output-kmeans" in ids and not any("assignments" in i for i in ids if i.startswith("ste-"))
    assert not any(i.endswith("-rank") for i in ids if i.startswith("ste-"))


def test_unsupported_run_exits_2_with_the_reason(tmp_path, capsys):
    from gradbench.cli import main

    code = main(["run", "--task", "classify:node=rank", "--estimator", "ste", "--runs", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "ste" in err and "rank" in err


# ---------------------------------------------------------------- exact and relaxed gradients


def _linear_grad(est, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Each row's gradient of the linear cost <g, y> through the estimator (the loss is a batch mean)."""
    x = x.clone().requires_grad_(True)
    dims = g.dim() - 1
    out = est(x, lambda y: (g * y).flatten(-dims).sum(-1))
    out.loss.backward()
    return x.grad * x.shape[0]


def test_exact_gradient_is_the_sorting_permutation():
    x, g = _x(8, 6), _x(8, 6, seed=1)
    grad = _linear_grad(gradbench.create_estimator("exact", Node("sort", (6,))), x, g)
    p = ops.rank_matrix(x)  # sort(x) = P x, so d<g, sort(x)>/dx = P^T g
    assert torch.allclose(grad, (p.transpose(-1, -2) @ g.unsqueeze(-1)).squeeze(-1))


@pytest.mark.parametrize("variant", ["softsort", "neuralsort"])
@pytest.mark.parametrize("kind", ["sort", "rank"])
def test_softsort_gradient_matches_finite_differences_of_the_relaxation(variant, kind):
    n, tau = 5, 0.7
    node = Node("sort", (n,)) if kind == "sort" else Node("rank", (n, n))
    relax = softsort if variant == "softsort" else neuralsort
    x = _x(4, n)
    g = _x(4, *node.shape, seed=5)

    def smooth(v):  # <g, relaxation>, per row
        p = relax(v, tau)
        y = p if kind == "rank" else (p @ v.unsqueeze(-1)).squeeze(-1)
        return (g * y).flatten(1).sum(-1)

    est = gradbench.create_estimator("softsort", node, variant=variant, tau=tau)
    grad = _linear_grad(est, x, g)
    h = 1e-6
    fd = torch.stack([(smooth(x + h * e) - smooth(x - h * e)) / (2 * h) for e in torch.eye(n, dtype=x.dtype)], -1)
    assert torch.allclose(grad, fd, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("relax", [softsort, neuralsort])
def test_relaxations_tend_to_the_permutation_matrix(relax):
    x = _x(20, 6)
    assert torch.allclose(relax(x, 1e-4), ops.rank_matrix(x), atol=1e-6)
    assert torch.allclose(relax(x, 0.5).sum(-1), torch.ones(20, 6, dtype=x.dtype))


def _interpolation(node: Node, theta: torch.Tensor, g: torch.Tensor, lam: float) -> torch.Tensor:
    """Vlastelica's f_lambda for the linear loss <g, y>, per row, from independent solvers:
    (max_y <c(theta), y> - max_y <c(theta) - lam g, y>) / lam."""
    if node.kind == "rank":
        w = torch.arange(theta.shape[-1], dtype=theta.dtype)
        value = (w * theta.sort(-1).values).sum(-1)  # max over permutations of <P, w theta^T>
        shifted = w.unsqueeze(-1) * theta.unsqueeze(-2) - lam * g
        best = [shifted[b].numpy()[linear_sum_assignment(shifted[b].numpy(), maximize=True)].sum()
                for b in range(theta.shape[0])]
        return (value - torch.tensor(best, dtype=theta.dtype)) / lam
    k = node.params.get("k", 1)
    top = lambda v: v.topk(k, -1).values.sum(-1)  # noqa: E731 - max over k-hot masks of <v, y>
    return (top(theta) - top(theta - lam * g)) / lam


@pytest.mark.parametrize("node", [Node("argmax", (5,)), Node("topk", (6,), k=2), Node("rank", (4, 4))])
@pytest.mark.parametrize("lam", [0.5, 3.0])
def test_blackbox_gradient_is_the_gradient_of_its_interpolation(node, lam):
    """f_lambda is piecewise linear: central differences are exact away from its kinks (h = 1e-7)."""
    x = _x(6, *node.in_shape, seed=7)
    g = _x(6, *node.shape, seed=8)
    grad = _linear_grad(gradbench.create_estimator("blackbox", node, lam=lam), x, g)
    h = 1e-7
    n = node.in_shape[-1]
    fd = torch.stack([(_interpolation(node, x + h * e, g, lam) - _interpolation(node, x - h * e, g, lam)) / (2 * h)
                      for e in torch.eye(n, dtype=x.dtype)], -1)
    assert torch.allclose(grad, fd, atol=1e-6), (grad, fd)
    assert grad.abs().sum() > 0  # lambda moved some solution: the test is not vacuous


@pytest.mark.parametrize("node", [Node("argmax", (5,)), Node("topk", (6,), k=2)])
def test_imle_without_noise_is_blackbox(node):
    x, g = _x(10, *node.shape, seed=9), _x(10, *node.shape, seed=10)
    a = _linear_grad(gradbench.create_estimator("imle", node, tau=0.0, lam=2.0), x, g)
    b = _linear_grad(gradbench.create_estimator("blackbox", node, lam=2.0), x, g)
    assert torch.equal(a, b)


class _OfficialBlackbox(torch.autograd.Function):
    """The official blackbox code's rule (martius-lab/blackbox-backprop), for an argmin solver y(w):
    w' = w + lambda * grad_output, gradient -(y(w) - y(w')) / lambda, where grad_output is the gradient of
    the loss actually backpropagated (a batch mean in their experiments)."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, node: Node, lam: float) -> torch.Tensor:
        ctx.node, ctx.lam = node, lam
        ctx.save_for_backward(w)
        return ops.hard(node, -w)  # argmin <w, y> = argmax <-w, y>

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (w,) = ctx.saved_tensors
        better = ops.hard(ctx.node, -(w + ctx.lam * grad_output))
        return -(ops.hard(ctx.node, -w) - better) / ctx.lam, None, None


def _batch_mean_loss(y: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """A nonlinear per-example cost, averaged over the batch as the official experiments do."""
    return ((y - targets).pow(2).sum(-1) + (y * targets).sum(-1).pow(2)).mean()


@pytest.mark.parametrize("node", [Node("argmax", (5,)), Node("topk", (6,), k=2)])
def test_official_lambda_over_the_batch_size_is_gradbenchs_lambda(node):
    """docs/estimators.md: the official codes move the solver's input by lambda times the gradient of the
    batch-mean loss, gradbench by lam times each example's own cost gradient, so lam = lambda_official / B
    gives the same second solver call. Then blackbox's gradient is the official one exactly, and I-MLE's
    is the official one divided by lambda_official (the I-MLE code leaves out the 1/lambda)."""
    batch, official = 16, 20.0
    theta = _x(batch, *node.shape, seed=11).requires_grad_(True)
    targets = (_x(batch, *node.shape, seed=12) > 0).to(theta.dtype)
    _batch_mean_loss(_OfficialBlackbox.apply(-theta, node, official), targets).backward()
    expected, theta.grad = theta.grad.clone(), None
    est = gradbench.create_estimator("blackbox", node, lam=official / batch)
    est(theta, lambda y: (y - targets).pow(2).sum(-1) + (y * targets).sum(-1).pow(2)).loss.backward()
    assert torch.allclose(theta.grad, expected, rtol=1e-12, atol=1e-12)
    assert expected.abs().sum() > 0  # some second call moved: not vacuous
    with_lam = gradbench.create_estimator("blackbox", node, lam=official)  # the same number is another method
    theta.grad = None
    with_lam(theta, lambda y: (y - targets).pow(2).sum(-1) + (y * targets).sum(-1).pow(2)).loss.backward()
    assert not torch.allclose(theta.grad, expected)

    # I-MLE, one perturbation at tau = 1, the same noise: the official rule is
    # MAP(theta + eps) - MAP(theta - lambda * dL/dz + eps), dL/dz of the batch-mean loss, no 1/lambda
    imle = gradbench.create_estimator("imle", node, lam=official / batch)
    torch.manual_seed(3)
    theta.grad = None
    imle(theta, lambda y: (y - targets).pow(2).sum(-1) + (y * targets).sum(-1).pow(2)).loss.backward()
    torch.manual_seed(3)  # the estimator's draw, again
    shape = (1, *theta.shape)
    noise = (gumbel(shape, theta) if node.kind == "argmax" else sum_of_gamma(2, 10, shape, theta))[0].detach()
    z = ops.hard(node, theta.detach()).requires_grad_(True)  # the forward value, where dL/dz is taken
    _batch_mean_loss(z, targets).backward()
    x = theta.detach()
    official_imle = ops.hard(node, x + noise) - ops.hard(node, x - official * z.grad + noise)
    assert torch.allclose(theta.grad * official, official_imle, rtol=1e-12, atol=1e-12)
    assert official_imle.abs().sum() > 0


def _z_test(draws: torch.Tensor, target: torch.Tensor, target_se: torch.Tensor | float = 0.0) -> float:
    """max |z| / Bonferroni critical value of the draws' mean against ``target`` (> 1: reject)."""
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(draws.shape[0])
    z = (mean - target).abs() / (se**2 + torch.as_tensor(target_se) ** 2).sqrt()
    return float(z.max()) / _crit(target.numel())


def test_imle_argmax_estimates_the_gumbel_marginals_difference():
    """With Gumbel noise, E[MAP(theta + tau eps)] = softmax(theta / tau): the mean I-MLE gradient is
    (softmax(theta/tau) - softmax((theta - lam g)/tau)) / lam exactly. 40,000 draws; false-failure rate
    ALPHA. A gradient off by 15% is rejected (sensitivity)."""
    torch.manual_seed(0)
    n, lam, tau, rows = 4, 1.5, 0.8, 40_000
    theta, g = _x(n, seed=11) * 0.5, _x(n, seed=12)
    x = theta.expand(rows, n)
    draws = _linear_grad(gradbench.create_estimator("imle", Node("argmax", (n,)), lam=lam, tau=tau), x,
                         g.expand(rows, n))
    expected = (torch.softmax(theta / tau, -1) - torch.softmax((theta - lam * g) / tau, -1)) / lam
    assert _z_test(draws, expected) < 1
    assert _z_test(draws, expected * 1.15) > 1


def test_sum_of_gamma_noise_sums_to_the_truncated_gumbel():
    """k copies sum to sum_{i<=s} E_i / i - log s (E_i ~ Exp(1)): mean H_s - log s, variance sum 1/i^2.
    200,000 draws; mean and variance tests at ALPHA / 2 each."""
    torch.manual_seed(1)
    k, s, draws = 3, 10, 200_000
    total = sum_of_gamma(k, s, (draws, k), torch.zeros((), dtype=torch.float64)).sum(-1)
    mean = sum(1 / i for i in range(1, s + 1)) - math.log(s)
    var = sum(1 / i**2 for i in range(1, s + 1))
    crit = float(norm.ppf(1 - ALPHA / 4))
    assert abs(float(total.mean()) - mean) < crit * math.sqrt(var / draws)
    # the sample variance's standard error: sqrt((m4 - var^2) / draws), m4 estimated from the draws
    m4 = float(((total - total.mean()) ** 4).mean())
    assert abs(float(total.var()) - var) < crit * math.sqrt((m4 - var**2) / draws)


def _smoothed_fd(node: Node, theta: torch.Tensor, g: torch.Tensor, sigma: float, samples: int, h: float):
    """Central differences of F(theta) = <g, E[y(theta + sigma Z)]> with common random numbers, and their
    standard errors (one coordinate of the last input dim at a time)."""
    gen = torch.Generator().manual_seed(123)
    z = torch.randn(samples, *theta.shape, generator=gen, dtype=theta.dtype)
    means, ses = [], []
    for e in torch.eye(theta.shape[-1], dtype=theta.dtype):
        up = (g * ops.hard(node, theta + h * e + sigma * z)).flatten(1).sum(-1)
        down = (g * ops.hard(node, theta - h * e + sigma * z)).flatten(1).sum(-1)
        d = (up - down) / (2 * h)
        means.append(d.mean())
        ses.append(d.std() / math.sqrt(samples))
    return torch.stack(means), torch.stack(ses)


@pytest.mark.parametrize("node", [Node("argmax", (4,)), Node("topk", (5,), k=2), Node("rank", (4, 4))])
def test_perturbed_jacobian_matches_finite_differences_of_the_smoothed_function(node):
    """The Monte Carlo Jacobian (20,000 rows x 16 perturbations) against central differences (h = 0.05,
    400,000 common-random-number draws) of <g, E[y(theta + sigma Z)]>: z-tests at false-failure rate
    ALPHA (the O(h^2) bias of the differences is far below their standard error). A Jacobian off by 15%
    is rejected (sensitivity)."""
    torch.manual_seed(2)
    sigma, rows = 0.7, 20_000
    theta = _x(*node.in_shape, seed=13) * 0.5
    g = _x(*node.shape, seed=14)
    est = gradbench.create_estimator("perturbed", node, sigma=sigma)
    draws = _linear_grad(est, theta.expand(rows, *node.in_shape), g.expand(rows, *node.shape))
    fd, fd_se = _smoothed_fd(node, theta, g, sigma, 400_000, 0.05)
    assert _z_test(draws, fd, fd_se) < 1
    assert _z_test(draws, fd * 1.15, fd_se) > 1


# ---------------------------------------------------------------- tasks


def test_topk_task_has_a_known_answer_and_trains(tmp_path):
    rec = gradbench.run("topk", "perturbed", steps=300, eval_every=300, grad_stats=False, runs=str(tmp_path),
                        device="cpu", progress=False)
    assert rec["status"] == "ok", rec["error"]
    metrics = {k: v["value"] for k, v in rec["metrics"].items()}
    assert metrics["precision"] > 0.5  # chance: k / features = 4 / 32
    task_cls = gradbench.registry.get_task_class("topk")
    task = task_cls(task_cls.make_config())
    x, label = task.sample(5, torch.Generator().manual_seed(0))
    assert x.shape == (5, 32) and label.shape == (5,)
    perfect = torch.zeros(32).index_fill(0, task.informative, 1.0)
    assert float((perfect * perfect).sum()) == task.config.k


@pytest.mark.parametrize("values,kind,shape,in_shape", [
    ({"node": "sort"}, "sort", (32, 8), (32, 8)),
    ({"node": "rank", "group": 4}, "rank", (64, 4, 4), (64, 4)),
    ({"node": "round", "levels": 3}, "round", (256,), (256,)),
])
def test_classify_nodes(values, kind, shape, in_shape):
    task_cls = gradbench.registry.get_task_class("classify")
    task = task_cls(task_cls.make_config(values))
    node = task.node
    assert (node.kind, node.shape, node.in_shape) == (kind, shape, in_shape)
    logits, cost_fn = task.train_batch()
    assert logits.shape == (64, *in_shape)
    y = ops.hard(node, logits.detach())
    assert cost_fn(y).shape == (64,) and cost_fn(torch.stack([y, y])).shape == (2, 64)
    with pytest.raises(gradbench.errors.UsageError, match="group"):
        task_cls.make_config({"node": "sort", "group": 7})


def _kmeans_task(**values):
    task_cls = gradbench.registry.get_task_class("autoencode")
    return task_cls(task_cls.make_config({"node": "kmeans", **values}))


def test_kmeans_centroids_follow_vq_vaes_moving_averages_in_place():
    torch.manual_seed(0)
    task = _kmeans_task(decay=0.9)
    c = task.config.classes
    size, total, before = task.cluster_size.clone(), task.cluster_sum.clone(), task.centroids.clone()
    ids = {name: id(b) for name, b in task.named_buffers()}
    state = task.data_generator.get_state()
    logits, cost_fn = task.train_batch()
    assert {name: id(b) for name, b in task.named_buffers()} == ids  # updated in place, never rebound
    # the node's input: the encoder's vectors, then the centroids as they were before the update
    m = task.config.latents
    assert logits.shape == (64, m + c, task.config.dim) and torch.equal(logits[:, m:], before.expand(64, c, -1))
    z = logits[:, :m].detach().reshape(-1, task.config.dim).numpy().astype(np.float64)
    index, _ = vq(z, before.numpy().astype(np.float64))
    counts = np.bincount(index, minlength=c)
    sums = np.stack([z[index == j].sum(0) for j in range(c)])
    n = 0.9 * size.numpy() + 0.1 * counts
    s = 0.9 * total.numpy() + 0.1 * sums
    smoothed = (n + 1e-5) / (n.sum() + c * 1e-5) * n.sum()
    assert np.allclose(task.centroids.numpy(), s / smoothed[:, None], atol=1e-5)
    # the cost: reconstruction plus the commitment term, per image, for any leading sample dims
    q = ops.hard(task.node, logits.detach())
    assert cost_fn(torch.stack([q, q])).shape == (2, 64)
    task.data_generator.set_state(state)
    assert torch.equal(task.train_batch()[0][:, :m], logits[:, :m])  # same data: the update is not random
    after = task.centroids.clone()
    task.fixed_batch()
    task.encoder_parameters()
    assert torch.equal(task.centroids, after)  # measuring draws a batch but never moves the centroids


def test_kmeans_autoencoder_trains_in_a_seed_batch(tmp_path):
    from gradbench.runner import execute_seeds, resolve

    spec = resolve("autoencode:node=kmeans", "dab", seed=3, steps=20, eval_every=20, grad_stats=False)
    (seq,) = execute_seeds([spec], device="cpu", runs_dir=tmp_path / "seq")
    (bat,) = execute_seeds([spec], device="cpu", runs_dir=tmp_path / "bat", batch=True)
    assert seq["status"] == bat["status"] == "ok", bat["error"]
    assert bat["seed_batch"] == [3]
    for key in ("test_recon", "valid_recon"):
        assert bat["metrics"][key]["value"] == pytest.approx(seq["metrics"][key]["value"], rel=1e-4)


def test_kmeans_autoencoder_with_dab_learns_codes_a_probe_can_read(tmp_path):
    """The issue's check, shortened: 1,000 quick-preset steps; chance is 0.1, full runs reach 0.77-0.81."""
    rec = gradbench.run("autoencode:node=kmeans", "dab", steps=1000, eval_every=1000, grad_stats=False,
                        runs=str(tmp_path), device="cpu", progress=False)
    assert rec["status"] == "ok", rec["error"]
    assert rec["metrics"]["probe_accuracy"]["value"] > 0.4
