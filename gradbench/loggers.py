"""Experiment loggers: each run's history rows and final figures mirrored to TensorBoard or Weights & Biases.

``--log tensorboard[:DIR]`` / ``--log wandb[:PROJECT]`` (both: ``--log tensorboard,wandb``). A logger sees
exactly what the run's ``.history.jsonl`` gets, one row per logged step (so it is called every log or
evaluation step, never per training step), then the finished record: its final metrics, cost block and
gradient-statistics checkpoints. The libraries are optional extras, imported only when chosen; a missing
one is a usage error before any training. A logger that fails mid-run never fails the run: it warns once on
stderr and stops logging.

The interface is three calls, so another service is one small class here:

    logger.log_row(step, row)    # one history row: {"step", "seconds", "train_cost", "loss", "test/...", ...}
    logger.log_final(record)     # the run's record, once it is written
    logger.close()
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from gradbench.errors import UsageError

KINDS = {"tensorboard": "tensorboard", "wandb": "wandb"}  # --log name -> the module it needs (extra of that name)
WANDB_PROJECT = "gradbench"


class RunLogger(Protocol):
    def log_row(self, step: int, row: dict[str, Any]) -> None: ...

    def log_final(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class LogTarget:
    """One ``--log`` item: a kind and its optional argument (TensorBoard's folder, W&B's [ENTITY/]PROJECT)."""

    kind: str
    where: str | None = None


def parse(text: str | None) -> list[LogTarget]:
    """``"tensorboard,wandb:my-project"`` -> its targets ([] for None, "" or "none"). Unknown kinds and
    missing libraries are UsageErrors, so they stop a command before any training."""
    targets = []
    for item in (t.strip() for t in (text or "").split(",")):
        if not item or item == "none":
            continue
        kind, _, where = item.partition(":")
        kind = kind.strip().lower()
        if kind not in KINDS:
            raise UsageError(f"unknown --log {kind!r}; use tensorboard[:DIR] or wandb[:PROJECT] (comma-separated "
                             f"for both)")
        if importlib.util.find_spec(KINDS[kind]) is None:
            raise UsageError(f"--log {kind} needs the {KINDS[kind]} package: pip install 'gradbench[{kind}]'")
        targets.append(LogTarget(kind, where.strip() or None))
    return targets


def run_config(spec: Any, execution: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a logger shows as the run's config: its id and resolved spec, and how it executed."""
    return {"run_id": spec.run_id, **spec.as_dict(), **(execution or {})}


def run_name(spec: Any) -> str:
    """A run's display name: task, estimator label, seed and run id, e.g. ``toy/ste seed 0 (1f0c9a2b3d4e)``."""
    return f"{_group(spec)} seed {spec.seed} ({spec.run_id})"


def _group(spec: Any) -> str:
    """Task label / estimator label: what a run's seeds share."""
    task = spec.task_cls.label_for(spec.task_config, spec.preset)
    return f"{task}/{spec.estimator_cls.label_for(spec.estimator_config)}"


def open_run(targets: list[LogTarget], spec: Any, runs_dir: str | Path,
             execution: dict[str, Any] | None = None) -> RunLogger | None:
    """The loggers of one run (None without targets), each guarded so that a failure only warns."""
    if not targets:
        return None
    makers = {"tensorboard": TensorBoardLogger, "wandb": WandbLogger}
    loggers = [Guarded(t.kind, lambda t=t: makers[t.kind](t.where, spec, Path(runs_dir), execution))
               for t in targets]
    return loggers[0] if len(loggers) == 1 else Fanout(loggers)


# ------------------------------------------------------------------------------------ plumbing


class Guarded:
    """A logger opened on first use (so a run refused before its first step leaves no empty logger run),
    whose failures, opening included, warn once on stderr and switch it off: the run goes on."""

    def __init__(self, kind: str, make: Any) -> None:
        self.kind, self.make, self.logger, self.broken = kind, make, None, False

    def _call(self, method: str, *args: Any) -> None:
        if self.broken:
            return
        try:
            if self.logger is None:
                self.logger = self.make()
            getattr(self.logger, method)(*args)
        except Exception as e:
            self.broken = True
            print(f"gradbench: warning: --log {self.kind} failed ({type(e).__name__}: "
                  f"{' '.join(str(e).split())[:300]}); the run goes on without it", file=sys.stderr)

    def log_row(self, step: int, row: dict[str, Any]) -> None:
        self._call("log_row", step, row)

    def log_final(self, record: dict[str, Any]) -> None:
        self._call("log_final", record)

    def close(self) -> None:
        if self.logger is None:
            return
        if self.broken:  # still release what it holds, quietly: it has warned once already
            with contextlib.suppress(Exception):
                self.logger.close()
        else:
            self._call("close")
        self.logger, self.broken = None, True


class Fanout:
    def __init__(self, loggers: list[RunLogger]) -> None:
        self.loggers = loggers

    def log_row(self, step: int, row: dict[str, Any]) -> None:
        for logger in self.loggers:
            logger.log_row(step, row)

    def log_final(self, record: dict[str, Any]) -> None:
        for logger in self.loggers:
            logger.log_final(record)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


class Tee:
    """A history writer that also hands each row to a run's logger (rows without a step, such as a failed
    run's traceback, go to the history only)."""

    def __init__(self, history: Any, logger: RunLogger) -> None:
        self.history, self.logger = history, logger

    def write(self, row: dict[str, Any]) -> None:
        self.history.write(row)
        if "step" in row:
            self.logger.log_row(int(row["step"]), row)

    def close(self) -> None:
        self.history.close()

    def discard(self) -> None:
        self.history.discard()


def scalars(row: dict[str, Any], skip: tuple[str, ...] = ("step",)) -> dict[str, float]:
    """A row's numeric entries (None, text and the step itself left out; NaN and inf kept)."""
    return {k: float(v) for k, v in row.items()
            if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool)}


def final_figures(record: dict[str, Any], gradient: bool = True) -> dict[str, float]:
    """The finished run's figures: ``final/<metric>``, ``cost/<key>``, and (``gradient``) each
    gradient-statistics checkpoint's ``gradient/<checkpoint>/<statistic>``."""
    out = {f"final/{k}": m["value"] for k, m in (record.get("metrics") or {}).items()
           if isinstance(m.get("value"), (int, float))}
    out.update({f"cost/{k}": v for k, v in scalars(record.get("cost") or {}, skip=()).items()})
    for c in gradient_checkpoints(record) if gradient else []:
        out.update(checkpoint_figures(c))
    return out


def checkpoint_figures(checkpoint: dict[str, Any]) -> dict[str, float]:
    return {f"gradient/{checkpoint['checkpoint']}/{k}": v for k, v in scalars(checkpoint).items()}


def gradient_checkpoints(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in (record.get("gradient") or {}).get("checkpoints", []) if "checkpoint" in c]


def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"task": {"config": {"lr": 1}}}`` -> ``{"task.config.lr": 1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# ------------------------------------------------------------------------------------ TensorBoard


class TensorBoardLogger:
    """Event files under ``DIR/<run_id>/`` (default DIR: ``<runs>/tensorboard``): every history row's
    scalars at its step under the row's own keys, the final figures at the last step, the gradient
    checkpoints at their steps, the run's name and status as text, and its config as hyper-parameters
    (TensorBoard's HPARAMS tab, with the ``final/<metric>`` scalars as its metrics)."""

    def __init__(self, where: str | None, spec: Any, runs_dir: Path, execution: dict[str, Any] | None) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self.dir = Path(where) if where else runs_dir / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.dir / spec.run_id))
        self.step = 0
        self.writer.add_text("run", run_name(spec), 0)
        config = {k: v if isinstance(v, (int, float, str, bool)) else str(v)
                  for k, v in flat(run_config(spec, execution)).items()}
        writer = self.writer._get_file_writer()
        for summary in hparams(config, {f"final/{m}": 0.0 for m in spec.task_cls.metrics}):
            writer.add_summary(summary)

    def log_row(self, step: int, row: dict[str, Any]) -> None:
        self.step = step
        for key, value in scalars(row).items():
            self.writer.add_scalar(key, value, step)

    def log_final(self, record: dict[str, Any]) -> None:
        step = (record.get("cost") or {}).get("steps", self.step)
        for key, value in final_figures(record, gradient=False).items():
            self.writer.add_scalar(key, value, step)
        for c in gradient_checkpoints(record):  # each at the step it was measured after
            for key, value in checkpoint_figures(c).items():
                self.writer.add_scalar(key, value, c.get("step", step))
        status = record.get("status", "")
        self.writer.add_text("status", status + (f": {record['error']}" if record.get("error") else ""), step)

    def close(self) -> None:
        self.writer.close()


# ------------------------------------------------------------------------------------ Weights & Biases


class WandbLogger:
    """One W&B run per gradbench run: project ``gradbench`` (or ``wandb:[ENTITY/]PROJECT``), named for its
    task, estimator, seed and run id, grouped by task/estimator, with the spec as its config. Each history
    row is logged at its step; the final figures go to the run's summary. W&B's own environment applies
    (``WANDB_MODE=offline``, ``WANDB_API_KEY``, ...); its files go under ``WANDB_DIR``, else ``<runs>/wandb``."""

    def __init__(self, where: str | None, spec: Any, runs_dir: Path, execution: dict[str, Any] | None) -> None:
        import wandb

        entity, _, project = (where or WANDB_PROJECT).rpartition("/")
        folder = os.environ.get("WANDB_DIR") or str(runs_dir)
        Path(folder).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=project or WANDB_PROJECT, entity=entity or None, name=run_name(spec),
                              group=_group(spec), job_type=spec.preset, dir=folder,
                              tags=[spec.task_cls.name, spec.estimator_cls.name],
                              config=run_config(spec, execution), reinit="create_new",
                              settings=wandb.Settings(console="off"))
        self.failed = False

    def log_row(self, step: int, row: dict[str, Any]) -> None:
        self.run.log(scalars(row), step=step)

    def log_final(self, record: dict[str, Any]) -> None:
        summary = {k: v for k, v in final_figures(record).items() if math.isfinite(v)}
        summary["status"] = record.get("status")
        if record.get("error"):
            summary["error"] = record["error"]
        self.run.summary.update(summary)
        self.failed = record.get("status") == "failed"

    def close(self) -> None:
        self.run.finish(exit_code=1 if self.failed else 0)
