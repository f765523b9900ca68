"""The non-differentiable operation an estimator bridges: what it is and its exact forward value.

``Node`` is plain data (no torch import) so that the CLI and registry stay fast; the hard functions
live in :mod:`gradbench.ops`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DETERMINISTIC_KINDS = frozenset({"sign", "threshold", "argmax"})
STOCHASTIC_KINDS = frozenset({"bernoulli", "categorical"})
KINDS = DETERMINISTIC_KINDS | STOCHASTIC_KINDS
_PARAMS = {"sign": {"margin": 0.5}}


@dataclass(frozen=True, init=False)
class Node:
    """``Node(kind, shape, **params)``: the op applied to logits of shape ``(batch, *shape)``.

    ``shape`` is one example's event shape; for ``argmax``/``categorical`` its last dim is the
    number of classes.
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
        if kind in ("argmax", "categorical") and shape[-1] < 2:
            raise ValueError(f"{kind} node needs at least 2 classes in its last dim, got {shape}")
        defaults = _PARAMS.get(kind, {})
        unknown = set(params) - set(defaults)
        if unknown:
            raise ValueError(f"{kind} node takes params {sorted(defaults) or 'none'}, got {sorted(unknown)}")
        merged = {**defaults, **params}
        if kind == "sign" and not merged["margin"] >= 0:
            raise ValueError(f"sign margin must be >= 0, got {merged['margin']}")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "params", merged)

    @property
    def stochastic(self) -> bool:
        return self.kind in STOCHASTIC_KINDS

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

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
