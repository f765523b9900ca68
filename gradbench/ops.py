"""Shared math for estimators and tasks: hard functions, noise, sampling, log-probabilities, relaxations.

One place for these so no estimator re-derives them. Conventions:

* Bernoulli: ``z = x + logit(u)``, ``b = 1[z > 0]`` (so ``P(b=1) = sigmoid(x)``).
* Categorical: ``z = log_softmax(x) + Gumbel(u)``, ``b = one_hot(argmax z)``.
* Uniforms are clamped to ``[eps, 1 - eps]`` so logit/log never produce inf.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gradbench.node import Node

EPS = 1e-6


def uniform(shape: torch.Size | tuple[int, ...], like: torch.Tensor,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """U(0,1) clamped away from 0 and 1, on ``like``'s device and dtype."""
    u = torch.rand(shape, device=like.device, dtype=like.dtype, generator=generator)
    return u.clamp(EPS, 1.0 - EPS)


def hard(node: Node, logits: torch.Tensor) -> torch.Tensor:
    """Exact value of a deterministic node: logits (*prefix, *in_shape) -> (*prefix, *shape).

    No gradient is meant to flow through it (sort's values would carry autograd's; callers detach).
    ``sort``, ``rank`` and ``topk`` act on the last dim; ties (probability zero for continuous inputs)
    go to the lower index first, as a stable sort orders them."""
    if node.kind == "sign":
        m = node.params["margin"]
        return (logits > m).to(logits.dtype) - (logits < -m).to(logits.dtype)
    if node.kind == "threshold":
        return (logits > 0).to(logits.dtype)
    if node.kind == "argmax":
        return F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
    if node.kind == "sort":
        return logits.sort(dim=-1, stable=True).values
    if node.kind == "rank":
        return rank_matrix(logits)
    if node.kind == "topk":
        return topk_mask(logits, node.params["k"])
    if node.kind == "round":
        return quantize(logits, node.params["levels"], node.params["low"], node.params["high"])
    if node.kind == "kmeans":
        vectors, centroids = kmeans_parts(node, logits)
        index = nearest_centroid(vectors, centroids)
        if node.params["output"] == "assignments":
            return F.one_hot(index, centroids.shape[-2]).to(logits.dtype)
        return centroids.gather(-2, index.unsqueeze(-1).expand(*index.shape, centroids.shape[-1]))
    raise ValueError(f"{node.kind} is stochastic: use perturb/from_perturbed")


def rank_matrix(x: torch.Tensor) -> torch.Tensor:
    """(..., n) -> (..., n, n): P[i, j] = 1 iff x_j is the i-th smallest (0-based), so P @ x = sort(x),
    P.argmax(-1) = argsort(x) and P.argmax(-2) = the rank of each entry."""
    return F.one_hot(x.argsort(dim=-1, stable=True), x.shape[-1]).to(x.dtype)


def topk_mask(x: torch.Tensor, k: int) -> torch.Tensor:
    """(..., n) -> (..., n): 1 at the k largest entries of the last dim, 0 elsewhere."""
    order = x.argsort(dim=-1, descending=True, stable=True)
    return torch.zeros_like(x).scatter(-1, order[..., :k], 1.0)


def quantize(x: torch.Tensor, levels: int, low: float, high: float) -> torch.Tensor:
    """Uniform quantization to ``levels`` evenly spaced values from ``low`` to ``high`` (inclusive): clamp,
    then round to the nearest level (half to even, as torch.round)."""
    step = (high - low) / (levels - 1)
    return low + step * torch.round((x.clamp(low, high) - low) / step)


def kmeans_parts(node: Node, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A kmeans node's input (..., m + c, d) split into its m vectors (..., m, d) and c centroids (..., c, d)."""
    m = node.shape[0]
    return x[..., :m, :], x[..., m:, :]


def nearest_centroid(vectors: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid (squared Euclidean) of each vector: (..., m, d), (..., c, d) -> (..., m);
    ties to the lower index. From the differences v - c, element by element (an (..., m, c, d) tensor):
    the expansion ||v||^2 - 2 v.c + ||c||^2 cancels in float32 far from the origin (it misassigned 282 of
    2,000 points around 1000, tests/test_structured_nodes.py)."""
    d2 = (vectors.unsqueeze(-2) - centroids.unsqueeze(-3)).pow(2).sum(-1)
    return d2.argmin(-1)


def perturb(node: Node, logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Noisy logits ``z`` whose hard function is the sample (reparameterisable in ``logits``)."""
    if node.kind == "bernoulli":
        return logits + torch.logit(u)
    if node.kind == "categorical":
        return F.log_softmax(logits, -1) - torch.log(-torch.log(u))
    raise ValueError(f"{node.kind} is not a stochastic node")


def from_perturbed(node: Node, z: torch.Tensor) -> torch.Tensor:
    """The discrete sample H(z): {0,1} for Bernoulli, one-hot for categorical."""
    if node.kind == "bernoulli":
        return (z > 0).to(z.dtype)
    return F.one_hot(z.argmax(-1), z.shape[-1]).to(z.dtype)


def forward(node: Node, logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The node's forward value: hard function, or one sample for stochastic kinds."""
    if not node.stochastic:
        return hard(node, logits)
    u = uniform(logits.shape, logits, generator)
    return from_perturbed(node, perturb(node, logits, u))


def probs(node: Node, logits: torch.Tensor) -> torch.Tensor:
    """Mean of the node's sample: sigmoid or softmax of the logits."""
    return torch.sigmoid(logits) if node.kind in ("bernoulli", "threshold") else torch.softmax(logits, -1)


def log_prob(node: Node, logits: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log p(b | logits) summed over the event dims; ``b`` may carry leading sample dims."""
    event_dims = len(node.shape)
    if node.kind == "bernoulli":
        lp = b * F.logsigmoid(logits) + (1 - b) * F.logsigmoid(-logits)
    elif node.kind == "categorical":
        lp = b * F.log_softmax(logits, -1)
    else:
        raise ValueError(f"{node.kind} has no log-probability")
    return lp.flatten(start_dim=lp.dim() - event_dims).sum(-1)


def relaxed(node: Node, z: torch.Tensor, tau: torch.Tensor | float) -> torch.Tensor:
    """Continuous relaxation of H(z): sigmoid(z/tau) (binary Concrete) or softmax(z/tau) (Gumbel-Softmax)."""
    if node.kind == "bernoulli":
        return torch.sigmoid(z / tau)
    return torch.softmax(z / tau, -1)


def conditional_perturb(node: Node, logits: torch.Tensor, b: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """A draw of z ~ p(z | H(z) = b), reparameterised in ``logits`` (REBAR/RELAX's z-tilde)."""
    if node.kind == "bernoulli":
        theta = torch.sigmoid(logits)
        # b = 1 iff u > 1 - theta: so u | b=1 ~ U(1-theta, 1) and u | b=0 ~ U(0, 1-theta).
        u = b * (1 - theta + v * theta) + (1 - b) * (v * (1 - theta))
        return logits + torch.logit(u.clamp(EPS, 1 - EPS))
    if node.kind == "categorical":
        # z_b = -log(-log v_b); z_other = -log(-log v / theta - log v_b), in log space: a class whose
        # probability underflows must not give inf (and 0 * inf = NaN) or an infinite gradient.
        log_theta = F.log_softmax(logits, -1)
        log_neg_log_v = torch.log(-torch.log(v))
        log_neg_log_vb = (log_neg_log_v * b).sum(-1, keepdim=True)  # at the chosen class (b is one-hot)
        z_other = -torch.logaddexp(log_neg_log_v - log_theta, log_neg_log_vb)
        return torch.where(b > 0, -log_neg_log_vb, z_other)
    raise ValueError(f"{node.kind} is not a stochastic node")


def flat_events(y: torch.Tensor, node: Node) -> torch.Tensor:
    """(*prefix, *shape) -> (*prefix, numel): flatten one example's event dims."""
    return y.flatten(start_dim=y.dim() - len(node.shape))


def flat_inputs(x: torch.Tensor, node: Node) -> torch.Tensor:
    """(*prefix, *in_shape) -> (*prefix, in_numel): flatten one example's input dims."""
    return x.flatten(start_dim=x.dim() - len(node.in_shape))


class TooManyEvents(ValueError):
    """A node with more configurations than an enumeration may sum over."""


def all_events(node: Node, device: torch.device | str = "cpu", limit: int = 4096) -> torch.Tensor:
    """Every value a stochastic node can take, (M, *shape): for exact expectations by enumeration."""
    n = 1
    for d in node.shape[:-1] if node.kind == "categorical" else node.shape:
        n *= d
    per = node.shape[-1] if node.kind == "categorical" else 2
    if per**n > limit:
        raise TooManyEvents(f"{per}^{n} configurations exceed the enumeration limit {limit}")
    digits = torch.cartesian_prod(*[torch.arange(per, device=device)] * n).view(-1, n) if n > 1 else \
        torch.arange(per, device=device).view(-1, 1)
    if node.kind == "bernoulli":
        return digits.float().view(-1, *node.shape)
    return F.one_hot(digits, per).float().view(-1, *node.shape)


def exact_expectation(node: Node, logits: torch.Tensor, cost_fn, limit: int = 4096) -> torch.Tensor:
    """E[mean over the batch of cost_fn(b)] with b ~ p(.|logits), summed over every configuration.

    Differentiable in everything: the probabilities and any direct dependence of the cost.
    """
    events = all_events(node, logits.device, limit).to(logits.dtype)
    b = events.unsqueeze(1).expand(events.shape[0], *logits.shape)
    weights = log_prob(node, logits, b).exp()
    return (weights * cost_fn(b)).sum(0).mean()


def repeated_cost(cost_fn, repeats: int, batch: int, event_dims: int):
    """The cost of a batch repeated ``repeats`` times along the batch dim (rows r·batch + i are copies of
    example i), through ``cost_fn``'s support for leading sample dims, so per-example state (targets)
    lines up; used by multi-sample estimators and batched gradient draws. The optional per-sample
    log-weight hook (``cost_fn.log_weight``, ``Task.with_log_weight``) is repeated the same way, so an
    estimator that needs it (VIMCO) runs under ``samples=k`` too."""

    def rows(y: torch.Tensor) -> torch.Tensor:
        return y.unflatten(y.dim() - event_dims - 1, (repeats, batch))

    def cost(y: torch.Tensor) -> torch.Tensor:
        return cost_fn(rows(y)).flatten(-2)

    log_weight = getattr(cost_fn, "log_weight", None)
    if log_weight is not None:
        def repeated_log_weight(y: torch.Tensor) -> torch.Tensor:  # (*prefix, repeats·batch, k)
            return log_weight(rows(y)).flatten(-3, -2)

        cost.log_weight = repeated_log_weight  # type: ignore[attr-defined]
    return cost
