"""The public Python API: ``create_estimator`` and ``run``; the CLI is a thin layer over these."""

from __future__ import annotations

from typing import Any

from gradbench.estimator import Estimator
from gradbench.node import Node
from gradbench.registry import get_estimator_class
from gradbench.runner import execute, resolve

_RUN_KEYS = ("steps", "seconds", "eval_every", "runs", "force", "progress", "estimator_config", "grad_stats",
             "grad_draws", "grad_checkpoints", "accel", "lr_schedule")


def create_estimator(name: str, node: Node, **config: Any) -> Estimator:
    """``create_estimator("gumbel", Node("bernoulli", (8,)), tau=0.5)``; unknown names/keys raise UsageError."""
    cls = get_estimator_class(name)
    return cls(node, cls.make_config(config))


def run(task: str = "sort", estimator: str = "dab", preset: str = "quick", seed: int = 0, device: str = "auto",
        **overrides: Any) -> dict[str, Any]:
    """Train one (task, estimator) pair and return its run record (a dict; see gradbench.records).

    ``task``/``estimator`` are names or ``NAME:key=value,...`` specs. ``overrides`` are the runner's
    ``steps``, ``seconds``, ``eval_every``, ``runs`` (records folder, default "runs"), ``force``,
    ``progress``, ``estimator_config`` (dict), ``grad_stats`` (bool, default True), ``grad_draws``,
    ``grad_checkpoints`` (fractions of the budget), ``accel`` ("auto" | "none" | "graph" | "compile"),
    ``lr_schedule`` ("constant" | "cosine"), and otherwise task config keys (e.g. ``length=5``).
    A run that fails returns a record with status "failed"; bad names or config raise UsageError.
    """
    runner = {k: overrides.pop(k) for k in list(overrides) if k in _RUN_KEYS}
    points = runner.get("grad_checkpoints", (0.0, 0.5, 1.0))
    if isinstance(points, (int, float)):
        points = (points,)
    spec = resolve(task, estimator, preset=preset, seed=seed, steps=runner.get("steps"),
                   seconds=runner.get("seconds"), eval_every=runner.get("eval_every"),
                   task_config=overrides, estimator_config=runner.get("estimator_config"),
                   grad_stats=runner.get("grad_stats", True), grad_draws=runner.get("grad_draws"),
                   grad_checkpoints=tuple(points), lr_schedule=runner.get("lr_schedule", "constant"))
    return execute(spec, device=device, runs_dir=runner.get("runs", "runs"), force=runner.get("force", False),
                   progress=runner.get("progress", False), accel=runner.get("accel", "auto"))
