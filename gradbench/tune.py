"""Tuning on validation: run a grid of settings through the sweep machinery and pick, per estimator, the
setting with the best mean of a validation metric; write what was chosen and why.

Nothing is chosen on the test set: the choice reads only a ``valid_*`` metric (default the validation
counterpart of the task's main metric, ``Task.selection_metric``; ``metric=`` another one's). The rule,
stated in every selection record (``RULE``), is the same for every estimator, so it cannot favour a side:

- a setting is *eligible* only when every tuning seed finished ``ok`` (a setting that diverges or fails on
  a seed is a worse setting, not a missing value);
- among eligible settings the best mean over the tuning seeds wins, but settings whose means differ from
  the best by less than the validation split's *resolution* are tied with it: for a metric that is a
  fraction of the validation examples (``Task.fraction_metrics``: accuracy), fewer than ``TIE_EXAMPLES``
  (2) examples per seed, i.e. 2/N on the mean over N validation examples (digits: 2/180 = 0.011); other
  metrics tie only when equal to 12 significant digits. A tie goes to the setting nearest the middle of
  the grid tried (then the better mean, then the earlier setting);
- a choice at the edge of a learning-rate key (``EXTEND_RANGES``) extends the grid by one step of its own
  geometric progression past that edge (1e-3,3e-3,1e-2 -> 3e-2), at most ``EXTEND_LIMIT`` (2) steps each
  way and never outside the key's range; a choice still at an edge of any key is flagged ``edge`` in the
  selection record and in every report;
- the chosen setting is then run at the final seeds, which must not be tuning seeds (a run chosen for its
  validation score is an optimistic draw of its test score: reporting it would favour the side whose
  settings scatter most); ``allow_overlap`` permits it, recorded as ``overlap``.

The grid runs skip the gradient statistics (a choice needs only validation metrics, and the statistics
cost more than the training on the small tasks); the final runs make them as asked.

A selection record is plain JSON in ``<runs>/selections/<id>.json``; its id hashes what defines the
tuning (task and estimator specs, the stated grid, seeds, preset, budget, and the tuning metric and
extension limit when not the defaults), so re-running ``gradbench tune`` resumes (finished runs are
reused; the extensions are re-derived from the records, so an extension's runs are made by the resumed
call) and rewrites the same record.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradbench import records
from gradbench.config import parse_spec
from gradbench.errors import UnsupportedError, UsageError
from gradbench.multisample import estimator_class
from gradbench.protocol import VALID_PREFIX
from gradbench.registry import get_task_class
from gradbench.results.selection import edge_sentence
from gradbench.spec import RunOptions, RunSpec, resolve
from gradbench.stats import mean_ci
from gradbench.sweep import Grid, split_specs
from gradbench.task import valid_name

SELECTION_SCHEMA = 1  # the ids' version: fields added since (tried, extensions, edge, ...) are optional to readers
TIE_EXAMPLES = 2  # validation examples per seed below which two settings of a fraction metric are tied
EXTEND_LIMIT = 2  # grid extensions per key and direction
EXTEND_RANGES = {"lr": (1e-5, 1.0)}  # config keys a grid extends past an edge choice, and the range it stays in
RULE = ("eligible: every tuning seed finished ok; chosen: the eligible setting with the best mean {metric} over "
        "the tuning seeds, where a setting within {resolution} of the best is tied with it and a tie goes to the "
        "setting nearest the middle of the grid tried (then the better mean, then the earlier setting); a choice "
        "at the edge of a learning rate extends the grid one step of its progression past it, at most {limit} "
        "step(s) each way, within {ranges}; a choice still at an edge is flagged; reported: the chosen setting's "
        "test metrics at the final seeds, which are not tuning seeds")


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


def tune_metric(task_cls: type, name: str | None = None) -> str:
    """The validation metric a tuning chooses on: ``name``'s validation counterpart (``probe_accuracy`` and
    ``valid_probe_accuracy`` both give ``valid_probe_accuracy``), by default the main metric's
    (``Task.selection_metric``). UsageError when the task records no such metric: never a test metric."""
    if name is None:
        metric = task_cls.selection_metric()
        if metric is None:
            raise UsageError(f"task {task_cls.name!r} records no validation metric to tune on "
                             f"(valid_{task_cls.main_metric.removeprefix('test_')}); tuning never selects on test")
        return metric
    metric = name if name.startswith(VALID_PREFIX) else valid_name(name)
    if metric not in task_cls.metrics:
        known = [m for m in task_cls.metrics if m.startswith(VALID_PREFIX)]
        raise UsageError(f"task {task_cls.name!r} records no validation metric {metric!r} to tune on "
                         f"(known: {', '.join(known) or 'none'}); tuning never selects on test")
    return metric


def default_tune_metric(task: str, metric: str) -> str | None:
    """What a study claim judged on ``metric`` tunes on by default: ``metric``'s validation version when task
    spec ``task`` records it and it is not the main metric's; None: the main metric's (``Tuning.resolve``'s
    default), also when ``metric`` has no validation version."""
    cls = get_task_class(parse_spec(task)[0])
    valid = valid_name(metric)
    return valid if valid in cls.metrics and valid != cls.selection_metric() else None


def _number(value: str) -> float | None:
    try:
        x = float(value)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def _ascending(values: list[str]) -> bool | None:
    """True / False when every value is a positive number and they rise / fall strictly; None otherwise."""
    nums = [_number(v) for v in values]
    if len(nums) < 2 or any(x is None or x <= 0 for x in nums):
        return None
    if all(a < b for a, b in zip(nums, nums[1:], strict=False)):  # type: ignore[operator]
        return True
    if all(a > b for a, b in zip(nums, nums[1:], strict=False)):  # type: ignore[operator]
        return False
    return None


def _format_like(x: float, examples: list[str]) -> str:
    """``x`` written as the grid writes its values: ``3e-2`` beside ``1e-2``, else ``0.03``."""
    if any("e" in v.lower() for v in examples):
        exp = math.floor(math.log10(x))
        mant = round(x / 10**exp, 3)
        if mant >= 10:
            mant, exp = round(mant / 10, 3), exp + 1
        return f"{mant:g}e{exp}"
    return f"{x:.6g}"


def next_value(values: list[str], up: bool) -> str:
    """The next value of a geometric grid past its largest (``up``) or smallest value: one mean log-step of
    the grid ((max / min) ** (1 / (n - 1))) further, snapped to the grid's own mantissas when one lies within
    a quarter step (1e-3,3e-3,1e-2 -> 3e-2 above, 3e-4 below; then 1e-1 and 1e-4)."""
    nums = sorted(float(v) for v in values)
    lo, hi = nums[0], nums[-1]
    step = (hi / lo) ** (1 / (len(nums) - 1))
    x = hi * step if up else lo / step
    mantissas = {round(v / 10 ** math.floor(math.log10(v)), 3) for v in nums}
    e = math.floor(math.log10(x))
    near = min((m * 10.0**k for m in mantissas for k in (e - 1, e, e + 1)), key=lambda c: abs(math.log(c / x)))
    if abs(math.log(near / x)) <= math.log(step) / 4:
        x = near
    return _format_like(x, values)


@dataclass
class Tuning:
    """One estimator's tuning on one task: its grid points (the stated grid and any extensions), their runs
    per tuning seed, and, once every grid run has a record, each point's validation statistics (``rows``),
    the choice, its final runs, and whether the choice is still at an edge of the grid (``edge``)."""

    task: str
    estimator: str
    grid: dict[str, list[str]]  # the stated grid (the selection id's)
    seeds: list[int]  # the tuning seeds
    points: list[dict[str, str]]  # grid key -> value, over the grid tried, in its order
    specs: list[list[RunSpec]]  # per point, per tuning seed (no gradient statistics)
    settings: list[tuple[tuple[str, dict[str, str]], tuple[str, dict[str, str]]]]  # per point: (task, estimator)
    final: list[RunSpec] = field(default_factory=list)  # the chosen point at the final seeds
    final_options: RunOptions | None = None  # the final runs' options (their budget), once decided
    rows: list[dict[str, Any]] | None = None  # per point: validation statistics (``score``); None: undecided
    choice: int | None = None
    metric: str = ""  # the validation metric chosen on
    tried: dict[str, list[str]] = field(default_factory=dict)  # the grid tried: the stated one, extended
    extensions: list[dict[str, str]] = field(default_factory=list)  # {key, value, direction, chosen}, in order
    extend: int = EXTEND_LIMIT  # extensions allowed per key and direction
    edges: dict[str, dict[str, str]] = field(default_factory=dict)  # key -> {side: high|low, why}: the choice's
    _base: dict[str, Any] = field(default_factory=dict, repr=False)  # what resolving a point needs

    @classmethod
    def resolve(cls, task: str, estimator: str, grid: dict[str, list[str]], seeds: list[int], preset: str,
                options: RunOptions, metric: str | None = None, extend: int = EXTEND_LIMIT) -> Tuning:
        """Resolve every grid point of one (task, estimator) at every tuning seed; UsageError on a bad point.
        ``metric``: the metric to choose on (its validation counterpart); default the task's main metric."""
        task_name, task_values = parse_spec(task)
        est_name, est_values = parse_spec(estimator)
        task_cls = get_task_class(task_name)
        est_cls, _ = estimator_class(est_name, dict(est_values))
        chosen_on = tune_metric(task_cls, metric)
        if not seeds:
            raise UsageError("no tuning seeds (a study profile's tune_seeds, tune's --seeds)")
        if extend < 0:
            raise UsageError(f"the extension limit must be >= 0, got {extend}")
        routes = {key: route(key, task_cls, est_cls) for key in grid}
        for scope, name in routes.values():
            if name in (task_values if scope == "task" else est_values):
                raise UsageError(f"{scope} key {name!r} is both in --{scope} and in --grid; give it in one place")
        base = {"task": (task_name, task_values), "estimator": (est_name, est_values), "routes": routes,
                "preset": preset, "options": dataclasses.replace(options, grad_stats=False)}
        tuning = cls(task, estimator, grid, list(seeds), [], [], [], metric=chosen_on,
                     tried={k: list(v) for k, v in grid.items()}, extend=extend, _base=base)
        tuning._build()
        return tuning

    def _build(self) -> None:
        """(Re)make the points, their settings and their runs from the grid tried."""
        (task_name, task_values), (est_name, est_values) = self._base["task"], self._base["estimator"]
        routes, preset, bare = self._base["routes"], self._base["preset"], self._base["options"]
        self.points = [dict(zip(self.tried, values, strict=True)) for values in itertools.product(*self.tried.values())]
        self.settings, self.specs = [], []
        for point in self.points:
            t = {**task_values, **{routes[k][1]: v for k, v in point.items() if routes[k][0] == "task"}}
            e = {**est_values, **{routes[k][1]: v for k, v in point.items() if routes[k][0] == "estimator"}}
            self.settings.append(((task_name, t), (est_name, e)))
            self.specs.append([resolve((task_name, t), (est_name, e), preset=preset, seed=s, options=bare)
                               for s in self.seeds])

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

    @property
    def edge(self) -> bool:
        """Decided, and the choice is at an edge of some key of the grid tried, after every extension."""
        return bool(self.edges)

    @property
    def edge_text(self) -> str:
        """A sentence on an edge choice ("" when the choice is interior), for reports."""
        return edge_sentence(self.edges, self.chosen or {}, self.extend)

    @property
    def task_cls(self) -> type:
        return self.specs[0][0].task_cls

    @functools.cached_property
    def validation_size(self) -> int | None:
        """Validation examples each validation metric averages over, per seed (None: unknown)."""
        spec = self.specs[0][0]
        return spec.task_cls.validation_size(spec.task_config)

    @property
    def resolution(self) -> float:
        """The difference in mean below which two settings are tied: ``TIE_EXAMPLES`` examples per seed for a
        fraction of the validation examples (``TIE_EXAMPLES / N``), 0 (equal to 12 digits) otherwise."""
        fraction = self.metric in {valid_name(m) for m in getattr(self.task_cls, "fraction_metrics", ())}
        n = self.validation_size
        return TIE_EXAMPLES / n if fraction and n else 0.0

    def _key_values(self, key: str) -> list[float] | None:
        nums = [_number(v) for v in self.tried[key]]
        return None if len(set(nums)) < 2 or any(x is None for x in nums) else nums  # type: ignore[return-value]

    def distances(self) -> list[float]:
        """Per point: how far it is from the middle of the grid tried, in grid steps summed over the keys
        (a key's values ranked by size when numeric, else in grid order)."""
        where: dict[str, dict[str, float]] = {}
        for key, values in self.tried.items():
            nums = self._key_values(key)
            order = sorted(range(len(values)), key=lambda i: nums[i]) if nums else list(range(len(values)))
            centre = (len(values) - 1) / 2
            where[key] = {values[i]: abs(rank - centre) for rank, i in enumerate(order)}
        return [sum(where[k][v] for k, v in point.items()) for point in self.points]

    def _edge_sides(self, point: dict[str, str]) -> dict[str, str]:
        """Key -> ``high`` / ``low``: the keys (numeric, two values or more) whose value in ``point`` is the
        largest / smallest tried."""
        sides = {}
        for key, value in point.items():
            nums = self._key_values(key)
            if nums is None:
                continue
            x = float(value)
            if x == max(nums):
                sides[key] = "high"
            elif x == min(nums):
                sides[key] = "low"
        return sides

    def extendable(self, key: str) -> tuple[float, float] | None:
        """The range a key extends within (None: not extended: not a learning rate, or not a strictly
        monotone list of positive numbers)."""
        scope, name = self._base["routes"][key]
        if name not in EXTEND_RANGES or _ascending(self.grid[key]) is None:
            return None
        return EXTEND_RANGES[name]

    def _extensions_for(self, point: dict[str, str]) -> tuple[list[tuple[str, str, str]], dict[str, dict[str, str]]]:
        """The extensions a choice at ``point`` asks for ((key, value, up|down) each), and the edges that
        stay (key -> {side, why}: ``limit``, ``range`` or ``fixed``: a key the grid does not extend)."""
        steps, edges = [], {}
        for key, side in self._edge_sides(point).items():
            rng = self.extendable(key)
            direction = "up" if side == "high" else "down"
            done = sum(1 for e in self.extensions if e["key"] == key and e["direction"] == direction)
            if rng is None:
                edges[key] = {"side": side, "why": "fixed"}
                continue
            if done >= self.extend:
                edges[key] = {"side": side, "why": "limit"}
                continue
            value = next_value(self.tried[key], up=direction == "up")
            if not rng[0] <= float(value) <= rng[1]:
                edges[key] = {"side": side, "why": "range"}
                continue
            steps.append((key, value, direction))
        return steps, edges

    def _add(self, key: str, value: str, direction: str, chosen: str) -> None:
        """Extend key ``key`` by ``value`` beyond its edge, keeping the stated order's direction."""
        ascending = _ascending(self.grid[key])
        at_end = (direction == "up") == bool(ascending)
        self.tried[key] = [*self.tried[key], value] if at_end else [value, *self.tried[key]]
        self.extensions.append({"key": key, "value": value, "direction": direction, "chosen": chosen})

    def decide(self, final_seeds: list[int], options: RunOptions) -> int:
        """Score the grid from the records in ``options.runs`` and, when every grid run has one, choose by the
        module's rule: a choice at an extendable edge extends the grid (and scores it again, as far as its
        runs have records); otherwise resolve the choice at the final seeds (sets ``rows``, ``choice``,
        ``edges``, ``final``). Returns how many grid runs have no record yet (0: decided)."""
        higher = self.task_cls.metrics[self.metric]
        while True:
            rows, missing = score(self, options.runs)
            if missing:
                return missing
            choice = choose(rows, higher, self.resolution, self.distances())
            steps, edges = ([], {}) if choice is None else self._extensions_for(self.points[choice])
            if not steps:
                break
            for key, value, direction in steps:
                self._add(key, value, direction, self.points[choice][key])
            self._build()
        self.rows, self.choice, self.edges = rows, choice, edges
        if self.choice is not None:
            task_spec, est_spec = self.settings[self.choice]
            preset = self.specs[0][0].preset
            self.final = [resolve(task_spec, est_spec, preset=preset, seed=s, options=options) for s in final_seeds]
            self.final_options = options
        return 0

    @property
    def final_budget(self) -> dict[str, Any] | None:
        """The final runs' budget where it differs from the grid's (tuned at a shorter budget); else None."""
        if not self.final or self.final[0].budget == self.specs[0][0].budget:
            return None
        return self.final[0].budget

    def neighbours(self) -> list[int]:
        """The chosen point and the points one grid step from it in one key (over the grid tried, a numeric
        key's values in order of size): what a check at another budget re-runs."""
        assert self.choice is not None, "decide() first"
        chosen = self.points[self.choice]
        near = [chosen]
        for key, values in self.tried.items():
            nums = self._key_values(key)
            order = sorted(values, key=float) if nums else list(values)
            at = order.index(chosen[key])
            near += [{**chosen, key: order[j]} for j in (at - 1, at + 1) if 0 <= j < len(order)]
        return [self.points.index(p) for p in near]

    @property
    def check_seed(self) -> int:
        """The seed a budget check runs on: the first tuning seed."""
        return self.seeds[0]

    def budget_check(self, options: RunOptions) -> list[tuple[int, RunSpec]]:
        """(point index, run) of the chosen point and its neighbours (``neighbours``) at ``options``' budget on
        ``check_seed``, without gradient statistics: whether a choice made at a shorter budget still holds at
        the final one."""
        bare = dataclasses.replace(options, grad_stats=False)
        preset = self.specs[0][0].preset
        return [(i, resolve(*self.settings[i], preset=preset, seed=self.check_seed, options=bare))
                for i in self.neighbours()]

    def selection_id(self, final_seeds: list[int]) -> str:
        spec = self.specs[0][0]
        config: dict[str, Any] = {"task": self.task, "grid": self.grid}
        if self.metric != self.task_cls.selection_metric():
            config["metric"] = self.metric  # only when not the default, so the ids made before stay
        if self.extend != EXTEND_LIMIT:
            config["extend"] = self.extend
        if self.final_budget is not None:
            config["final_budget"] = self.final_budget
        return records.run_id({"task": {"name": "selection", "version": str(SELECTION_SCHEMA), "config": config},
                               "estimator": {"name": self.estimator, "version": "", "config": {}},
                               "preset": spec.preset, "seed": [self.seeds, final_seeds], "budget": spec.budget})

    def rule(self) -> str:
        """The rule in words, with this tuning's resolution, limit and ranges."""
        n, res = self.validation_size, self.resolution
        resolution = (f"{TIE_EXAMPLES} validation examples per seed ({TIE_EXAMPLES}/{n} = {res:.4g})" if res
                      else "12 significant digits")
        ranges = ", ".join(f"{k} in [{lo:g}, {hi:g}]" for k, (lo, hi) in EXTEND_RANGES.items())
        return RULE.format(metric=self.metric, resolution=resolution, limit=self.extend, ranges=ranges)

    def selection(self, final_seeds: list[int], argv: list[str] | None, runs_dir: str | Path) -> dict[str, Any]:
        """The plain-JSON account of a decided tuning (its selection record): the grid and the grid tried,
        every point's validation mean with its CI, the rule, the choice and its final runs, the extensions
        made and whether the choice is still at an edge, and the tuning's cost."""
        assert self.rows is not None, "decide() first"
        spec = self.specs[0][0]
        task_cls = spec.task_cls
        task_name, task_values = parse_spec(self.task)
        base_task = task_cls.label_for(task_cls.make_config(task_values, spec.preset), spec.preset)
        est_name, est_values = parse_spec(self.estimator)
        cls, values = estimator_class(est_name, dict(est_values))
        base_est = cls.label_for(cls.make_config(values))
        chosen = self.rows[self.choice] if self.choice is not None else None
        higher = task_cls.metrics[self.metric]
        # tuned at a shorter budget: the choice and its neighbours re-run at the final one on the first tuning
        # seed (``budget_check``), listed so that tables set them aside as they do the grid's runs
        check = (None if chosen is None or self.final_budget is None or self.final_options is None else
                 {"seed": self.check_seed, "budget": self.final_budget,
                  "run_ids": [_found_id(s, runs_dir) for _, s in self.budget_check(self.final_options)]})
        return {
            "kind": "selection", "schema_version": SELECTION_SCHEMA, "id": self.selection_id(final_seeds),
            "task": {"name": task_name, "spec": self.task, "label": base_task},
            "estimator": {"name": est_name, "spec": self.estimator, "label": base_est},
            "preset": spec.preset, "budget": spec.budget,
            **({} if self.final_budget is None else {"final_budget": self.final_budget}),
            "grid": self.grid, "seeds": self.seeds,
            "final_seeds": final_seeds, "overlap": sorted(set(self.seeds) & set(final_seeds)),
            "selection_metric": self.metric, "higher_is_better": higher,
            "validation_size": self.validation_size, "resolution": self.resolution, "tie_examples": TIE_EXAMPLES,
            "rule": self.rule(), "settings": self.rows,
            "tied": tied(self.rows, higher, self.resolution),
            "tried": self.tried, "extensions": self.extensions, "extend_limit": self.extend,
            "edge": self.edge, "edges": self.edges,
            "choice": None if chosen is None else {
                "index": self.choice, "values": chosen["values"],
                "final_run_ids": [_found_id(s, runs_dir) for s in self.final]},
            **({} if check is None else {"check": check}),
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
    metric = tuning.metric or tuning.specs[0][0].task_cls.selection_metric()
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


def _eligible(rows: list[dict[str, Any]]) -> list[int]:
    return [i for i, r in enumerate(rows) if r["n_ok"] == r["n"] == r["n_valued"] and r["mean"] is not None]


def tied(rows: list[dict[str, Any]], higher_is_better: bool, resolution: float = 0.0) -> list[int]:
    """The eligible points tied with the best: a mean that differs from the best mean by less than
    ``resolution``, or equals it to 12 significant digits (the same hits out of the same examples,
    averaged in another order, differ in the last bit of a float mean). Empty when none is eligible."""
    eligible = _eligible(rows)
    if not eligible:
        return []
    sign = 1.0 if higher_is_better else -1.0
    value = {i: sign * float(f"{rows[i]['mean']:.12g}") for i in eligible}
    best = max(value.values())
    # "less than": a difference of exactly TIE_EXAMPLES examples is not a tie (the margin absorbs float error)
    return [i for i in eligible if value[i] == best or best - value[i] < resolution * (1 - 1e-9)]


def choose(rows: list[dict[str, Any]], higher_is_better: bool, resolution: float = 0.0,
           distance: list[float] | None = None) -> int | None:
    """The index of the chosen point (see the module's rule), or None when no point is eligible: among the
    points tied with the best (``tied``), the one nearest the middle of the grid (``distance``, per point;
    None: all equal), then the better mean, then the earlier point."""
    candidates = tied(rows, higher_is_better, resolution)
    if not candidates:
        return None
    sign = 1.0 if higher_is_better else -1.0
    far = distance or [0.0] * len(rows)
    return min(candidates, key=lambda i: (round(far[i], 9), -sign * float(f"{rows[i]['mean']:.12g}"), i))


@dataclass
class TuneResult:
    selections: list[dict[str, Any]]
    unsupported: list[str]
    failed_runs: int
    missing: int  # runs with no record (e.g. another shard's): no selection is written until they exist


def check_final_seeds(seeds: list[int], final_seeds: list[int] | None, allow_overlap: bool = False) -> list[int]:
    """The final seeds, refused (UsageError) when they share a seed with the tuning seeds, unless
    ``allow_overlap``: the chosen setting's run at a tuning seed was chosen for its validation score, so its
    test score is an optimistic draw, and more so for the side whose settings scatter most. Without final
    seeds: the tuning seeds under ``allow_overlap``, else refused."""
    if final_seeds is None:
        if allow_overlap:
            return list(seeds)
        raise UsageError("give --final-seeds, disjoint from the tuning seeds (e.g. --seeds 0-2 --final-seeds 3-10): "
                         "the chosen setting is reported at seeds it was not chosen on")
    shared = sorted(set(seeds) & set(final_seeds))
    if shared and not allow_overlap:
        raise UsageError(f"--final-seeds shares seed(s) {','.join(map(str, shared))} with the tuning seeds: a run "
                         f"chosen for its validation score reports an optimistic test score; give final seeds "
                         f"disjoint from --seeds (e.g. --final-seeds 3-10), or --allow-overlap (recorded as overlap)")
    return list(final_seeds)


def tune(task: str, estimators: str, grid_text: str, seeds: list[int], final_seeds: list[int] | None,
         preset: str, options: RunOptions, sweep: Callable[[Grid], Any],
         argv: list[str] | None = None, *, metric: str | None = None, allow_overlap: bool = False,
         extend: int = EXTEND_LIMIT) -> TuneResult:
    """Tune every estimator of ``estimators`` (comma-separated specs) on ``task``: run the grid through
    ``sweep`` (a function that runs a Grid, e.g. ``run_sweep`` bound to an executor), choose on validation
    (``metric``'s validation counterpart; default the main metric's), extending a grid whose choice is at a
    learning rate's edge (at most ``extend`` steps each way) and running the extension, run the choice at
    the final seeds (disjoint from ``seeds`` unless ``allow_overlap``), and write one selection record per
    estimator."""
    grid = parse_grid(grid_text)
    found: list[Tuning] = []
    unsupported = []
    for est in split_specs(estimators):
        try:
            found.append(Tuning.resolve(task, est, grid, seeds, preset, options, metric=metric, extend=extend))
        except UnsupportedError as e:
            unsupported.append(f"{task} x {est}: {e}")
    if not found:
        raise UsageError("nothing to tune: " + ("; ".join(unsupported) or "no estimator given"))
    final_seeds = check_final_seeds(seeds, final_seeds, allow_overlap)  # before any run
    result = TuneResult([], unsupported, count_failed(sweep(Grid([s for t in found for s in t.runs]))), 0)
    missing: dict[int, int] = {}
    while True:  # decide; a grid that extends itself runs its new points, and is decided again
        grew = []
        for i, t in enumerate(found):
            if t.decided:
                continue
            before = len(t.runs)
            missing[i] = t.decide(final_seeds, options)
            if len(t.runs) > before:
                grew.append(t)
        if not grew:
            break
        result.failed_runs += count_failed(sweep(Grid([s for t in grew for s in t.runs])))
    result.missing = sum(n for i, n in missing.items() if not found[i].decided)
    finals = [s for t in found for s in t.final]  # runs already made (same spec) are reused by the sweep
    if finals:
        result.failed_runs += count_failed(sweep(Grid(finals)))
    result.selections = [sel for t in found if (sel := t.write(final_seeds, argv, options.runs)) is not None]
    return result


SAME_SELECTION = ("settings", "choice", "rule", "check", "retuned", "retune_of")  # what a rewrite must keep


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
    if isinstance(old, dict) and all(old.get(k) == record.get(k) for k in SAME_SELECTION):
        return {**old, "path": str(path)}
    path.parent.mkdir(parents=True, exist_ok=True)
    records.atomic_write_json(path, record)
    return {**record, "path": str(path)}


def count_failed(outcome: Any) -> int:
    """Failed or diverged runs of a sweep's outcome (a ``SweepResult``, or anything with ``failed``)."""
    return int(getattr(outcome, "failed", 0) or 0)
