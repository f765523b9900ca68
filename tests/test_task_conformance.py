"""Tasks are checked like estimators: one conformance suite over the whole task registry.

As tests/test_conformance.py does for estimators, every registered task (gradbench.list_tasks()) is
checked with no new test code: its quick preset, each value of its node setting (``node_key``, e.g.
``classify:node=rank``) and a few extra configurations (``vae:iw_k=2``, whose cost carries the per-sample
log-weight hook; ``vae:protocol=disarm`` and ``protocol=reinmax``, the published protocols' models). The
checks follow the task contract (docs/concepts.md, DESIGN.md):

* declarations: name, version, a frozen Config with defaults (``lr``, ``batch_size``), presets including
  ``quick`` and ``paper`` that resolve to a config and a node, metrics with a direction, ``main_metric``
  among them, ``node_key`` naming a Literal setting (or None);
* determinism: building under one seed twice gives the same parameters and buffers and the same first
  training batch (logits, and costs at the same node values);
* the cost function: logits of shape (batch, *node.in_shape); ``cost_fn`` accepts the node's value, a
  relaxed (continuous) value and leading sample dims, returns (*prefix, batch) with each prefix entry
  the cost of that entry alone, is finite and differentiable in its input; a log-weight hook keeps its
  contract (the cost is minus the k-sample bound);
* evaluation: ``evaluate`` returns every declared metric, and nothing else, as a finite float, the same
  on a second call; a task with a validation split declares and returns ``valid_*`` metrics, among them
  its main metric's (what tuning selects on);
* a two-step run through the harness finishes ok with every metric.

Everything is seeded; no statistical test, so no false failures. Evaluation is the slow part: node
variants run it with CHEAP overrides (fewer importance samples), the quick preset itself as it is.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any

import pytest
import torch

import gradbench
from gradbench import Node, ops
from gradbench.execution import seed_everything
from gradbench.records import VALID_PREFIX
from gradbench.registry import get_task_class
from gradbench.task import Preset, Task, valid_name

EXTRA_CONFIGS: dict[str, list[dict[str, Any]]] = {  # the log-weight hook; the published protocols' models
    "vae": [{"iw_k": 2}, {"protocol": "disarm", "arch": "nonlinear"}, {"protocol": "disarm", "iw_k": 2},
            {"protocol": "reinmax", "node": "categorical", "latents": 4, "classes": 8}]}
CHEAP: dict[str, dict[str, Any]] = {"vae": {"iw_samples": 4}}  # for node variants: a cheaper evaluation
BATCH_STEPS = 2  # training steps of the harness check


def node_values(cls: type[Task]) -> list[Any]:
    """The values of the task's node setting (``node_key``, a Literal), or none."""
    key = cls.node_key
    if not key or key not in {f.name for f in dataclasses.fields(cls.Config)}:
        return []
    return list(typing.get_args(typing.get_type_hints(cls.Config)[key]))


def entries() -> list[tuple[str, dict[str, Any]]]:
    """(task, config values): the quick preset as it is, each other node value, and the extra configs."""
    out = []
    for name in gradbench.list_tasks():
        cls = get_task_class(name)
        quick = cls.make_config(None, "quick")
        out.append((name, {}))
        for value in node_values(cls):
            if value != getattr(quick, cls.node_key):
                out.append((name, {cls.node_key: value, **CHEAP.get(name, {})}))
        out.extend((name, {**values, **CHEAP.get(name, {})}) for values in EXTRA_CONFIGS.get(name, []))
    return out


ENTRIES = entries()
IDS = [name + ("[" + ",".join(f"{k}={v}" for k, v in values.items()) + "]" if values else "")
       for name, values in ENTRIES]


def build(name: str, values: dict[str, Any], seed: int = 0) -> Task:
    """The task as the harness builds it for ``seed`` (global generators seeded first)."""
    cls = get_task_class(name)
    seed_everything(seed)
    return cls(cls.make_config(values, "quick"), "cpu")


def node_value(node: Node, logits: torch.Tensor) -> torch.Tensor:
    """The node's forward value at ``logits`` (a sample for stochastic kinds): (batch, *node.shape)."""
    return ops.forward(node, logits.detach(), torch.Generator().manual_seed(0))


# ---------------------------------------------------------------- declarations (no model built)


@pytest.mark.parametrize("name", gradbench.list_tasks())
def test_declarations(name):
    cls = get_task_class(name)
    assert cls.name == name
    assert isinstance(cls.version, str) and cls.version
    assert dataclasses.is_dataclass(cls.Config) and cls.Config.__dataclass_params__.frozen
    defaults = cls.Config()  # every key has a default
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    assert {"lr", "batch_size"} <= fields, f"{name}: the harness reads lr and batch_size"
    assert {"quick", "paper"} <= set(cls.presets), f"{name}: presets {sorted(cls.presets)}"
    for preset_name, preset in cls.presets.items():
        assert isinstance(preset, Preset) and preset.steps > 0 and preset.eval_every > 0, preset_name
        assert preset.description, preset_name
        assert isinstance(cls.node_of(cls.make_config(None, preset_name)), Node), preset_name
    assert cls.metrics and all(isinstance(v, bool) for v in cls.metrics.values()), cls.metrics
    assert cls.main_metric in cls.metrics
    assert cls.node_key is None or node_values(cls), (
        f"{name}: node_key={cls.node_key!r} names no Literal setting of its Config")
    for key, value in cls.added_keys.items():
        assert key in fields and getattr(defaults, key) == value, f"{name}: added key {key}"


# ---------------------------------------------------------------- one built task per entry


@pytest.mark.parametrize("name,values", ENTRIES, ids=IDS)
def test_building_for_a_seed_is_deterministic(name, values):
    a, b = build(name, values), build(name, values)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), f"{key} differs between two builds with seed 0"
    (la, ca), (lb, cb) = a.train_batch(), b.train_batch()
    assert torch.equal(la, lb), "the first batch's logits differ between two builds with seed 0"
    y = node_value(a.node, la)
    assert torch.equal(ca(y), cb(y)), "the first batch's costs differ between two builds with seed 0"


@pytest.mark.parametrize("name,values", ENTRIES, ids=IDS)
def test_cost_fn_takes_relaxed_values_and_sample_dims(name, values):
    task = build(name, values)
    node = task.node
    logits, cost_fn = task.train_batch()
    batch = logits.shape[0]
    assert logits.shape == (batch, *node.in_shape), (tuple(logits.shape), node)
    assert batch == task.config.batch_size
    y = node_value(node, logits)
    assert y.shape == (batch, *node.shape)
    cost = cost_fn(y)
    assert cost.shape == (batch,) and torch.isfinite(cost).all()
    g = torch.Generator().manual_seed(1)
    relaxed = (y + 0.1 * torch.randn(y.shape, generator=g, dtype=y.dtype)).requires_grad_(True)
    stacked = torch.stack([torch.stack([y, relaxed]), torch.stack([relaxed, y])])  # (2, 2, batch, *shape)
    costs = cost_fn(stacked)
    assert costs.shape == (2, 2, batch), tuple(costs.shape)
    assert torch.isfinite(costs).all()
    torch.testing.assert_close(costs[0, 0], cost)  # each prefix entry is the cost of that entry alone
    torch.testing.assert_close(costs[1, 0], cost_fn(relaxed))
    (grad,) = torch.autograd.grad(costs[0, 1].sum(), relaxed)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0, "the cost is not differentiable in its input"
    log_weight = getattr(cost_fn, "log_weight", None)
    if log_weight is not None:  # Task.with_log_weight: the cost is minus the k-sample bound of these weights
        assert task.provides_log_weights(task.config)
        lw = log_weight(stacked)
        k = node.shape[0]
        assert lw.shape == (2, 2, batch, k)
        torch.testing.assert_close(math.log(k) - torch.logsumexp(lw, -1), costs)
    else:
        assert not task.provides_log_weights(task.config), "declares log-weights its cost function lacks"


def has_validation_split(task: Task) -> bool:
    """A fixed validation set on the task or its data (``valid_x``), or a Config key for one (``valid_*``)."""
    data = getattr(task, "data", None)
    return (getattr(task, "valid_x", None) is not None or getattr(data, "valid_x", None) is not None
            or any(f.name.startswith(VALID_PREFIX) for f in dataclasses.fields(task.config)))


@pytest.mark.parametrize("name,values", ENTRIES, ids=IDS)
def test_evaluate_returns_every_metric_as_a_finite_float(name, values):
    task = build(name, values)
    first = task.evaluate()
    assert set(first) == set(task.metrics), f"returned {sorted(first)}, declared {sorted(task.metrics)}"
    for metric, value in first.items():
        assert type(value) is float and math.isfinite(value), (metric, value)
    assert task.evaluate() == first, "a second evaluation differs"
    valid = {m for m in task.metrics if m.startswith(VALID_PREFIX)}
    if has_validation_split(task):
        assert valid and valid_name(task.main_metric) in valid, "a validation split without valid_* metrics"
        assert task.selection_metric() == valid_name(task.main_metric)
    else:
        assert not valid, "valid_* metrics without a validation split"


@pytest.mark.parametrize("name", gradbench.list_tasks())
def test_a_short_run_finishes_with_every_metric(name, tmp_path):
    """Two steps through the harness with ``dab`` (it supports every node kind), on the quick preset."""
    record = gradbench.run(name, "dab", steps=BATCH_STEPS, eval_every=BATCH_STEPS, device="cpu", grad_stats=False,
                           runs=str(tmp_path))
    assert record["status"] == "ok", record["error"]
    assert set(record["metrics"]) == set(get_task_class(name).metrics)
    assert record["cost"]["steps"] == BATCH_STEPS
