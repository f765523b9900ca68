"""``RunSet``: the records a report is made of, and the one way they are grouped.

``RunSet.collect(runs)`` reads every record under a runs folder (an unreadable file is never silently
dropped: it is listed in ``problems``); ``relabel`` shows rows under today's label rule;
``with_selections`` applies tuning's selection records (a grid's runs leave the plain tables, the
chosen setting's final runs become a row of the task's ``[tuned]`` table); ``tables()`` groups by
table (task, preset, task label, budget), then by row label, then by seed, the newest record of a
seed winning.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gradbench.records import iter_records, read_selections
from gradbench.results.fmt import seeds_text, values_text
from gradbench.results.record import Record, TableKey
from gradbench.results.selection import Selection

Relabel = Callable[[Record], str]  # a record -> the label its row is shown under ("" keeps the stored one)


@dataclass
class Row:
    """One row of a table: one estimator setting's newest record per seed (any status)."""

    label: str
    records: dict[Any, Record] = field(default_factory=dict)  # seed -> newest record
    unsupported: bool = False  # an estimator that cannot run the table's node (no records)

    def add(self, record: Record) -> None:
        """Keep ``record`` for its seed unless a newer one is there (the newest run of a seed wins)."""
        old = self.records.get(record.seed)
        if old is None or record.end_utc >= old.end_utc:
            self.records[record.seed] = record

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


@dataclass
class RunSet:
    """Records, the files that could not be read, and the notes per table (how a tuned table was tuned)."""

    records: list[Record] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: dict[TableKey, list[str]] = field(default_factory=dict)

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
    def load(cls, runs_dir: str | Path, relabel: Relabel | None = None) -> RunSet:
        """What the leaderboard's tables (and their plots) are made of: ``collect`` with the runs folder's
        selection records applied (``with_selections``); unreadable selection files join ``problems``."""
        runs = cls.collect(runs_dir, relabel)
        selections, bad = read_selections(runs_dir)
        out = runs.with_selections(Selection(s) for s in selections)
        out.problems += bad
        return out

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def relabel(self, relabel: Relabel) -> RunSet:
        """Each record shown under ``relabel(record)`` (an empty label keeps the stored one), so records
        written under an older label rule join the rows of the current one."""
        return replace(self, records=[r.relabelled(relabel(r)) for r in self.records])

    def with_selections(self, selections: Iterable[Selection]) -> RunSet:
        """Each selection's grid runs leave the plain tables; its chosen setting's runs at the final seeds
        become one row of the task's ``[tuned]`` table, labelled with the choice (``dab [lr=0.003]``). An
        estimator with no eligible setting, or final runs not found, is said in the table's notes: never
        silently dropped."""
        by_id = {r.run_id: r for r in self.records}
        consumed: set[str] = set()
        tuned: list[Record] = []
        notes = {k: list(v) for k, v in self.notes.items()}
        for sel in selections:
            key = sel.table
            consumed.update(sel.grid_run_ids)
            grid = "; ".join(f"{k} ∈ {{{', '.join(map(str, v))}}}" for k, v in sel.grid.items())
            say = notes.setdefault(key, [])
            line = (f"Tuned on validation: {grid}, chosen by the best mean {sel.metric} over seeds "
                    f"{seeds_text(sel.seeds)} among settings that finished on every seed; rows report the test "
                    f"metrics at seeds {seeds_text(sel.final_seeds)}.")
            if line not in say:
                say.append(line)
            if sel.choice is None:
                say.append(f"{sel.label}: no setting finished on every tuning seed; nothing to report.")
                continue
            final = sel.final_run_ids
            consumed.update(final)
            missing = [rid for rid in final if rid not in by_id]
            if missing:
                say.append(f"{sel.label}: {len(missing)} of its {len(final)} final runs have no record here.")
            shown = f"{sel.label} [{values_text(sel.chosen)}]"
            tuned += [by_id[rid].relabelled(shown, key.label) for rid in final if rid in by_id]
        kept = [r for r in self.records if r.run_id not in consumed]
        return RunSet(kept + tuned, list(self.problems), notes)

    def tables(self) -> dict[TableKey, Table]:
        """table -> row label -> row (seed -> newest record), in the order records were found."""
        tables: dict[TableKey, Table] = {}
        for r in self.records:
            table = tables.setdefault(r.table, {})
            table.setdefault(r.label, Row(r.label)).add(r)
        return tables
