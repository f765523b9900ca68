"""``RunSet``: the records a report is made of, and the one way they are grouped.

``RunSet.collect(runs)`` reads every record under a runs folder (an unreadable file is never silently
dropped: it is listed in ``problems``); ``relabel`` shows rows under today's label rule;
``with_selections`` applies tuning's selection records (a tuning's runs at a setting other than the
preset's leave the plain tables, the chosen setting's final runs become a row of the task's ``[tuned]``
table, and a run at the preset's setting stays in its plain table: a row never disappears from a table
because it also appears in another); ``with_versions`` shows records of an estimator version other than
the installed one under their own row (``relax (v2)``); ``tables()`` groups by table (task, preset, task
label, budget), then by row label, then by seed, the newest record of a seed winning (a tuning grid run
only where its seed has no other run).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gradbench.budget import budget_words
from gradbench.records import iter_records, read_selections
from gradbench.results.fmt import grid_text, seeds_text, values_text
from gradbench.results.record import Record, TableKey
from gradbench.results.selection import Selection

Relabel = Callable[[Record], str]  # a record -> the label its row is shown under ("" keeps the stored one)


@dataclass
class Row:
    """One row of a table: one estimator setting's newest record per seed (any status)."""

    label: str
    records: dict[Any, Record] = field(default_factory=dict)  # seed -> newest record
    unsupported: bool = False  # an estimator that cannot run the table's node (no records)
    grid_seeds: set[Any] = field(default_factory=set)  # seeds whose record is a tuning grid run

    def add(self, record: Record, grid: bool = False) -> None:
        """Keep ``record`` for its seed unless a newer one is there (the newest run of a seed wins). A tuning
        grid run (``grid``: made without gradient statistics, and training exactly as the plain run of its
        seed does) never replaces another run of its seed, and any other run replaces it."""
        old = self.records.get(record.seed)
        if old is not None:
            old_grid = record.seed in self.grid_seeds
            if grid != old_grid:
                if grid:
                    return
            elif record.end_utc < old.end_utc:
                return
        self.records[record.seed] = record
        if grid:
            self.grid_seeds.add(record.seed)
        else:
            self.grid_seeds.discard(record.seed)

    def ok(self) -> list[Record]:
        return [r for r in self.records.values() if r.ok]

    def values(self, metric: str) -> dict[Any, float]:
        """seed -> the finite value of ``metric`` over the ok records."""
        return {seed: v for seed, r in self.records.items() if r.ok and (v := r.metric(metric)) is not None}

    def statuses(self) -> Counter[str]:
        return Counter(r.status for r in self.records.values())

    def status(self, seed: Any) -> str:
        """The status of the seed's run, ``not run`` without one."""
        return self.records[seed].status if seed in self.records else "not run"


Table = dict[str, Row]  # row label -> row


def _superseded(sel: Selection, ids: Mapping[str, Selection]) -> str | None:
    """Why a selection's choice is not reported, as a table note (None: it is): its budget check did not
    uphold it (the re-tuning at the final budget reports the side), or it is a re-tuning that its first
    tuning no longer names (that tuning's choice changed since)."""
    why = None
    if sel.retuned:
        why = f"was re-tuned at the final budget (selection {sel.retuned})"
    elif sel.check_holds is False:
        why = "is to be re-tuned at the final budget"
    elif sel.retune_of and getattr(ids.get(sel.retune_of), "retuned", None) != sel.data.get("id"):
        why = f"re-tuned selection {sel.retune_of}, whose choice no longer asks for it"
    if why is None:
        return None
    held = (f", chosen at {budget_words(sel.tune_budget)}, did not hold at {budget_words(sel.budget)} (its budget "
            f"check) and" if sel.check_holds is False else "")
    return f"{sel.label}: [{values_text(sel.chosen)}]{held} {why}; its runs are set aside."


@dataclass
class RunSet:
    """Records, the files that could not be read, and the notes per table (how a tuned table was tuned)."""

    records: list[Record] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: dict[TableKey, list[str]] = field(default_factory=dict)
    grid: set[str] = field(default_factory=set)  # run ids of tuning grid runs kept in the plain tables
    set_aside: list[Record] = field(default_factory=list)  # tuning runs at other settings: in no table

    @classmethod
    def of(cls, records: Iterable[Record | Mapping[str, Any]], problems: Iterable[str] = ()) -> RunSet:
        """A RunSet of records given as Records or as record dicts."""
        return cls([Record.of(r) for r in records], list(problems))

    @classmethod
    def collect(cls, runs_dir: str | Path, relabel: Relabel | None = None) -> RunSet:
        """Every readable record under ``runs_dir``, plus one line per file that had to be skipped (a
        truncated or invalid file must not silently shrink a table)."""
        out = cls()
        for path, data, error in iter_records(runs_dir):
            if data is None:
                msg = error or "unreadable"
                out.problems.append(msg if str(path) in msg else f"{path}: {msg}")
                continue
            record = Record(data, path)
            if record.problem:
                out.problems.append(f"{path}: {record.problem}")
                continue
            out.records.append(record)
        return out.relabel(relabel) if relabel is not None else out

    @classmethod
    def load(cls, runs_dir: str | Path, relabel: Relabel | None = None,
             versions: Mapping[str, str] | None = None) -> RunSet:
        """What the leaderboard's tables (and their plots) are made of: ``collect`` with the runs folder's
        selection records applied (``with_selections``) and, given the installed estimator versions, records
        of other versions shown as such (``with_versions``); unreadable selection files join ``problems``."""
        runs = cls.collect(runs_dir, relabel)
        selections, bad = read_selections(runs_dir)
        out = runs.with_selections(Selection(s) for s in selections)
        out.problems += bad
        return out.with_versions(versions) if versions else out

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def relabel(self, relabel: Relabel) -> RunSet:
        """Each record shown under ``relabel(record)`` (an empty label keeps the stored one), so records
        written under an older label rule join the rows of the current one."""
        return replace(self, records=[r.relabelled(relabel(r)) for r in self.records])

    def with_versions(self, installed: Mapping[str, str]) -> RunSet:
        """Records of an estimator version other than the installed one (``installed``: estimator name ->
        version) shown under their own row, the label followed by `` (v<version>)``: ``relax (v2)``. Code
        that changed its version may compute something else, so its records never join the current row,
        where the newest record of a seed would silently mix two versions' seeds; the newest record wins
        within a version's row. Estimators not installed here keep their labels."""
        def shown(r: Record) -> Record:
            now = installed.get(r.estimator)
            old = r.estimator_version
            if now is None or old is None or str(old) == str(now):
                return r
            return r.relabelled(f"{r.label} (v{old})")

        return replace(self, records=[shown(r) for r in self.records])

    def with_selections(self, selections: Iterable[Selection]) -> RunSet:
        """Each selection's runs at a setting other than the preset's (its grid runs and, when the choice is
        not the preset's setting, its final runs) leave the plain tables; its chosen setting's runs at the
        final seeds become one row of the task's ``[tuned]`` table, labelled with the choice
        (``dab [lr=0.003]``). A run at the preset's setting (its task and estimator labels are the
        selection's own, so every tuned key is at its preset value) stays in the plain table it belongs to,
        whether it is a final run (then it is in both tables) or a grid run (made without gradient
        statistics: it counts for its seed only where no other run of that seed is there). An estimator
        with no eligible setting, or final runs not found, is said in the table's notes: never silently
        dropped."""
        by_id = {r.run_id: r for r in self.records}
        consumed: set[str] = set()
        grid_ids: set[str] = set(self.grid)
        tuned: list[Record] = []
        notes = {k: list(v) for k, v in self.notes.items()}

        def at_preset(rid: str, sel: Selection) -> bool:
            r = by_id.get(rid)
            return r is not None and (r.stored_task_label, r.stored_label) == (sel.task_label, sel.label)

        selections = list(selections)
        ids = {str(sel.data.get("id")): sel for sel in selections}
        finals = {rid for sel in selections if not _superseded(sel, ids) for rid in sel.final_run_ids}
        for sel in selections:
            key = sel.table
            for rid in [*sel.grid_run_ids, *sel.check_run_ids]:  # the budget check's runs are tuning runs too
                if at_preset(rid, sel):
                    grid_ids.update([rid] if rid not in finals else [])
                else:
                    consumed.add(rid)
            grid = grid_text(sel.grid)
            say = notes.setdefault(key, [])
            line = (f"Tuned on validation: {grid}, chosen by the best mean {sel.metric} over seeds "
                    f"{seeds_text(sel.seeds)} among settings that finished on every seed; rows report the test "
                    f"metrics at seeds {seeds_text(sel.final_seeds)}.")
            if line not in say:
                say.append(line)
            if sel.choice is None:
                say.append(f"{sel.label}: no setting finished on every tuning seed; nothing to report.")
                continue
            why = _superseded(sel, ids)
            if why:  # e.g. its choice did not hold at the final budget: the re-tuning's row reports the side
                say.append(why)
                consumed.update(rid for rid in sel.final_run_ids if not at_preset(rid, sel))
                continue
            final = sel.final_run_ids
            consumed.update(rid for rid in final if not at_preset(rid, sel))
            missing = [rid for rid in final if rid not in by_id]
            if missing:
                say.append(f"{sel.label}: {len(missing)} of its {len(final)} final runs have no record here.")
            shown = f"{sel.label} [{values_text(sel.chosen)}]"
            tuned += [by_id[rid].relabelled(shown, key.label) for rid in final if rid in by_id]
        kept = [r for r in self.records if r.run_id not in consumed]
        aside = [r for r in self.records if r.run_id in consumed and r.run_id not in finals]
        return RunSet(kept + tuned, list(self.problems), notes, grid_ids - consumed, self.set_aside + aside)

    def tables(self) -> dict[TableKey, Table]:
        """table -> row label -> row (seed -> newest record; a grid run only where its seed has no other
        run), in the order records were found."""
        tables: dict[TableKey, Table] = {}
        for r in self.records:
            table = tables.setdefault(r.table, {})
            table.setdefault(r.label, Row(r.label)).add(r, grid=r.run_id in self.grid)
        return tables
