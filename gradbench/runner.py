"""Running specs into records: reuse a finished record, or train and write a new one.

``execute`` runs one spec, ``execute_seeds`` one spec at several seeds (one after another, or batched).
Each record is assembled here from the spec, the training outcome and the provenance, and written
atomically; the training loop itself is ``gradbench.training``, the execution paths
``gradbench.execution`` and the spec ``gradbench.spec``.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import traceback
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import gradbench
from gradbench import execution, loggers, records, training
from gradbench import threads as thread_policy
from gradbench.errors import UsageError
from gradbench.registry import loaded_plugins
from gradbench.spec import RunOptions, RunSpec, resolve, spec_from_record
from gradbench.training import BudgetTooSmall, CannotBatch, Diverged

__all__ = ["RunOptions", "RunSpec", "execute", "execute_seeds", "resolve", "spec_from_record"]


def _git(*args: str) -> str | None:
    root = Path(gradbench.__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what ``platform`` knows: float results depend on
    it (kernels reorder sums differently per instruction set), so ``rerun`` compares it."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def provenance(device: torch.device, argv: list[str] | None) -> dict[str, Any]:
    """Where and with what a run was made (the record's ``provenance`` block, less its end time)."""
    sha = _git("rev-parse", "HEAD")
    dirty = None if sha is None else bool(_git("status", "--porcelain", "--untracked-files=no"))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu")
    return {
        "gradbench_version": gradbench.__version__, "git_sha": sha, "git_dirty": dirty,
        "torch": torch.__version__, "python": platform.python_version(), "cuda": torch.version.cuda,
        "device": str(device), "device_name": name, "cpu_model": cpu_model(), "threads": torch.get_num_threads(),
        "hostname": socket.gethostname(), "argv": list(argv if argv is not None else sys.argv),
        "plugins": loaded_plugins(), "start_utc": _utc(),
    }


def _utc() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _say(message: str) -> None:
    print(f"gradbench: {message}", file=sys.stderr)


def _finished(spec: RunSpec, runs_dir: str | Path, force: bool) -> tuple[Path, dict[str, Any] | None]:
    """(where the spec's record goes, its finished record to reuse unless ``force``)."""
    path = records.record_path(runs_dir, spec.task_cls.name, spec.estimator_cls.name, spec.run_id)
    if force:
        return path, None
    try:
        found = spec.finished_record(runs_dir)  # under its id, or the id it had before a task's added keys
    except records.CorruptRecord as e:
        _say(f"re-running over a corrupt record: {e}")
        return path, None
    if found is None:
        return path, None
    where, existing = found
    existing["reused"] = True
    existing["path"] = os.fspath(where)
    return where, existing


def _note_reused_path(existing: dict[str, Any], used: str) -> None:
    """A reused record's speed figures come from the path it ran on: say so when that is not today's."""
    before = (existing.get("accel") or {}).get("used", "none")
    if before != used:
        _say(f"reusing run {existing['run_id']}: its steps/s were measured with accel {before!r}, not {used!r} "
             f"(pass --force to re-run)")


class _Discard:
    """History of a replica whose record already exists: trained again with its batch, logged nowhere."""

    def write(self, row: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass

    def discard(self) -> None:
        pass


def execute(spec: RunSpec, device: str = "auto", runs_dir: str | Path = "runs", force: bool = False,
            progress: bool = False, argv: list[str] | None = None, accel: str = "auto",
            threads: int | str | thread_policy.ThreadChoice | None = None, log: str | None = None) -> dict[str, Any]:
    """Run ``spec`` (or reuse its finished record) and return the record. Never raises for a failed run.

    ``accel`` chooses how steps execute (not what they compute), so like the device it is not part of
    the run id; the record's ``accel`` block says which path ran and why. ``threads`` (``gradbench.threads``:
    a count, ``auto`` or None for the default rule) likewise, recorded in its provenance. ``log``
    (``gradbench.loggers``: ``tensorboard[:DIR]``, ``wandb[:PROJECT]``, comma-separated) mirrors the run's
    history rows and final figures to an experiment logger. A spec from a batched run (``seed_batch``) is
    re-run with its whole batch, since its random numbers depend on the batch.
    """
    if spec.seed_batch is not None:
        specs = [replace(spec, seed=s, seed_batch=None) for s in spec.seed_batch]
        done = execute_seeds(specs, device, runs_dir, force, progress, argv, accel, batch=True, threads=threads,
                             log=log)
        return done[spec.seed_batch.index(spec.seed)]
    return _execute([spec], device, runs_dir, force, progress, argv, accel, threads, log)[0]


def execute_seeds(specs: list[RunSpec], device: str = "auto", runs_dir: str | Path = "runs", force: bool = False,
                  progress: bool = False, argv: list[str] | None = None, accel: str = "auto",
                  batch: bool = False, threads: int | str | thread_policy.ThreadChoice | None = None,
                  log: str | None = None) -> list[dict[str, Any]]:
    """Run one spec at several seeds: one after another, or (``batch``) all at once as a SeedBatch whose
    records name the batch (``seed_batch``). Falls back to one after another, saying why on stderr,
    where the estimator cannot be batched."""
    if not batch or not specs:
        return [_execute([s], device, runs_dir, force, progress, argv, accel, threads, log)[0] for s in specs]
    base = {**specs[0].as_dict(), "seed": None}
    seeds = tuple(s.seed for s in specs)
    if any({**s.as_dict(), "seed": None} != base for s in specs) or len(set(seeds)) < len(seeds):
        raise UsageError("batched seeds train one spec at several distinct seeds; these specs differ otherwise")
    why = None if specs[0].estimator_tags.batchable else f"estimator {specs[0].estimator_cls.name!r} is not batchable"
    if why is None:
        try:
            return _execute([replace(s, seed_batch=seeds) for s in specs], device, runs_dir, force, progress,
                            argv, accel, threads, log)
        except CannotBatch as e:
            why = f"the batched step failed ({e})"
    _say(f"seeds {','.join(map(str, seeds))} run one after another: {why}")
    return execute_seeds(specs, device, runs_dir, force, progress, argv, accel, batch=False, threads=threads,
                         log=log)


def _execute(specs: list[RunSpec], device: str, runs_dir: str | Path, force: bool, progress: bool,
             argv: list[str] | None, accel: str,
             threads: int | str | thread_policy.ThreadChoice | None = None,
             log: str | None = None) -> list[dict[str, Any]]:
    """Train ``specs`` (one spec, or a seed batch) and write their records; finished ones are reused (a
    batch with any left to run trains whole, and writes only those). Raises CannotBatch only before any
    record is written. Training runs with the thread count of ``gradbench.threads``' rule; the caller's
    count is restored afterwards. Each run made here (not one reused) gets its own ``log`` loggers."""
    dev = execution.pick_device(device)
    used, reason = execution.pick_accel(accel, specs[0].estimator_cls, dev, config=specs[0].estimator_config)
    targets = loggers.parse(log)  # a missing library stops here, before any training
    found = [_finished(s, runs_dir, force) for s in specs]
    for _, existing in found:
        if existing is not None:
            _note_reused_path(existing, used)
    if all(existing is not None for _, existing in found):
        return [existing for _, existing in found]
    if accel not in ("auto", used):
        _say(reason)  # e.g. --accel graph on a CPU: it runs eagerly
    choice = threads if isinstance(threads, thread_policy.ThreadChoice) else thread_policy.choose(threads)
    thread_block: dict[str, Any] = {"threads": choice.threads, "threads_source": choice.source,
                                    "probe_up_to": choice.probe_up_to}
    accel_block = {"requested": accel, "used": used, "reason": reason}
    execution_block = {"device": str(dev), "accel": used}
    sinks = [loggers.open_run(targets, s, runs_dir, execution_block) if existing is None else None
             for s, (_, existing) in zip(specs, found, strict=True)]
    try:
        with thread_policy.using(choice.threads or 1):
            prov = provenance(dev, argv)
            outcomes = _train_outcomes(specs, dev, found, progress, accel_block, thread_block, sinks)
        prov["threads"], prov["threads_source"] = thread_block["threads"], thread_block["threads_source"]
        if "probe_seconds" in thread_block:
            prov["threads_probe_seconds"] = thread_block["probe_seconds"]
        prov["end_utc"] = _utc()
        return _write_records(specs, found, outcomes, sinks, accel_block, prov)
    finally:
        for sink in sinks:
            if sink is not None:
                sink.close()


def _write_records(specs: list[RunSpec], found: list[tuple[Path, dict[str, Any] | None]], outcomes: list[Any],
                   sinks: list[Any], accel_block: dict[str, str], prov: dict[str, Any]) -> list[dict[str, Any]]:
    """Each spec's record: the one found, or a new one from its outcome, written (and sent to its logger)."""
    done = []
    for spec, (path, existing), outcome, sink in zip(specs, found, outcomes, sinks, strict=True):
        if existing is None:
            existing = _record(spec, outcome, accel_block, prov)
            records.atomic_write_json(path, existing)
            existing["path"] = os.fspath(path)
            if sink is not None:
                sink.log_final(existing)
        done.append(existing)
    return done


def _train_outcomes(specs: list[RunSpec], dev: torch.device, found: list[tuple[Path, dict[str, Any] | None]],
                    progress: bool, accel_block: dict[str, str], thread_block: dict[str, Any],
                    sinks: list[Any]) -> list[Any]:
    """Train and return each spec's outcome (a Result, Diverged, or the exception that failed the run).
    Histories are kept for finished and failed runs; an interrupted or unbatchable run keeps none. Each
    history row also goes to the run's logger (``sinks``: one per spec, or None)."""
    histories = [_history(path, sink) if existing is None else _Discard()
                 for (path, existing), sink in zip(found, sinks, strict=True)]
    bar = training.Progress(specs[0], progress, len(specs))
    try:
        outcomes: list[Any] = training.train(specs, dev, histories, bar, accel_block,
                                             batched=specs[0].seed_batch is not None, threads=thread_block)
    except (CannotBatch, BudgetTooSmall):  # refused before the first step: no record
        _discard(histories)
        raise
    except Exception as e:
        outcomes = [e] * len(specs)
        for h in histories:
            h.write({"traceback": traceback.format_exc()})
    except BaseException:  # interrupted (Ctrl-C, SystemExit): no record, so no history either
        _discard(histories)
        raise
    finally:
        for h in histories:
            h.close()
        bar.close()
    return outcomes


def _history(path: Path, sink: Any) -> Any:
    history = records.HistoryWriter(records.history_path(path))
    return history if sink is None else loggers.Tee(history, sink)


def _discard(histories: list[Any]) -> None:
    """Nothing is recorded for this attempt, so its histories are not kept either."""
    for h in histories:
        h.discard()


def _record(spec: RunSpec, outcome: Any, accel_block: dict[str, str], prov: dict[str, Any]) -> dict[str, Any]:
    """The run record of ``spec`` for a training outcome (see docs/records.md for the schema)."""
    record: dict[str, Any] = {"schema_version": records.SCHEMA_VERSION, "run_id": spec.run_id, "status": "ok",
                              "error": None, **spec.as_dict(), "metrics": {},
                              "main_metric": spec.task_cls.main_metric, "gradient": {}, "cost": {},
                              "diagnostics": {}, "eval_every": spec.eval_every, "accel": dict(accel_block)}
    if isinstance(outcome, Diverged):
        record["status"], record["error"] = "diverged", str(outcome)
    elif isinstance(outcome, Exception):
        record["status"], record["error"] = "failed", f"{type(outcome).__name__}: {outcome}"
    else:
        metrics, cost, diagnostics, gradient, fingerprint = outcome
        record["data_fingerprint"] = fingerprint
        record["metrics"] = {k: {"value": v, "higher_is_better": spec.task_cls.metrics[k]}
                             for k, v in metrics.items()}
        record["cost"], record["diagnostics"] = cost, diagnostics
        record["gradient"] = {"checkpoints": gradient} if gradient else {}
    record["provenance"] = prov
    return record


def run_with(options: RunOptions, spec: RunSpec, argv: list[str] | None = None) -> dict[str, Any]:
    """``execute`` with the execution settings of ``options`` (device, accel, threads, records folder, force,
    progress, loggers)."""
    return execute(spec, device=options.device, runs_dir=options.runs, force=options.force,
                   progress=options.progress, argv=argv, accel=options.accel, threads=options.threads,
                   log=options.log)
