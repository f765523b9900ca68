"""``Selection``: a typed, read-only view of a tuning's selection record (``<runs>/selections/<id>.json``,
written by ``gradbench tune``; fields in docs/records.md), and ``Setting``, one of its grid points."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gradbench.results.record import TableKey, budget_key, number, table_of

TUNED = " [tuned]"  # a tuned table's name: its task label without the grid's keys, plus this


@dataclass(frozen=True)
class Setting:
    """One grid point of a selection record (``settings[i]``): its values and validation statistics."""

    data: Mapping[str, Any]

    @property
    def values(self) -> Mapping[str, Any]:
        return table_of(self.data, "values")

    @property
    def run_ids(self) -> list[str]:
        return [str(rid) for rid in self.data.get("run_ids") or []]

    @property
    def n_ok(self) -> int:
        return int(self.data.get("n_ok") or 0)

    @property
    def n(self) -> int:
        return int(self.data.get("n") or 0)

    @property
    def mean(self) -> float | None:
        return number(self.data.get("mean"))

    @property
    def ci95(self) -> float | None:
        return number(self.data.get("ci95"))


@dataclass(frozen=True)
class Selection:
    """A tuning's selection record (``<runs>/selections/<id>.json``, written by ``gradbench tune``)."""

    data: Mapping[str, Any]

    @property
    def path(self) -> str:
        return str(self.data.get("path", ""))

    @property
    def task_label(self) -> str:
        task = table_of(self.data, "task")
        return str(task.get("label") or task.get("name"))

    @property
    def label(self) -> str:
        """The estimator's label without the grid's keys."""
        est = table_of(self.data, "estimator")
        return str(est.get("label") or est.get("name"))

    @property
    def budget(self) -> Any:
        return self.data.get("budget")

    @property
    def grid(self) -> Mapping[str, list[Any]]:
        return table_of(self.data, "grid")

    @property
    def metric(self) -> str:
        return str(self.data.get("selection_metric"))

    @property
    def higher_is_better(self) -> bool:
        return bool(self.data.get("higher_is_better"))

    @property
    def seeds(self) -> list[int]:
        return list(self.data.get("seeds") or [])

    @property
    def final_seeds(self) -> list[int]:
        return list(self.data.get("final_seeds") or [])

    @property
    def settings(self) -> list[Setting]:
        """The grid points, in grid order."""
        return [Setting(row) for row in self.data.get("settings") or [] if isinstance(row, Mapping)]

    @property
    def grid_run_ids(self) -> list[str]:
        return [rid for row in self.settings for rid in row.run_ids]

    @property
    def choice(self) -> Mapping[str, Any] | None:
        choice = self.data.get("choice")
        return choice if isinstance(choice, Mapping) and choice else None

    @property
    def chosen_index(self) -> int | None:
        return (self.choice or {}).get("index")

    @property
    def chosen(self) -> Mapping[str, Any]:
        """The chosen setting's values ({} when none was eligible)."""
        return (self.choice or {}).get("values") or {}

    @property
    def final_run_ids(self) -> list[str]:
        return [str(r) for r in (self.choice or {}).get("final_run_ids") or []]

    @property
    def table(self) -> TableKey:
        """The table its rows go to: its task label without the grid's keys, plus `` [tuned]``."""
        task = table_of(self.data, "task")
        return TableKey(str(task["name"]), str(self.data.get("preset")), self.task_label + TUNED,
                        budget_key(self.budget))
