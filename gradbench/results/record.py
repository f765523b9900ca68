"""``Record``: a typed, read-only view of one run record (the JSON file of docs/records.md), so that no
reader spells a record's keys or re-derives its defaults (a record without ``accel`` ran eagerly; a
metric's value counts only when it is a finite number; the end of training is the last gradient
checkpoint).

The view never changes the stored record: a row's display labels (``relabelled``) live beside it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

from gradbench.budget import budget_text
from gradbench.protocol import VALID_PREFIX
from gradbench.records import history_path, read_history, record_path

EAGER = "none"  # accel.used of a run without CUDA graph or torch.compile (and of records older than accel)
PATH_NAMES = {"none": "eager", "graph": "graph", "compile": "compile"}  # accel.used -> how a report names it


def path_order(path: str) -> tuple[int, str]:
    """Sort key of execution paths: eager, graph, compile, then any other."""
    return (list(PATH_NAMES).index(path) if path in PATH_NAMES else len(PATH_NAMES), path)


def number(value: Any) -> float | None:
    """``value`` as a float when it is a number, else None."""
    return float(value) if isinstance(value, (int, float)) else None


def finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite number, else None."""
    v = number(value)
    return v if v is not None and math.isfinite(v) else None


def table_of(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    return value if isinstance(value, Mapping) else {}


class TableKey(NamedTuple):
    """Which table a record belongs to: task name, preset, task label, and the budget (canonical JSON)."""

    task: str
    preset: str
    label: str
    budget: str

    @property
    def budget_text(self) -> str:
        """The budget as the tables print it (``steps=2000``)."""
        try:
            return budget_text(json.loads(self.budget))
        except json.JSONDecodeError:
            return self.budget

    @property
    def slug(self) -> str:
        """A file-name-safe name of the table (its plots are named after it)."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{self.label}-{self.preset}-{self.budget_text}").strip("_")


def budget_key(budget: Any) -> str:
    """A budget's canonical JSON: equal budgets, equal keys."""
    return json.dumps(budget, sort_keys=True)


@dataclass(frozen=True)
class Checkpoint:
    """One gradient checkpoint of a record (``gradient.checkpoints[i]``)."""

    data: Mapping[str, Any]

    @property
    def name(self) -> Any:
        """``start``, ``middle``, ``end`` or the fraction."""
        return self.data.get("checkpoint")

    @property
    def step(self) -> Any:
        return self.data.get("step")

    @property
    def error(self) -> str | None:
        return self.data.get("error")

    @property
    def reference(self) -> str:
        return str(self.data.get("reference", ""))

    def stat(self, name: str) -> float | None:
        """A statistic measured here (``log10_variance``, ``cosine``, ``bias_p``...), None when absent."""
        return number(self.data.get(name))

    @property
    def bias_precision(self) -> str:
        """The precision the bias test ran in: ``float64`` (a double-precision copy of the estimator and the
        task, from the double-precision bias test on), else ``float32`` (records made before it: the
        training's own float32 arithmetic)."""
        return str(self.data.get("bias_precision") or "float32")

    @property
    def fields(self) -> dict[str, Any]:
        """Everything measured here, name excepted (statistics, ``step``, ``reference``, ``draws``...), as
        stored: what an export writes."""
        return {k: v for k, v in self.data.items() if k != "checkpoint"}


@dataclass(frozen=True)
class Provenance:
    """Where and with what a run was made (``provenance``); None for what a record does not say."""

    gradbench_version: str | None = None
    git_sha: str | None = None
    git_dirty: bool | None = None
    torch: str | None = None
    python: str | None = None
    cuda: str | None = None
    device: str | None = None
    device_name: str | None = None
    cpu_model: str | None = None
    threads: int | None = None
    threads_source: str | None = None
    hostname: str | None = None
    argv: tuple[str, ...] = ()
    plugins: tuple[str, ...] = ()
    start_utc: str | None = None
    end_utc: str | None = None

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Provenance:
        lists = ("argv", "plugins")
        known = {k: data.get(k) for k in cls.__dataclass_fields__ if k not in lists}
        return cls(**known, **{k: tuple(map(str, data.get(k) or ())) for k in lists})

    @property
    def short_sha(self) -> str:
        """``abcdef1``, ``abcdef1-dirty``, or ``unknown`` outside git."""
        text = str(self.git_sha)[:7] if self.git_sha else "unknown"
        return text + ("-dirty" if self.git_dirty else "")

    @property
    def hardware(self) -> str:
        """The device's name (``cpu`` when the record names none)."""
        return str(self.device_name or self.device or "")


@dataclass(frozen=True)
class Accel:
    """How a run's steps executed (``accel``): what ``--accel`` asked for, the path used, and why."""

    requested: str = "auto"
    used: str = EAGER
    reason: str = ""


@dataclass(frozen=True)
class Record:
    """One run record, read through properties. ``shown_label`` / ``shown_task_label`` replace the stored
    labels for display (a row relabelled by today's registry rule, a tuned row) without touching ``data``."""

    data: Mapping[str, Any]
    file: Path | None = None  # where it was read from
    shown_label: str | None = field(default=None, compare=False)
    shown_task_label: str | None = field(default=None, compare=False)

    @classmethod
    def of(cls, record: Record | Mapping[str, Any]) -> Record:
        """A Record from itself or from a record dict (as ``json.load`` gives it)."""
        return record if isinstance(record, Record) else cls(record)

    def relabelled(self, label: str | None = None, task_label: str | None = None) -> Record:
        """This record shown under another estimator label and/or task label."""
        return replace(self, shown_label=label or self.shown_label,
                       shown_task_label=task_label or self.shown_task_label)

    # ------------------------------------------------------------------------------ what ran

    @property
    def run_id(self) -> str:
        return str(self.data.get("run_id"))

    @property
    def status(self) -> str:
        """``ok``, ``failed`` or ``diverged``."""
        return str(self.data.get("status"))

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def error(self) -> str | None:
        return self.data.get("error")

    @property
    def path(self) -> str:
        """Where the record is (the file it was read from, or the ``path`` a runner noted), or ``""``."""
        return str(self.file) if self.file is not None else str(self.data.get("path") or "")

    @property
    def task(self) -> str:
        """The task's registered name ("" when the record has none)."""
        return str(table_of(self.data, "task").get("name") or "")

    @property
    def task_label(self) -> str:
        """The task setting's label (``sort(node=bernoulli)``), or the label it is shown under."""
        task = table_of(self.data, "task")
        return self.shown_task_label or str(task.get("label") or task.get("name"))

    @property
    def stored_task_label(self) -> str:
        """The task setting's label as stored in the record."""
        task = table_of(self.data, "task")
        return str(task.get("label") or task.get("name"))

    @property
    def task_version(self) -> Any:
        return table_of(self.data, "task").get("version")

    @property
    def task_config(self) -> Mapping[str, Any]:
        return table_of(table_of(self.data, "task"), "config")

    @property
    def node(self) -> Mapping[str, Any]:
        """The node's description: ``kind``, ``shape`` and its parameters."""
        return table_of(table_of(self.data, "task"), "node")

    @property
    def node_settings(self) -> dict[str, Any]:
        """The node's shape and parameters."""
        return {"shape": self.node.get("shape"), **table_of(self.node, "params")}

    @property
    def node_kind(self) -> str:
        return str(self.node.get("kind", "?"))

    @property
    def estimator(self) -> str:
        """The estimator's registered name ("" when the record has none)."""
        return str(table_of(self.data, "estimator").get("name") or "")

    @property
    def label(self) -> str:
        """The estimator setting's label (``gumbel(tau=0.5)``), or the label its row is shown under."""
        est = table_of(self.data, "estimator")
        return self.shown_label or str(est.get("label") or est.get("name") or "")

    @property
    def stored_label(self) -> str:
        """The estimator label as stored in the record."""
        est = table_of(self.data, "estimator")
        return str(est.get("label") or est.get("name") or "")

    @property
    def estimator_version(self) -> Any:
        return table_of(self.data, "estimator").get("version")

    @property
    def estimator_config(self) -> Mapping[str, Any] | None:
        config = table_of(self.data, "estimator").get("config")
        return config if isinstance(config, Mapping) else None

    @property
    def unbiased(self) -> bool:
        return bool(table_of(self.data, "estimator").get("unbiased"))

    @property
    def preset(self) -> str:
        return str(self.data.get("preset"))

    @property
    def seed(self) -> Any:
        return self.data.get("seed")

    @property
    def seed_batch(self) -> list[int] | None:
        """The seeds trained together with this one (batched seeds), or None."""
        return self.data.get("seed_batch")

    @property
    def budget(self) -> Any:
        """``{"steps": N}``, ``{"seconds": S}`` or ``{"evals": E}``, plus ``lr_schedule`` when set."""
        return self.data.get("budget")

    @property
    def lr_schedule(self) -> str:
        """The budget's learning-rate schedule: ``constant`` when the budget names none (as stored)."""
        budget = self.budget
        return str(budget.get("lr_schedule") or "constant") if isinstance(budget, Mapping) else "constant"

    @property
    def data_fingerprint(self) -> str | None:
        """A hash of the first training batches' logits (ok runs; None in batched runs and older records)."""
        fingerprint = self.data.get("data_fingerprint")
        return str(fingerprint) if fingerprint else None

    @property
    def schema_version(self) -> Any:
        return self.data.get("schema_version")

    @property
    def eval_every(self) -> int | None:
        """The evaluation interval in steps (None in records made before it was recorded)."""
        return self.data.get("eval_every")

    @property
    def table(self) -> TableKey:
        """The table this record's row belongs to."""
        return TableKey(self.task, self.preset, self.task_label, budget_key(self.budget))

    @property
    def problem(self) -> str | None:
        """Why a schema-valid record still cannot be placed in a table (None when it can)."""
        task, est = self.data.get("task"), self.data.get("estimator")
        if not isinstance(task, Mapping) or not task.get("name"):
            return "task.name missing"
        if not isinstance(est, Mapping) or not (est.get("label") or est.get("name")):
            return "estimator.label missing"
        if not isinstance(self.data.get("metrics"), Mapping):
            return "metrics is not an object"
        return None

    # ------------------------------------------------------------------------------ results

    @property
    def main_metric(self) -> str | None:
        main = self.data.get("main_metric")
        return str(main) if main else None

    def metric_directions(self, validation: bool = False) -> dict[str, bool | None]:
        """metric name -> higher is better (None when the record does not say), in the record's order;
        the ``valid_*`` metrics (tuning's data, never a result) only with ``validation``."""
        out: dict[str, bool | None] = {}
        for name, m in table_of(self.data, "metrics").items():
            if validation or not name.startswith(VALID_PREFIX):
                hib = m.get("higher_is_better") if isinstance(m, Mapping) else None
                out[name] = hib if isinstance(hib, bool) else None
        return out

    def metric(self, name: str) -> float | None:
        """The final value of metric ``name`` when it is a finite number (None: absent, or not finite)."""
        m = table_of(self.data, "metrics").get(name)
        return finite(m.get("value")) if isinstance(m, Mapping) else None

    @property
    def checkpoints(self) -> list[Checkpoint]:
        """The gradient checkpoints in order (empty when not measured)."""
        points = table_of(self.data, "gradient").get("checkpoints") or []
        return [Checkpoint(p) for p in points if isinstance(p, Mapping)]

    @property
    def end(self) -> Checkpoint | None:
        """The last gradient checkpoint (the end of training), or None."""
        points = table_of(self.data, "gradient").get("checkpoints") or []
        return Checkpoint(points[-1]) if points and isinstance(points[-1], Mapping) and points[-1] else None

    def checkpoint(self, name: str) -> Checkpoint | None:
        """The gradient checkpoint called ``name`` (``start``, ``end``...), or None."""
        return next((c for c in self.checkpoints if c.name == name), None)

    # ------------------------------------------------------------------------------ cost and how it ran

    @property
    def cost(self) -> Mapping[str, Any]:
        """Every cost field as stored (for display); the typed ones below are what reports compute with."""
        return table_of(self.data, "cost")

    @property
    def evals_per_step(self) -> float | None:
        return number(self.cost.get("cost_evals_per_step"))

    @property
    def steps(self) -> Any:
        return self.cost.get("steps")

    @property
    def steps_per_s(self) -> float | None:
        return number(self.cost.get("steps_per_s"))

    @property
    def train_seconds(self) -> float:
        """Training time in seconds (0 when not recorded)."""
        return float(self.cost.get("train_seconds") or 0.0)

    @property
    def accel(self) -> Accel | None:
        """What ``--accel`` asked for and what ran, or None for records made before it was recorded."""
        accel = self.data.get("accel")
        if not isinstance(accel, Mapping):
            return None
        return Accel(str(accel.get("requested", "auto")), str(accel.get("used")), str(accel.get("reason", "")))

    @property
    def accel_path(self) -> str:
        """How the training steps executed: ``none`` (eager), ``graph`` or ``compile``; a record without an
        ``accel`` block ran eagerly."""
        accel = self.data.get("accel")
        used = accel.get("used") if isinstance(accel, Mapping) else None
        return str(used) if used else EAGER

    @property
    def diagnostics(self) -> Mapping[str, Any]:
        return table_of(self.data, "diagnostics")

    @property
    def provenance(self) -> Provenance:
        return Provenance.of(table_of(self.data, "provenance"))

    @property
    def end_utc(self) -> str:
        """When the run ended (``""`` when unknown): the newest record of a seed wins."""
        return str(table_of(self.data, "provenance").get("end_utc") or "")

    def history(self, runs_dir: str | Path) -> list[dict[str, Any]]:
        """The run's history rows (``<run_id>.history.jsonl`` under ``runs_dir``); [] when there is none."""
        return read_history(history_path(record_path(runs_dir, self.task, self.estimator, self.run_id)))

    def series(self, runs_dir: str | Path, key: str, x: str = "step") -> list[tuple[float, float, float]]:
        """(step, x, value) of the history column ``key`` (``test/<metric>``, ``grad/log10_variance``) at
        the rows where it and ``x`` (``step`` or ``seconds``) are finite numbers, in step order."""
        rows = [(finite(h.get("step")), finite(h.get(x)), finite(h.get(key))) for h in self.history(runs_dir)]
        return sorted(((s, t, v) for s, t, v in rows if s is not None and t is not None and v is not None),
                      key=lambda row: row[0])
