"""Helpers shared by the test files: registry snapshots, stand-in estimators, a short run, record reading.

Stand-in estimators are plain classes here: nothing registers at import (or collection) time. A test
that needs one by name registers it inside the ``isolated_registry`` fixture (tests/conftest.py), which
undoes every registration when the test ends, so the conformance matrix of tests/test_conformance.py
never depends on which other test files pytest collected.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch

import gradbench
from gradbench import ops, registry
from gradbench.registry import get_estimator_class

# ---------------------------------------------------------------- the registry


@contextmanager
def registry_snapshot() -> Iterator[None]:
    """Restore gradbench's estimator and task registries, and the memo of loaded plugins, on exit."""
    saved = [(reg, {name: copy.copy(entry) for name, entry in reg._entries.items()}, reg._entry_points_scanned)
             for reg in (registry.ESTIMATORS, registry.TASKS)]
    plugins, origin = dict(registry._loaded_plugins), registry._current_origin
    try:
        yield
    finally:
        for reg, entries, scanned in saved:
            reg._entries, reg._entry_points_scanned = entries, scanned
        registry._loaded_plugins.clear()
        registry._loaded_plugins.update(plugins)
        registry._current_origin = origin


def register(*classes: type) -> None:
    """Register each stand-in under its ``name`` (inside ``isolated_registry``, so it is undone)."""
    for cls in classes:
        gradbench.register_estimator(cls.name)(cls)


# ---------------------------------------------------------------- runs and records


def run_toy(tmp_path, **kw) -> dict[str, Any]:
    """A short CPU run (default: REINFORCE on the toy, 30 steps, evaluated every 10) into ``tmp_path``."""
    kw.setdefault("steps", 30)
    kw.setdefault("eval_every", 10)
    kw.setdefault("device", "cpu")
    return gradbench.run(task=kw.pop("task", "toy"), estimator=kw.pop("estimator", "reinforce"),
                         runs=str(tmp_path), **kw)


# cheap task settings, in order of preference, for tests that need some task an estimator supports
SMALL_TASKS = ("sort", "sort:node=bernoulli", "toy:variant=categorical", "topk", "classify:node=sort",
               "classify:node=rank", "classify:node=round", "autoencode:node=kmeans", "vae:iw_k=2,latents=20")


def task_for(estimator: str) -> str | None:
    """The first of SMALL_TASKS that exists and whose node ``estimator`` supports (None if none does)."""
    from gradbench.errors import UsageError
    from gradbench.spec import resolve

    for task in SMALL_TASKS:
        try:
            resolve(task, estimator, steps=1, grad_stats=False)
        except UsageError:  # unknown task or setting, or unsupported pair
            continue
        return task
    return None


def history(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of a record's ``.history.jsonl``."""
    with open(record["path"].replace(".json", ".history.jsonl")) as f:
        return [json.loads(line) for line in f]


# ---------------------------------------------------------------- stand-in estimators


def straight_through(est: gradbench.Estimator, logits: torch.Tensor, cost_fn) -> gradbench.EstimatorOutput:
    """What the built-in ``ste`` (with ``est``'s node, and its config if it is an STE config) returns."""
    ste = get_estimator_class("ste")
    config = est.config if isinstance(est.config, ste.Config) else None
    return ste(est.node, config)(logits, cost_fn)


class _CountsCalls(gradbench.Estimator):
    """Bernoulli only; counts its calls in a buffer ``calls``."""

    supports = frozenset({"bernoulli"})

    def __init__(self, node, config=None):
        super().__init__(node, config)
        self.register_buffer("calls", torch.zeros(()))


class NaNAfterFive(_CountsCalls):
    """Straight-through whose loss turns NaN at the sixth call: the run must end 'diverged'."""

    name = "test_nan_after_5"

    def forward(self, logits, cost_fn):
        self.calls += 1
        out = straight_through(self, logits, cost_fn)
        out.loss = out.loss + torch.where(self.calls > 5, torch.tensor(float("nan")), torch.tensor(0.0))
        return out


class RebindsState(_CountsCalls):
    """Counts its calls by rebinding a buffer (``self.calls = self.calls + 1``) instead of updating it in
    place: under functional_call/vmap the count would be silently dropped, so batching must refuse it."""

    name = "test_rebinds_state"

    def forward(self, logits, cost_fn):
        self.calls = self.calls + 1
        return straight_through(self, logits, cost_fn)


class CountsInPython(gradbench.Estimator):
    """Straight-through that counts its calls in a Python int: a replayed graph would never count."""

    name = "test_counts_in_python"
    supports = frozenset({"bernoulli"})
    Config = get_estimator_class("ste").Config

    def __init__(self, node, config=None):
        super().__init__(node, config)
        self.calls = 0

    def forward(self, logits, cost_fn):
        self.calls += 1
        return straight_through(self, logits, cost_fn)


class Raises(gradbench.Estimator):
    """Raises in forward: the run must end 'failed' (and be retried)."""

    name = "test_raises"
    supports = frozenset({"bernoulli"})

    def forward(self, logits, cost_fn):
        raise RuntimeError("boom in forward")


class PoisonedSeeds(gradbench.Estimator):
    """Straight-through whose loss is NaN from the start for about half the seeds (a buffer drawn at
    construction, so it depends on the seed): one diverged replica must not end the others."""

    name = "test_poisoned_seeds"
    supports = frozenset({"threshold", "sign", "bernoulli", "categorical", "argmax"})

    def __init__(self, node, config=None):
        super().__init__(node, config)
        self.register_buffer("poisoned", (torch.rand(()) < 0.5).float())

    def forward(self, logits, cost_fn):
        out = straight_through(self, logits, cost_fn)
        out.loss = out.loss / (1 - self.poisoned)  # inf, then NaN, where poisoned
        return out


class GradInForward(gradbench.Estimator):
    """Calls torch.autograd.grad in its forward (as RELAX does) without declaring batchable = False:
    vmap refuses it at the first step, and the seeds must then run one after another."""

    name = "test_grad_in_forward"
    supports = frozenset({"bernoulli"})

    def forward(self, logits, cost_fn):
        x = logits.detach().requires_grad_()
        (g,) = torch.autograd.grad(x.sigmoid().sum(), x)
        return straight_through(self, logits + 0 * g, cost_fn)


@dataclass(frozen=True)
class BatchBaselineConfig:
    baseline: Literal["batch", "none"] = "batch"  # batch: the batch's mean cost (couples the examples)


class BatchMeanBaseline(gradbench.Estimator):
    """REINFORCE whose baseline is the mean cost over the batch, without declaring it: example i's estimate
    moves with the other examples' costs (and learns nothing at batch size 1, where f - baseline = 0). It
    passed every conformance check before the batch-independence check existed."""

    name = "test_batch_mean_baseline"
    supports = frozenset({"bernoulli", "categorical"})
    Config = BatchBaselineConfig

    def forward(self, logits, cost_fn):
        x = logits.detach()
        b = ops.from_perturbed(self.node, ops.perturb(self.node, x, ops.uniform(x.shape, x)))
        f = cost_fn(b)
        fd = f.detach()
        baseline = fd.mean() if self.config.baseline == "batch" else fd.new_zeros(())
        log_p = ops.log_prob(self.node, logits, b)
        surrogate = f + (fd - baseline) * (log_p - log_p.detach())
        return gradbench.EstimatorOutput(b, fd, surrogate.mean(), self.zero(logits), {"cost_evals": 1})


class DeclaredBatchMeanBaseline(BatchMeanBaseline):
    """The same estimator, declaring the coupling for the configuration that has it (per-config tags)."""

    name = "test_declared_batch_mean_baseline"

    @classmethod
    def tags_for(cls, config=None):
        tags = super().tags_for(config)
        return replace(tags, batch_independent=cls.config_or_default(config).baseline != "batch")
