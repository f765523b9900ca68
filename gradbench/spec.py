"""The run spec: what defines a run (and so its id), how it is resolved from names and options, and how
it is rebuilt from a record.

``RunOptions`` is the one options object shared by the CLI, the Python API and sweeps. Some options
change the result (budget, schedule, gradient statistics) and go into the ``RunSpec``; the others say
how and where the run executes (device, accel, records folder) and never change its id.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gradbench import records
from gradbench.budget import make_budget
from gradbench.config import config_dict, format_value, non_default, parse_spec
from gradbench.errors import UnknownNameError, UnsupportedError, UsageError
from gradbench.estimator import Estimator, EstimatorTags
from gradbench.multisample import estimator_class
from gradbench.node import Node
from gradbench.registry import get_estimator_class, get_task_class
from gradbench.results.record import Record
from gradbench.task import Task

DEFAULT_CHECKPOINTS = (0.0, 0.5, 1.0)


@dataclass(frozen=True)
class RunOptions:
    """How to run: the budget and measurement (part of the run id) and the execution (not part of it)."""

    steps: int | None = None  # training steps (default: the preset's)
    seconds: float | None = None  # train for this long instead of a step count
    evals: int | None = None  # or until this many cost-function evaluations per example (fair across estimators)
    lr_schedule: str = "constant"  # constant | cosine (decays every learning rate to 0 over --steps)
    eval_every: int | None = None  # evaluate every N steps (default: the preset's)
    grad_stats: bool = True  # measure gradient statistics at the checkpoints
    grad_draws: int | None = None  # gradient estimates per checkpoint (default: the preset's)
    grad_checkpoints: tuple[float, ...] = DEFAULT_CHECKPOINTS  # fractions of the budget
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    accel: str = "auto"  # auto | none | graph | compile: how steps execute
    threads: int | str | None = None  # torch's threads: N, "auto" (probe) or None (gradbench.threads' rule)
    runs: str = "runs"  # the records folder
    force: bool = False  # re-run even when a finished record exists
    progress: bool = False  # a progress bar on stderr
    log: str | None = None  # mirror history rows to tensorboard[:DIR] / wandb[:PROJECT] (gradbench.loggers)

    @classmethod
    def names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def split(cls, values: dict[str, Any], base: RunOptions | None = None) -> tuple[RunOptions, dict[str, Any]]:
        """(``base`` with the keys that name an option set, the remaining keys): for ``gradbench.run(**kw)``."""
        mine = {k: v for k, v in values.items() if k in cls.names()}
        points = mine.get("grad_checkpoints")
        if isinstance(points, (int, float)):
            mine["grad_checkpoints"] = (float(points),)
        elif points is not None:
            mine["grad_checkpoints"] = tuple(points)
        return replace(base or cls(), **mine), {k: v for k, v in values.items() if k not in mine}


@dataclass
class RunSpec:
    """Everything that defines a run, resolved (names, versions, full configs, seed, budget)."""

    task_cls: type[Task]
    task_config: Any
    estimator_cls: type[Estimator]
    estimator_config: Any
    preset: str
    seed: int
    budget: dict[str, Any]  # {"steps": N}, {"seconds": S} or {"evals": E}, plus "lr_schedule" when not constant
    eval_every: int
    grad: dict[str, Any] | None = None  # {"draws": K, "checkpoints": [fractions]}, None: no gradient stats
    seed_batch: tuple[int, ...] | None = None  # the seeds trained together with this one (batched seeds)

    @property
    def estimator_tags(self) -> EstimatorTags:
        """The estimator's facts at this spec's config (what the record's ``unbiased`` says)."""
        return self.estimator_cls.tags_for(self.estimator_config)

    def as_dict(self) -> dict[str, Any]:
        batch = {"seed_batch": list(self.seed_batch)} if self.seed_batch is not None else {}
        return {
            "task": {"name": self.task_cls.name, "version": self.task_cls.version,
                     "config": config_dict(self.task_config),
                     "label": self.task_cls.label_for(self.task_config, self.preset),
                     "node": self.task_cls.node_of(self.task_config).to_dict()},
            "estimator": {"name": self.estimator_cls.name, "version": self.estimator_cls.version,
                          "config": config_dict(self.estimator_config),
                          "label": self.estimator_cls.label_for(self.estimator_config),
                          "unbiased": self.estimator_tags.unbiased},
            "preset": self.preset, "seed": self.seed, "budget": self.budget, "grad_stats": self.grad, **batch,
        }

    @property
    def run_id(self) -> str:
        return records.run_id(self.as_dict())

    @property
    def run_ids(self) -> list[str]:
        """This spec's id, then the ids it had before its task's ``added_keys`` existed (when it is at their
        values): a record under any of them is this run. ``added_keys`` is in the order the keys were added,
        so a record made when only the first few existed has an id without the later ones: one older id per
        key, stripping the keys added after it (newest first)."""
        spec = self.as_dict()
        config, added = spec["task"]["config"], list(self.task_cls.added_keys.items())
        ids = [self.run_id]
        for i in range(len(added) - 1, -1, -1):
            later = dict(added[i:])
            if any(config.get(k) != v for k, v in later.items()):
                break
            spec["task"]["config"] = {k: v for k, v in config.items() if k not in later}
            ids.append(records.run_id(spec))
        return ids

    def record_paths(self, runs_dir: str | Path) -> list[Path]:
        """Where this run's record may be, newest id first."""
        return [records.record_path(runs_dir, self.task_cls.name, self.estimator_cls.name, rid)
                for rid in self.run_ids]

    def finished_record(self, runs_dir: str | Path) -> tuple[Path, dict[str, Any]] | None:
        """(path, record) of this run's finished record (ok or diverged) under any of its ids, or None;
        CorruptRecord when the only record there is unreadable."""
        corrupt = None
        for path in self.record_paths(runs_dir):
            try:
                record = records.load_finished(path)
            except records.CorruptRecord as e:
                corrupt = corrupt or e
                continue
            if record is not None:
                return path, record
        if corrupt is not None:
            raise corrupt
        return None

    def find_record(self, runs_dir: str | Path) -> Record | None:
        """This run's record under any of its ids: a finished one (ok or diverged) first, else a failed one;
        None when there is none (or only a corrupt one: it is re-run)."""
        try:
            found = self.finished_record(runs_dir)
        except records.CorruptRecord:
            return None
        if found is not None:
            return Record(found[1], found[0])
        for path in self.record_paths(runs_dir):
            try:
                if path.exists():
                    return Record(records.read_record(path), path)
            except records.CorruptRecord:
                continue
        return None


def _split(spec: str | tuple[str, dict[str, Any]], extra: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    if isinstance(spec, tuple):
        name, values = spec
    else:
        name, values = parse_spec(spec)
    return name, {**values, **(extra or {})}


def resolve(task: str | tuple[str, dict[str, Any]], estimator: str | tuple[str, dict[str, Any]],
            preset: str = "quick", seed: int = 0, options: RunOptions | None = None,
            task_config: dict[str, Any] | None = None, estimator_config: dict[str, Any] | None = None,
            **option_values: Any) -> RunSpec:
    """Names/specs + options -> a RunSpec, or a one-line UsageError.

    ``option_values`` are ``RunOptions`` fields given as keywords (``resolve("toy", "ste", steps=50)``),
    on top of ``options``. ``lr_schedule="cosine"`` is stored in the budget only when not constant, so
    constant runs keep their ids.
    """
    opts = replace(options or RunOptions(), **option_values)
    task_name, task_values = _split(task, task_config)
    est_name, est_values = _split(estimator, estimator_config)
    task_cls = get_task_class(task_name)
    est_cls, est_values = estimator_class(est_name, est_values)
    task_cfg = task_cls.make_config(task_values, preset)
    task_cls.check_config(task_cfg)
    est_cfg = est_cls.make_config(est_values)
    _check_supported(task_cls, task_cfg, est_cls, est_cfg, preset)
    if seed < 0:
        raise UsageError(f"--seed must be >= 0, got {seed}")
    p = task_cls.presets[preset]
    every = opts.eval_every if opts.eval_every is not None else p.eval_every
    if every < 1:
        raise UsageError(f"eval_every must be >= 1, got {every}")
    budget = make_budget(opts.steps, opts.seconds, opts.evals, opts.lr_schedule, default_steps=p.steps)
    return RunSpec(task_cls, task_cfg, est_cls, est_cfg, preset, int(seed), budget, every,
                   _grad(opts, p.grad_draws))


def _check_supported(task_cls: type[Task], task_cfg: Any, est_cls: type[Estimator], est_cfg: Any,
                     preset: str) -> None:
    """Refuse a pair whose node the estimator (at its config) cannot run, naming a task setting that would
    work."""
    node = task_cls.node_of(task_cfg)
    tags = est_cls.tags_for(est_cfg)
    if node.kind not in tags.supports:
        hint = _working_setting(task_cls, task_cfg, est_cls, est_cfg, preset)
        who = est_cls.name if node.kind not in est_cls.supports else est_cls.label_for(est_cfg)
        why = est_cls.refusal(node) or _constructor_refusal(est_cls, node, est_cfg) or (
            f"estimator {who!r} does not support the {node.kind!r} node of task "
            f"{task_cls.name!r} (it supports: {', '.join(sorted(tags.supports))})")
        raise UnsupportedError(why + (f"; try --task {hint}" if hint else ""))
    if tags.needs_log_weights and not task_cls.provides_log_weights(task_cfg):
        raise UnsupportedError(f"estimator {est_cls.name!r} needs per-sample log-weights, which task {task_cls.name!r} "
                               f"does not provide with these settings (the vae does with iw_k >= 2: try --task "
                               f"vae:iw_k=5)")
    est_cls(node, est_cfg)  # constructor-level checks (e.g. a variant undefined for this node)


def _constructor_refusal(est_cls: type[Estimator], node: Node, est_cfg: Any) -> str | None:
    """The constructor's own one-line reason, where the kind is the class's but not this config's (e.g.
    ``ste:variant=prob`` on sign); None where the class never runs the kind or the constructor says nothing."""
    if node.kind not in est_cls.supports:
        return None
    try:
        est_cls(node, est_cfg)
    except UnsupportedError as e:
        return str(e)
    return None


def _working_setting(task_cls: type[Task], task_cfg: Any, est_cls: type[Estimator], est_cfg: Any,
                     preset: str) -> str | None:
    """``sort:node=bernoulli``: the first value of the task's node setting (its ``node_key``: ``node``, the
    toy's ``variant``) whose node the estimator at ``est_cfg`` supports (None when the task has no such
    setting or none works)."""
    key = task_cls.node_key
    if not key:
        return None
    try:
        hint = typing.get_type_hints(task_cls.Config).get(key)
    except Exception:  # a plugin's Config whose hints cannot be resolved: no hint, not a traceback
        return None
    if typing.get_origin(hint) is not typing.Literal:
        return None
    supports = est_cls.tags_for(est_cfg).supports
    for value in typing.get_args(hint):
        try:
            cfg = replace(task_cfg, **{key: value})
            if task_cls.node_of(cfg).kind in supports:
                changed = non_default(cfg, task_cls.make_config(None, preset))
                settings = ",".join(f"{k}={format_value(v)}" for k, v in changed.items())
                return f"{task_cls.name}:{settings}" if settings else task_cls.name
        except (UsageError, ValueError, TypeError):
            continue
    return None


def _grad(opts: RunOptions, preset_draws: int) -> dict[str, Any] | None:
    if not opts.grad_stats:
        return None
    draws = opts.grad_draws if opts.grad_draws is not None else preset_draws
    if draws < 2:
        raise UsageError(f"--grad-draws must be >= 2, got {draws}")
    points = sorted(set(float(c) for c in opts.grad_checkpoints))
    if not points:
        raise UsageError("--grad-checkpoints needs at least one fraction of the budget in [0, 1], e.g. 0,0.5,1 "
                         "(or pass --no-grad-stats)")
    outside = [format_value(c) for c in points if not 0 <= c <= 1]
    if outside:
        raise UsageError(f"--grad-checkpoints {', '.join(outside)} {'is' if len(outside) == 1 else 'are'} outside "
                         f"[0, 1]: checkpoints are fractions of the budget (0 = start, 1 = end), e.g. 0,0.5,1")
    return {"draws": int(draws), "checkpoints": points}


def options_of(record: dict[str, Any]) -> RunOptions:
    """The result-changing options a record was made with."""
    budget, grad = record["budget"], record.get("grad_stats")
    return RunOptions(steps=budget.get("steps"), seconds=budget.get("seconds"), evals=budget.get("evals"),
                      lr_schedule=budget.get("lr_schedule", "constant"), eval_every=record.get("eval_every"),
                      grad_stats=grad is not None, grad_draws=grad["draws"] if grad else None,
                      grad_checkpoints=tuple(grad["checkpoints"]) if grad else DEFAULT_CHECKPOINTS)


def record_plugins(record: dict[str, Any]) -> list[str]:
    """The plugins a record was made with: its provenance's ``plugins``, or, in records made before that
    field, the ``--plugin`` values of its command line."""
    prov = record.get("provenance") or {}
    if prov.get("plugins"):
        return [str(p) for p in prov["plugins"]]
    argv, found = [str(a) for a in prov.get("argv") or []], []
    for i, arg in enumerate(argv):
        if arg == "--plugin" and i + 1 < len(argv):
            found.append(argv[i + 1])
        elif arg.startswith("--plugin="):
            found.append(arg.partition("=")[2])
    return found


def _class_of_record(record: dict[str, Any], part: str) -> Any:
    """The registered class of a record's task or estimator; a name that a plugin registered, while that
    plugin is not loaded, is refused naming the plugin to pass."""
    name = record[part]["name"]
    try:
        return (get_task_class if part == "task" else get_estimator_class)(name)
    except UnknownNameError:
        plugins = [_shown_path(p) for p in record_plugins(record)]
        if not plugins:
            raise
        flags = " ".join(f"--plugin {p}" for p in plugins)
        raise UnknownNameError(f"record {record.get('run_id')} was made with {part} {name!r} from a plugin, "
                               f"which is not loaded: pass {flags}") from None


def _shown_path(plugin: str) -> str:
    """A plugin file under the current folder as a relative path (the record keeps it absolute)."""
    path = Path(plugin)
    if path.suffix == ".py" and path.is_absolute():
        try:
            return path.relative_to(Path.cwd()).as_posix()
        except ValueError:
            return plugin
    return plugin


def spec_from_record(record: dict[str, Any]) -> RunSpec:
    """Rebuild the exact RunSpec of a record (the record holds the fully resolved spec)."""
    for part in ("task", "estimator"):
        cls = _class_of_record(record, part)
        if cls.version != record[part]["version"]:
            raise UsageError(f"record {record['run_id']} was made with {part} {cls.name!r} version "
                             f"{record[part]['version']}; this gradbench has version {cls.version}")
    spec = resolve((record["task"]["name"], record["task"]["config"]),
                   (record["estimator"]["name"], record["estimator"]["config"]),
                   preset=record["preset"], seed=record["seed"], options=options_of(record))
    if record.get("seed_batch") is not None:
        spec = replace(spec, seed_batch=tuple(record["seed_batch"]))
    if record["run_id"] not in spec.run_ids:
        raise UsageError(f"record {record['run_id']} does not rebuild to the same run id ({spec.run_id})")
    return spec
