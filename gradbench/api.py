"""The public Python API: ``create_estimator`` and ``run``; the CLI is a thin layer over these."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gradbench.estimator import Estimator
from gradbench.multisample import estimator_class
from gradbench.node import Node
from gradbench.runner import run_with
from gradbench.spec import RunOptions, resolve


def create_estimator(name: str, node: Node, **config: Any) -> Estimator:
    """``create_estimator("gumbel", Node("bernoulli", (8,)), tau=0.5)``; ``samples=k`` averages k samples
    (gradbench.multisample); unknown names/keys raise UsageError."""
    cls, values = estimator_class(name, config)
    return cls(node, cls.make_config(values))


def run(task: str = "sort", estimator: str = "dab", preset: str = "quick", seed: int = 0, device: str | None = None,
        *, task_config: dict[str, Any] | None = None, estimator_config: dict[str, Any] | None = None,
        options: RunOptions | None = None, **overrides: Any) -> dict[str, Any]:
    """Train one (task, estimator) pair and return its run record (a dict; see docs/records.md).

    ``task``/``estimator`` are names or ``NAME:key=value,...`` specs. ``overrides`` whose names are
    ``RunOptions`` fields (``steps``, ``seconds``, ``eval_every``, ``lr_schedule``, ``grad_stats``,
    ``grad_draws``, ``grad_checkpoints``, ``accel``, ``runs``, ``force``, ``progress``, ``log``) set run options;
    the others are task config keys (e.g. ``length=5``). ``task_config={"steps": ...}`` sets a task key
    that shares its name with a run option. ``device`` (default: ``options.device``, else "auto") picks
    the device. A run that fails returns a record with status "failed";
    bad names or config raise UsageError.
    """
    opts, task_values = RunOptions.split(overrides, options)
    if device is not None:  # the argument wins over options.device; neither given: "auto"
        opts = replace(opts, device=device)
    spec = resolve(task, estimator, preset=preset, seed=seed, options=opts,
                   task_config={**task_values, **(task_config or {})}, estimator_config=estimator_config)
    return run_with(opts, spec)
