"""Tuning on validation: run a grid of settings through the sweep machinery and pick, per estimator, the
setting with the best mean of the task's validation main metric; write what was chosen and why.

Nothing is chosen on the test set: the choice reads only the ``valid_*`` counterpart of the main metric
(``Task.selection_metric``). The rule, stated in every selection record:

- a setting is *eligible* only when every tuning seed finished ``ok`` (a setting that diverges or fails on
  a seed is a worse setting, not a missing value);
- among eligible settings the best mean over the tuning seeds wins; equal means go to the earlier setting
  in grid order;
- the chosen setting is then run at the final seeds (default: the tuning seeds), whose test metrics are
  what the leaderboard reports, under the table's name with ``[tuned]``.

The grid runs skip the gradient statistics (a choice needs only validation metrics, and the statistics
cost more than the training on the small tasks); the final runs make them as asked. Measuring never changes
a trajectory, so a final run at a tuning seed trains exactly as its grid run did.

A selection record is plain JSON in ``<runs>/selections/<id>.json``; its id hashes what defines the
tuning (task and estimator specs, grid, seeds, preset, budget), so re-running ``gradbench tune`` resumes
(finished runs are reused) and rewrites the same record.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradbench import records
from gradbench.config import parse_spec
from gradbench.errors import UnsupportedError, UsageError
from gradbench.multisample import estimator_class
from gradbench.registry import get_task_class
from gradbench.spec import RunOptions, RunSpec, resolve
from gradbench.stats import mean_ci
from gradbench.sweep import Grid, split_specs

SELECTION_SCHEMA = 1
RULE = ("eligible: every tuning seed finished ok; chosen: the eligible setting with the best mean {metric} over "
        "the tuning seeds (ties: the earlier setting in grid order); reported: the chosen setting's test metrics "
        "at the final seeds")


def parse_grid(text: str) -> dict[str, list[str]]:
    """``"lr=1e-4,3e-4,1e-3,tau=0.5,1"`` -> ``{"lr": ["1e-4", "3e-4", "1e-3"], "tau": ["0.5", "1"]}``: an
    item with ``=`` starts a key, the items after it are more values of that key."""
    grid: dict[str, list[str]] = {}
    key = None
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        if "=" in item:
            key, _, value = (s.strip() for s in item.partition("="))
            if not key:
                raise UsageError(f"bad --grid {text!r}: empty key in {item!r}")
            if key in grid:
                raise UsageError(f"bad --grid {text!r}: key {key!r} given twice")
            grid[key] = []
            item = value
        if key is None:
            raise UsageError(f"bad --grid {text!r}: a value before any key; expected e.g. lr=1e-4,3e-4,1e-3")
        if not item:
            raise UsageError(f"bad --grid {text!r}: key {key!r} has an empty value")
        if item in grid[key]:
            raise UsageError(f"bad --grid {text!r}: value {item!r} of {key!r} given twice")
        grid[key].append(item)
    if not grid or not all(grid.values()):
        raise UsageError(f"bad --grid {text!r}; expected e.g. lr=1e-4,3e-4,1e-3[,tau=0.5,1]")
    return grid


def _fields(config_cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(config_cls)}


def route(key: str, task_cls: type, est_cls: type) -> tuple[str, str]:
    """(``task`` or ``estimator``, config key) of a grid key: ``task.K`` / ``estimator.K`` say which; a plain
    key is the task's when its Config has it (``lr`` is the model's learning rate), else the estimator's."""
    scope, dot, name = key.partition(".")
    if dot:
        if scope not in ("task", "estimator"):
            raise UsageError(f"grid key {key!r}: prefix must be task. or estimator.")
        owner = task_cls if scope == "task" else est_cls
        if name not in _fields(owner.Config):
            raise UsageError(f"grid key {key!r}: {scope} {owner.name!r} has no config key {name!r}")
        return scope, name
    if key in _fields(task_cls.Config):
        return "task", key
    if key in _fields(est_cls.Config):
        return "estimator", key
    raise UsageError(f"grid key {key!r} is not a config key of task {task_cls.name!r} or estimator "
                     f"{est_cls.name!r} (see gradbench describe)")


@dataclass
class Tuning:
    """One estimator's tuning on one task: its grid points, their runs per tuning seed, and, once every grid
    run has a record, each point's validation statistics (``rows``), the choice and its final runs."""

    task: str
    estimator: str
    grid: dict[str, list[str]]
    seeds: list[int]  # the tuning seeds
    points: list[dict[str, str]]  # grid key -> value, in grid order
    specs: list[list[RunSpec]]  # per point, per tuning seed (no gradient statistics)
    settings: list[tuple[tuple[str, dict[str, str]], tuple[str, dict[str, str]]]]  # per point: (task, estimator)
    final: list[RunSpec] = field(default_factory=list)  # the chosen point at the final seeds
    rows: list[dict[str, Any]] | None = None  # per point: validation statistics (``score``); None: undecided
    choice: int | None = None

    @classmethod
    def resolve(cls, task: str, estimator: str, grid: dict[str, list[str]], seeds: list[int], preset: str,
                options: RunOptions) -> Tuning:
        """Resolve every grid point of one (task, estimator) at every tuning seed; UsageError on a bad point."""
        task_name, task_values = parse_spec(task)
        est_name, est_values = parse_spec(estimator)
        task_cls = get_task_class(task_name)
        est_cls, _ = estimator_class(est_name, dict(est_values))
        if task_cls.selection_metric() is None:
            raise UsageError(f"task {task_cls.name!r} records no validation metric to tune on "
                             f"(valid_{task_cls.main_metric.removeprefix('test_')}); tuning never selects on test")
        routes = {key: route(key, task_cls, est_cls) for key in grid}
        for scope, name in routes.values():
            if name in (task_values if scope == "task" else est_values):
                raise UsageError(f"{scope} key {name!r} is both in --{scope} and in --grid; give it in one place")
        points = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
        settings, specs = [], []
        bare = dataclasses.replace(options, grad_stats=False)
        for point in points:
            t = {**task_values, **{routes[k][1]: v for k, v in point.items() if routes[k][0] == "task"}}
            e = {**est_values, **{routes[k][1]: v for k, v in point.items() if routes[k][0] == "estimator"}}
            settings.append(((task_name, t), (est_name, e)))
            specs.append([resolve((task_name, t), (est_name, e), preset=preset, seed=s, options=bare) for s in seeds])
        return cls(task, estimator, grid, list(seeds), points, specs, settings)

    @property
    def runs(self) -> list[RunSpec]:
        """Every grid run: each point at each tuning seed."""
        return [s for specs in self.specs for s in specs]

    @property
    def decided(self) -> bool:
        """Whether the grid has been scored (every grid run had a record): the choice, or none, is known."""
        return self.rows is not None

    @property
    def chosen(self) -> dict[str, str] | None:
        """The chosen point's values (None: not decided, or no eligible point)."""
        return None if self.choice is None else self.points[self.choice]

    @property
    def no_choice(self) -> bool:
        """Decided, and no point was eligible (each failed or diverged on some tuning seed)."""
        return self.decided and self.choice is None

    def decide(self, final_seeds: list[int], options: RunOptions) -> int:
        """Score the grid from the records in ``options.runs`` and, when every grid run has one, choose by the
        module's rule and resolve the choice at the final seeds (sets ``rows``, ``choice``, ``final``).
        Returns how many grid runs have no record yet (0: decided)."""
        rows, missing = score(self, options.runs)
        if missing:
            return missing
        task_cls = self.specs[0][0].task_cls
        self.rows, self.choice = rows, choose(rows, task_cls.metrics[task_cls.selection_metric()])
        if self.choice is not None:
            task_spec, est_spec = self.settings[self.choice]
            preset = self.specs[0][0].preset
            self.final = [resolve(task_spec, est_spec, preset=preset, seed=s, options=options) for s in final_seeds]
        return 0

    def selection_id(self, final_seeds: list[int]) -> str:
        spec = self.specs[0][0]
        return records.run_id({"task": {"name": "selection", "version": str(SELECTION_SCHEMA),
                                        "config": {"task": self.task, "grid": self.grid}},
                               "estimator": {"name": self.estimator, "version": "", "config": {}},
                               "preset": spec.preset, "seed": [self.seeds, final_seeds], "budget": spec.budget})

    def selection(self, final_seeds: list[int], argv: list[str] | None, runs_dir: str | Path) -> dict[str, Any]:
        """The plain-JSON account of a decided tuning (its selection record): the grid, every point's
        validation mean with its CI, the rule, the choice and its final runs, and the tuning's cost."""
        assert self.rows is not None, "decide() first"
        spec = self.specs[0][0]
        task_cls = spec.task_cls
        metric = task_cls.selection_metric()
        task_name, task_values = parse_spec(self.task)
        base_task = task_cls.label_for(task_cls.make_config(task_values, spec.preset), spec.preset)
        est_name, est_values = parse_spec(self.estimator)
        cls, values = estimator_class(est_name, dict(est_values))
        base_est = cls.label_for(cls.make_config(values))
        chosen = self.rows[self.choice] if self.choice is not None else None
        return {
            "kind": "selection", "schema_version": SELECTION_SCHEMA, "id": self.selection_id(final_seeds),
            "task": {"name": task_name, "spec": self.task, "label": base_task},
            "estimator": {"name": est_name, "spec": self.estimator, "label": base_est},
            "preset": spec.preset, "budget": spec.budget, "grid": self.grid, "seeds": self.seeds,
            "final_seeds": final_seeds, "selection_metric": metric, "higher_is_better": task_cls.metrics[metric],
            "rule": RULE.format(metric=metric), "settings": self.rows,
            "choice": None if chosen is None else {
                "index": self.choice, "values": chosen["values"],
                "final_run_ids": [_found_id(s, runs_dir) for s in self.final]},
            "cost": {"runs": len(self.runs), "points": len(self.points), "seeds": len(self.seeds)},
            "argv": argv,
        }

    def write(self, final_seeds: list[int], argv: list[str] | None, runs_dir: str | Path,
              keep_same: bool = False) -> dict[str, Any] | None:
        """Write the selection record of a decided tuning (``write_selection``); None while undecided."""
        if not self.decided:
            return None
        return write_selection(self.selection(final_seeds, argv, runs_dir), runs_dir, keep_same)


candidates = Tuning.resolve  # the grid of one (task, estimator), resolved


def _found_id(spec: RunSpec, runs_dir: str | Path) -> str:
    """The id a run's record is filed under (an older id for records made before a task's added keys)."""
    record = spec.find_record(runs_dir)
    return spec.run_id if record is None else record.run_id


def score(tuning: Tuning, runs_dir: str | Path) -> tuple[list[dict[str, Any]], int]:
    """Per point: its validation statistics over the tuning seeds; and how many runs have no record yet."""
    metric = tuning.specs[0][0].task_cls.selection_metric()
    rows, missing = [], 0
    for point, specs in zip(tuning.points, tuning.specs, strict=True):
        found = [s.find_record(runs_dir) for s in specs]
        missing += sum(r is None for r in found)
        ok = [r for r in found if r is not None and r.ok]
        mean, half, n = mean_ci(v for r in ok if (v := r.metric(metric)) is not None)
        ids = [s.run_id if r is None else r.run_id for r, s in zip(found, specs, strict=True)]
        rows.append({"values": point, "run_ids": ids, "n_ok": len(ok), "n": len(specs),
                     "statuses": sorted({r.status for r in found if r is not None}),
                     "mean": mean if n else None, "ci95": half, "n_valued": n})
    return rows, missing


def choose(rows: list[dict[str, Any]], higher_is_better: bool) -> int | None:
    """The index of the chosen point (see the module's rule), or None when no point is eligible."""
    eligible = [i for i, r in enumerate(rows) if r["n_ok"] == r["n"] == r["n_valued"] and r["mean"] is not None]
    if not eligible:
        return None
    sign = 1.0 if higher_is_better else -1.0
    # means equal to 12 significant digits are a tie (two settings with the same hits out of the same
    # examples differ in the last bit of a float mean): the earlier setting wins
    return max(eligible, key=lambda i: (sign * float(f"{rows[i]['mean']:.12g}"), -i))


@dataclass
class TuneResult:
    selections: list[dict[str, Any]]
    unsupported: list[str]
    failed_runs: int
    missing: int  # runs with no record (e.g. another shard's): no selection is written until they exist


def tune(task: str, estimators: str, grid_text: str, seeds: list[int], final_seeds: list[int] | None,
         preset: str, options: RunOptions, sweep: Callable[[Grid], Any],
         argv: list[str] | None = None) -> TuneResult:
    """Tune every estimator of ``estimators`` (comma-separated specs) on ``task``: run the grid through
    ``sweep`` (a function that runs a Grid, e.g. ``run_sweep`` bound to an executor), choose on validation,
    run the choice at the final seeds, and write one selection record per estimator."""
    grid = parse_grid(grid_text)
    final_seeds = final_seeds or seeds
    found: list[Tuning] = []
    unsupported = []
    for est in split_specs(estimators):
        try:
            found.append(Tuning.resolve(task, est, grid, seeds, preset, options))
        except UnsupportedError as e:
            unsupported.append(f"{task} x {est}: {e}")
    if not found:
        raise UsageError("nothing to tune: " + ("; ".join(unsupported) or "no estimator given"))
    failed = count_failed(sweep(Grid([s for t in found for s in t.runs])))
    result = TuneResult([], unsupported, failed, 0)
    for t in found:
        result.missing += t.decide(final_seeds, options)
    finals = [s for t in found for s in t.final]  # runs already made (same spec) are reused by the sweep
    if finals:
        result.failed_runs += count_failed(sweep(Grid(finals)))
    result.selections = [sel for t in found if (sel := t.write(final_seeds, argv, options.runs)) is not None]
    return result


def write_selection(record: dict[str, Any], runs_dir: str | Path, keep_same: bool = False) -> dict[str, Any]:
    """Write a selection record to ``<runs>/selections/<id>.json``; returns it with its ``path``. With
    ``keep_same`` an existing record of the same tuning with the same settings, choice and rule is left as
    it is (and returned), so re-reading a finished tuning does not rewrite its file."""
    path = records.selection_path(runs_dir, record["id"])
    old = None
    if keep_same and path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None  # unreadable: rewritten below
    if isinstance(old, dict) and all(old.get(k) == record[k] for k in ("settings", "choice", "rule")):
        return {**old, "path": str(path)}
    path.parent.mkdir(parents=True, exist_ok=True)
    records.atomic_write_json(path, record)
    return {**record, "path": str(path)}


def count_failed(outcome: Any) -> int:
    """Failed or diverged runs of a sweep's outcome (a ``SweepResult``, or anything with ``failed``)."""
    return int(getattr(outcome, "failed", 0) or 0)
