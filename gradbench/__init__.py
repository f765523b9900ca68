"""gradbench: benchmark gradient estimators through non-differentiable and discrete operations.

The public API (stable) is listed in ``__all__``. Heavy modules (torch) load on first attribute
access, so ``gradbench --help`` and ``gradbench list`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from gradbench.node import Node
from gradbench.registry import list_estimators, list_tasks, load_plugin, register_estimator, register_task

__version__ = "0.1.0"

__all__ = [
    "Node",
    "Estimator",
    "EstimatorOutput",
    "Task",
    "register_estimator",
    "register_task",
    "create_estimator",
    "list_estimators",
    "list_tasks",
    "load_plugin",
    "run",
    "__version__",
]

_LAZY = {
    "Estimator": "gradbench.estimator",
    "EstimatorOutput": "gradbench.estimator",
    "Task": "gradbench.task",
    "create_estimator": "gradbench.api",
    "run": "gradbench.api",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gradbench' has no attribute {name!r}")
