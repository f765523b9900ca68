"""``Selection``: a typed, read-only view of a tuning's selection record (``<runs>/selections/<id>.json``,
written by ``gradbench tune``; fields in docs/records.md), and ``Setting``, one of its grid points.

Records made before a field existed read as what they were: no ``tried`` is the stated grid, no
``extensions`` none, no ``edge`` is computed from the grid and the choice (a choice at the largest or the
smallest value of a numeric key), no ``overlap`` is computed from the two seed lists."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gradbench.results.record import TableKey, budget_key, number, table_of

TUNED = " [tuned]"  # a tuned table's name: its task label without the grid's keys, plus this


def edge_sentence(edges: Mapping[str, Mapping[str, str]], chosen: Mapping[str, Any], limit: int) -> str:
    """The sentence a report prints for a choice still at an edge of its grid, "" for an interior one:
    "lr=1e-1 is the largest value tried (the grid was extended as far as its limit allows, 2 step(s) each
    way): the best setting may lie beyond the grid." (one clause per edge key)."""
    why = {"limit": (f"the grid was extended as far as its limit allows, {limit} step(s) each way" if limit
                     else "the grid was not extended: its extension limit is 0"),
           "range": "the next step lies outside the range the grid may extend into",
           "fixed": "the grid extends only learning rates"}
    parts = [f"{key}={chosen.get(key, '?')} is the {'largest' if e.get('side') == 'high' else 'smallest'} value "
             f"tried ({why.get(str(e.get('why')), 'the grid was not extended')})" for key, e in edges.items()]
    return "; ".join(parts) + ": the best setting may lie beyond the grid." if parts else ""


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
        """The final runs' budget (the table its row goes to)."""
        return self.data.get("final_budget", self.data.get("budget"))

    @property
    def tune_budget(self) -> Any:
        """The grid runs' budget: the final one, unless the tuning ran shorter (``final_budget`` recorded)."""
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
    def check_run_ids(self) -> list[str]:
        """The budget check's runs (tuned at a shorter budget: the choice and its neighbours at the final one)."""
        check = self.data.get("check")
        return [str(r) for r in check.get("run_ids") or []] if isinstance(check, Mapping) else []

    @property
    def check_holds(self) -> bool | None:
        """Whether the budget check upheld the choice (None: no check, not known yet, or an older record)."""
        check = self.data.get("check")
        holds = check.get("holds") if isinstance(check, Mapping) else None
        return holds if isinstance(holds, bool) else None

    @property
    def retuned(self) -> str | None:
        """The id of the selection that replaced this one: its budget check did not uphold the choice, so the
        side was re-tuned at the final budget and this choice is not reported (None: it is)."""
        rid = self.data.get("retuned")
        return str(rid) if rid else None

    @property
    def retune_of(self) -> str | None:
        """The id of the selection this re-tuning replaced (None: a first tuning)."""
        rid = self.data.get("retune_of")
        return str(rid) if rid else None

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
    def tried(self) -> Mapping[str, list[Any]]:
        """The grid tried: the stated grid with its extensions (the stated grid for older records)."""
        return table_of(self.data, "tried") or self.grid

    @property
    def extensions(self) -> list[Mapping[str, Any]]:
        """The extensions made, in order: ``{key, value, direction (up|down), chosen}`` (the value chosen
        when the grid was extended past it)."""
        return [e for e in self.data.get("extensions") or [] if isinstance(e, Mapping)]

    @property
    def edges(self) -> Mapping[str, Mapping[str, str]]:
        """Key -> ``{side: high|low, why: limit|range|fixed}`` for each key whose chosen value is still the
        largest / smallest tried. Older records (no ``edges``): computed from the grid, ``why`` unknown."""
        if "edges" in self.data:
            return table_of(self.data, "edges")
        found: dict[str, Mapping[str, str]] = {}
        for key, value in self.chosen.items():
            try:
                nums = [float(v) for v in self.tried.get(key, [])]
                x = float(value)
            except (TypeError, ValueError):
                continue
            if len(set(nums)) >= 2 and x in (min(nums), max(nums)):
                found[key] = {"side": "high" if x == max(nums) else "low", "why": "not extended"}
        return found

    @property
    def edge(self) -> bool:
        """Whether the choice is at an edge of the grid tried (after any extensions): the best setting may
        lie beyond the grid, and a report should say so."""
        return bool(self.edges)

    @property
    def edge_text(self) -> str:
        """One sentence on an edge choice, "" when the choice is interior: "lr=1e-1 is the largest value
        tried (...): the best setting may lie beyond the grid." """
        return edge_sentence(dict(self.edges), dict(self.chosen), int(self.data.get("extend_limit") or 0))

    @property
    def overlap(self) -> list[int]:
        """Final seeds that are also tuning seeds (reported at seeds it was chosen on: optimistic)."""
        return sorted(set(self.seeds) & set(self.final_seeds))

    @property
    def validation_size(self) -> int | None:
        """Validation examples per seed each validation metric averages over (None: not recorded)."""
        n = self.data.get("validation_size")
        return int(n) if isinstance(n, int) and not isinstance(n, bool) else None

    @property
    def resolution(self) -> float:
        """The difference in mean below which settings were tied (0: only equal means, or not recorded)."""
        return number(self.data.get("resolution")) or 0.0

    @property
    def tied(self) -> list[int]:
        """Indices of the settings tied with the best (the choice among them is the one nearest the middle)."""
        return [int(i) for i in self.data.get("tied") or []]

    @property
    def table(self) -> TableKey:
        """The table its rows go to: its task label without the grid's keys, plus `` [tuned]``."""
        task = table_of(self.data, "task")
        return TableKey(str(task["name"]), str(self.data.get("preset")), self.task_label + TUNED,
                        budget_key(self.budget))
