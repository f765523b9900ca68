"""Did a rerun reproduce its record? By how much the metrics differ, and whether the machine differs.

A run is deterministic on one machine: the same CPU model (or GPU), torch build and thread count give
the same floats, so there a rerun must match its record to ``TOLERANCE``. On another CPU the kernels
reorder sums differently (another instruction set, another blocking), and training amplifies a 1e-7
reordering over thousands of steps into differences in the third digit (measured: all-or-none 0.9422
against 0.934 for the same sort/dab run on an AMD EPYC and an Intel CPU): such a difference says nothing
about the code, so it is reported, not failed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gradbench.results import Record

TOLERANCE = 1e-6  # largest relative difference of a metric that counts as reproduced on the same machine
MACHINE_KEYS = ("cpu_model", "device_name", "torch", "threads")  # provenance that changes the floats
CODE_KEYS = ("gradbench_version", "git_sha", "git_dirty")


@dataclass
class RerunCheck:
    """The comparison of a rerun with its original record."""

    max_rel_diff: float  # over the metrics both records have (0: identical; inf: a metric went missing)
    worst: str | None  # the metric with that difference
    machine_diffs: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # key -> (original, rerun)
    code_diffs: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    @property
    def same_machine(self) -> bool:
        return not self.machine_diffs

    @property
    def reproduced(self) -> bool:
        return self.max_rel_diff <= TOLERANCE

    @property
    def failed(self) -> bool:
        """Not reproduced where it must be: on the same machine."""
        return self.same_machine and not self.reproduced

    def message(self) -> str:
        if self.max_rel_diff == 0:
            head = "metrics identical to the original record"
        else:
            diff = "a metric is missing" if math.isinf(self.max_rel_diff) else f"{self.max_rel_diff:.2e}"
            head = f"metrics differ from the original record by up to {diff} relative ({self.worst})"
        if self.machine_diffs:
            what = "; ".join(f"{k} {a} -> {b}" for k, a, b in _rows(self.machine_diffs))
            tail = f"; the machine differs ({what}): differences from float reordering are expected there"
        else:
            tail = f"; same machine (tolerance {TOLERANCE:g})"
            if not self.reproduced:
                tail += ": NOT reproduced"
        if self.code_diffs:
            tail += "; the code differs (" + "; ".join(f"{k} {a} -> {b}" for k, a, b in _rows(self.code_diffs)) + ")"
        return head + tail


def _rows(diffs: dict[str, tuple[Any, Any]]) -> list[tuple[str, str, str]]:
    def show(v: Any) -> str:
        return "unrecorded" if v is None else repr(v)

    return [(k, show(a), show(b)) for k, (a, b) in diffs.items()]


def _rel(a: float, b: float) -> float:
    if a == b or (math.isnan(a) and math.isnan(b)):
        return 0.0
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def check(original: Record | Mapping[str, Any], rerun: Record | Mapping[str, Any]) -> RerunCheck:
    """Compare ``rerun``'s metrics and provenance with ``original``'s (records, or their dicts)."""
    first, second = Record.of(original), Record.of(rerun)
    before = {k: first.metric(k) for k in first.metric_directions()}
    after = {k: second.metric(k) for k in second.metric_directions()}
    worst, largest = None, 0.0
    for name in sorted(set(before) | set(after)):
        a, b = before.get(name), after.get(name)
        diff = _rel(a, b) if a is not None and b is not None else (0.0 if a is None and b is None else math.inf)
        if diff > largest:
            worst, largest = name, diff
    p0, p1 = first.provenance, second.provenance
    machine = {k: (getattr(p0, k), getattr(p1, k)) for k in MACHINE_KEYS if getattr(p0, k) != getattr(p1, k)}
    if first.accel_path != second.accel_path:  # eager, compiled or graph-captured steps round differently
        machine["accel"] = (first.accel_path, second.accel_path)
    code = {k: (getattr(p0, k), getattr(p1, k)) for k in CODE_KEYS if getattr(p0, k) != getattr(p1, k)}
    return RerunCheck(largest, worst, machine, code)
