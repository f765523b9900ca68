"""The non-differentiable operation an estimator bridges: what it is and its exact forward value.

``Node`` is plain data (no torch import) so that the CLI and registry stay fast; the hard functions
live in :mod:`gradbench.ops`. docs/nodes.md describes every kind, its shape rule and its params.

``shape`` is always the event shape of one example's *output*. Most kinds map an input of that same
shape; ``rank`` (n -> n x n) and ``kmeans`` (m vectors and c centroids -> m vectors or m one-hot
assignments) change shape, and ``in_shape`` gives the input's event shape: logits in front of a node
have shape ``(batch, *node.in_shape)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

STRUCTURED_KINDS = frozenset({"sort", "rank", "topk", "kmeans", "round"})  # DAB's own domain (docs/nodes.md)
DETERMINISTIC_KINDS = frozenset({"sign", "threshold", "argmax"}) | STRUCTURED_KINDS
STOCHASTIC_KINDS = frozenset({"bernoulli", "categorical"})
KINDS = DETERMINISTIC_KINDS | STOCHASTIC_KINDS
ELEMENTWISE_KINDS = frozenset({"sign", "threshold", "bernoulli", "round"})  # output i depends on input i only
_PARAMS: dict[str, dict[str, Any]] = {
    "sign": {"margin": 0.5},
    "topk": {"k": 1},
    "round": {"levels": 4, "low": -1.0, "high": 1.0},
    "kmeans": {"centroids": 16, "output": "vectors", "dim": None},
}
KMEANS_OUTPUTS = ("vectors", "assignments")


def _whole(kind: str, key: str, value: Any, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{kind} node: {key} must be a whole number >= {least}, got {value!r}")
    return value


def _check_topk(shape: tuple[int, ...], p: dict[str, Any]) -> None:
    p["k"] = _whole("topk", "k", p["k"], 1)
    if p["k"] >= shape[-1]:
        raise ValueError(f"topk node: k must be < the last dim {shape[-1]}, got k={p['k']}")


def _check_round(shape: tuple[int, ...], p: dict[str, Any]) -> None:
    p["levels"] = _whole("round", "levels", p["levels"], 2)
    p["low"], p["high"] = float(p["low"]), float(p["high"])
    if not p["high"] > p["low"]:
        raise ValueError(f"round node: high must be > low, got low={p['low']}, high={p['high']}")


def _check_kmeans(shape: tuple[int, ...], p: dict[str, Any]) -> None:
    p["centroids"] = _whole("kmeans", "centroids", p["centroids"], 2)
    if p["output"] not in KMEANS_OUTPUTS:
        raise ValueError(f"kmeans node: output must be one of {', '.join(KMEANS_OUTPUTS)}, got {p['output']!r}")
    if len(shape) != 2:
        raise ValueError(f"kmeans node: shape is (vectors, dim) or (vectors, centroids), got {shape}")
    if p["output"] == "vectors":
        if p["dim"] is not None and p["dim"] != shape[-1]:
            raise ValueError(f"kmeans node: dim={p['dim']} differs from the vectors' last dim {shape[-1]}")
        p["dim"] = shape[-1]
        return
    if p["dim"] is None:
        raise ValueError("kmeans node with output=assignments needs dim (the vectors' dimension)")
    p["dim"] = _whole("kmeans", "dim", p["dim"], 1)
    if shape[-1] != p["centroids"]:
        raise ValueError(f"kmeans node: assignments have shape (vectors, centroids={p['centroids']}), got {shape}")


def _check_params(kind: str, shape: tuple[int, ...], p: dict[str, Any]) -> None:
    """Validate (and normalise, in place) the params and shape rules of a kind."""
    if kind == "sign" and not p["margin"] >= 0:
        raise ValueError(f"sign margin must be >= 0, got {p['margin']}")
    if kind in ("argmax", "categorical") and shape[-1] < 2:
        raise ValueError(f"{kind} node needs at least 2 classes in its last dim, got {shape}")
    if kind == "rank" and (len(shape) < 2 or shape[-1] != shape[-2]):
        raise ValueError(f"rank node: shape is the output (..., n, n) (a permutation matrix per vector of n), "
                         f"got {shape}")
    checks = {"topk": _check_topk, "round": _check_round, "kmeans": _check_kmeans}
    if kind in checks:
        checks[kind](shape, p)


@dataclass(frozen=True, init=False)
class Node:
    """``Node(kind, shape, **params)``: the op applied to logits of shape ``(batch, *in_shape)``.

    ``shape`` is one example's output event shape; for ``argmax``/``categorical`` its last dim is the
    number of classes. ``in_shape`` is the input's (the same as ``shape`` except for ``rank`` and
    ``kmeans``).
    """

    kind: str
    shape: tuple[int, ...]
    params: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __init__(self, kind: str, shape: tuple[int, ...] | int, **params: Any) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown node kind {kind!r}; known kinds: {', '.join(sorted(KINDS))}")
        shape = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
        if not shape or any(s < 1 for s in shape):
            raise ValueError(f"node shape must be a non-empty tuple of positive ints, got {shape}")
        defaults = _PARAMS.get(kind, {})
        unknown = set(params) - set(defaults)
        if unknown:
            raise ValueError(f"{kind} node takes params {sorted(defaults) or 'none'}, got {sorted(unknown)}")
        merged = {**defaults, **params}
        _check_params(kind, shape, merged)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "params", merged)

    @property
    def stochastic(self) -> bool:
        return self.kind in STOCHASTIC_KINDS

    @property
    def elementwise(self) -> bool:
        """Each output element is a function of the input element at the same place only."""
        return self.kind in ELEMENTWISE_KINDS

    @property
    def in_shape(self) -> tuple[int, ...]:
        """One example's input event shape: ``rank`` (..., n, n) <- (..., n); ``kmeans`` (m, d or c) <-
        (m + c, d), the m vectors followed by the c centroids (docs/nodes.md); else ``shape``."""
        if self.kind == "rank":
            return self.shape[:-1]
        if self.kind == "kmeans":
            return (self.shape[0] + self.params["centroids"], self.params["dim"])
        return self.shape

    @property
    def numel(self) -> int:
        """Elements of one example's output."""
        return math.prod(self.shape)

    @property
    def in_numel(self) -> int:
        """Elements of one example's input."""
        return math.prod(self.in_shape)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Node) and (self.kind, self.shape, self.params) == (
            other.kind,
            other.shape,
            other.params,
        )

    def __hash__(self) -> int:
        return hash((self.kind, self.shape, tuple(sorted(self.params.items()))))

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.params.items())
        return f"Node({self.kind!r}, {self.shape}{extra})"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "shape": list(self.shape), **self.params}
