"""The harness: resolve a run spec, train with one optimizer, evaluate, and write the run record.

The training step has no per-step host synchronisation: running sums and a non-finite flag stay on
the device and are read every ``log_every`` steps, so the same loop can later be graph-captured.
"""

from __future__ import annotations

import math
import os
import platform
import random
import resource
import socket
import subprocess
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

import gradbench
from gradbench import gradstats, records
from gradbench.config import config_dict, parse_spec
from gradbench.errors import UnsupportedError, UsageError
from gradbench.estimator import Estimator
from gradbench.registry import get_estimator_class, get_task_class
from gradbench.replicas import Pair, SeedBatch, changed
from gradbench.task import Task

LOG_EVERY = 50


@dataclass
class RunSpec:
    """Everything that defines a run, resolved (names, versions, full configs, seed, budget)."""

    task_cls: type[Task]
    task_config: Any
    estimator_cls: type[Estimator]
    estimator_config: Any
    preset: str
    seed: int
    budget: dict[str, Any]  # {"steps": N} or {"seconds": S}, plus "lr_schedule" when not constant
    eval_every: int
    grad: dict[str, Any] | None = None  # {"draws": K, "checkpoints": [fractions]}, None: no gradient stats
    seed_batch: tuple[int, ...] | None = None  # the seeds trained together with this one (batched seeds)

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
                          "unbiased": self.estimator_cls.unbiased},
            "preset": self.preset, "seed": self.seed, "budget": self.budget, "grad_stats": self.grad, **batch,
        }

    @property
    def run_id(self) -> str:
        return records.run_id(self.as_dict())


def _split(spec: str | tuple[str, dict[str, Any]], extra: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    if isinstance(spec, tuple):
        name, values = spec
    else:
        name, values = parse_spec(spec)
    return name, {**values, **(extra or {})}


def resolve(task: str, estimator: str, preset: str = "quick", seed: int = 0, steps: int | None = None,
            seconds: float | None = None, eval_every: int | None = None, grad_stats: bool = True,
            grad_draws: int | None = None, grad_checkpoints: tuple[float, ...] = (0.0, 0.5, 1.0),
            task_config: dict[str, Any] | None = None,
            estimator_config: dict[str, Any] | None = None, lr_schedule: str = "constant") -> RunSpec:
    """Names/specs + overrides -> a RunSpec, or a one-line UsageError.

    ``lr_schedule="cosine"`` decays every learning rate to 0 over a steps budget; it is stored in the
    budget (only when not constant, so constant runs keep their ids) and so keys the run and its table.
    """
    task_name, task_values = _split(task, task_config)
    est_name, est_values = _split(estimator, estimator_config)
    task_cls = get_task_class(task_name)
    est_cls = get_estimator_class(est_name)
    task_cfg = task_cls.make_config(task_values, preset)
    task_cls.check_config(task_cfg)
    est_cfg = est_cls.make_config(est_values)
    node = task_cls.node_of(task_cfg)
    if node.kind not in est_cls.supports:
        raise UnsupportedError(f"estimator {est_name!r} does not support the {node.kind!r} node of task {task_name!r} "
                         f"(it supports: {', '.join(sorted(est_cls.supports))})")
    est_cls(node, est_cfg)  # constructor-level checks (e.g. a variant undefined for this node)
    if steps is not None and seconds is not None:
        raise UsageError("give a budget of either --steps or --seconds, not both")
    if steps is not None and steps < 1:
        raise UsageError(f"--steps must be >= 1, got {steps}")
    if seconds is not None and not seconds > 0:
        raise UsageError(f"--seconds must be > 0, got {seconds}")
    if seed < 0:
        raise UsageError(f"--seed must be >= 0, got {seed}")
    p = task_cls.presets[preset]
    budget: dict[str, Any] = {"seconds": float(seconds)} if seconds is not None else {"steps": int(steps or p.steps)}
    if lr_schedule not in LR_SCHEDULES:
        raise UsageError(f"unknown --lr-schedule {lr_schedule!r}; use one of {', '.join(LR_SCHEDULES)}")
    if lr_schedule != "constant":
        if seconds is not None:
            raise UsageError(f"--lr-schedule {lr_schedule} needs a --steps budget (its length must be known)")
        budget["lr_schedule"] = lr_schedule
    every = eval_every if eval_every is not None else p.eval_every
    if every < 1:
        raise UsageError(f"eval_every must be >= 1, got {every}")
    grad = None
    if grad_stats:
        draws = grad_draws if grad_draws is not None else p.grad_draws
        if draws < 2:
            raise UsageError(f"--grad-draws must be >= 2, got {draws}")
        points = sorted(set(float(c) for c in grad_checkpoints))
        if not points or any(not 0 <= c <= 1 for c in points):
            raise UsageError(f"--grad-checkpoints are fractions of the budget in [0, 1], got {grad_checkpoints}")
        grad = {"draws": int(draws), "checkpoints": points}
    return RunSpec(task_cls, task_cfg, est_cls, est_cfg, preset, int(seed), budget, every, grad)


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise UsageError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device} was asked for, but CUDA is not available here "
                             f"(torch {torch.__version__}); use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


ACCEL = ("auto", "none", "graph", "compile")
LR_SCHEDULES = ("constant", "cosine")
GRAPH_WARMUP = 3  # eager steps (on a side stream) before capture: autograd and Adam's state must exist first


def pick_accel(accel: str, estimator_cls: type[Estimator], device: torch.device | None = None) -> tuple[str, str]:
    """(path that will run, why). ``auto`` is the CUDA graph on a CUDA device and eager elsewhere (on a
    CPU torch.compile pays off only on long runs); ``graph`` and ``compile`` fall back to eager, with the
    reason, where they cannot run."""
    if accel not in ACCEL:
        raise UsageError(f"unknown --accel {accel!r}; use one of {', '.join(ACCEL)}")
    cuda = device is not None and device.type == "cuda"
    if accel == "auto":
        if not cuda:
            return "none", ("auto: eager on a CPU; torch.compile only pays off on long runs (its compile time "
                            "is seconds to minutes), pass --accel compile to use it")
        if not estimator_cls.capturable:
            return "none", f"auto: estimator {estimator_cls.name!r} cannot be captured in a CUDA graph; eager"
        return "graph", "auto: whole step captured in a CUDA graph (small models are bound by kernel launches)"
    if accel == "graph" and not cuda:
        return "none", "graph: CUDA graphs need a CUDA device; eager instead"
    if accel == "graph" and not estimator_cls.capturable:
        return "none", f"graph: estimator {estimator_cls.name!r} cannot be captured in a CUDA graph; eager instead"
    if accel == "compile" and not estimator_cls.compilable:
        return "none", f"compile: estimator {estimator_cls.name!r} cannot run under torch.compile; eager instead"
    return accel, "asked for"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _git(*args: str) -> str | None:
    root = Path(gradbench.__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def provenance(device: torch.device, argv: list[str] | None) -> dict[str, Any]:
    sha = _git("rev-parse", "HEAD")
    dirty = None if sha is None else bool(_git("status", "--porcelain", "--untracked-files=no"))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu")
    return {
        "gradbench_version": gradbench.__version__, "git_sha": sha, "git_dirty": dirty,
        "torch": torch.__version__, "python": platform.python_version(), "cuda": torch.version.cuda,
        "device": str(device), "device_name": name, "threads": torch.get_num_threads(),
        "hostname": socket.gethostname(), "argv": list(argv if argv is not None else sys.argv),
    }


def _utc() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _floats(d: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items()}


class Progress:
    """A tqdm bar on stderr (steps or seconds), showing the live main metric (its mean over a seed batch)."""

    def __init__(self, spec: RunSpec, enabled: bool, replicas: int = 1) -> None:
        from tqdm import tqdm

        self.seconds = spec.budget.get("seconds")
        total = self.seconds if self.seconds else spec.budget["steps"]
        desc = f"{spec.task_cls.name}/{spec.estimator_cls.label_for(spec.estimator_config)}"
        desc += f" x{replicas} seeds" if replicas > 1 else ""
        fmt = "{l_bar}{bar}| {n:.0f}/{total:.0f}s [{elapsed}<{remaining}{postfix}]" if self.seconds else None
        self.bar = tqdm(total=total, desc=desc, file=sys.stderr, disable=not enabled, leave=False,
                        dynamic_ncols=True, bar_format=fmt, unit="step")
        self.done = 0.0

    def update(self, step: int, elapsed: float, metrics: dict[str, float] | None = None) -> None:
        pos = min(elapsed, self.seconds) if self.seconds else step
        self.bar.update(pos - self.done)
        self.done = pos
        if metrics:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()}, refresh=False)

    def close(self) -> None:
        self.bar.close()


class Diverged(RuntimeError):
    pass


Result = tuple[dict[str, float], dict[str, Any], dict[str, float], list[dict[str, Any]]]


def train(specs: list[RunSpec], device: torch.device, histories: list[Any], progress: Progress,
          accel: dict[str, str] | None = None, batched: bool = False) -> list[Result | Diverged]:
    """The training loop, for one spec or (``batched``) one spec at several seeds trained as a SeedBatch.
    Returns, per spec, (final metrics, cost block, last diagnostics, gradient checkpoints) or the
    Diverged error that ended it (a replica that diverges stops; the others go on).

    ``accel["used"]`` picks how steps execute (see ``pick_accel``); the loop updates ``accel`` if it has to
    fall back to eager. ``compile`` runs each step's forward (batch, estimator, cost) through
    ``torch.compile``, with inductor's ``fallback_random`` on during the run so the random numbers are
    eager's. ``graph`` captures the whole step (batch, sampling, forward, estimator, backward, Adam with
    ``capturable=True``) in a CUDA graph after ``GRAPH_WARMUP`` eager steps and replays it; evaluation,
    logging, NaN checks and gradient statistics run between replays. Both compute what eager computes, so
    trajectories agree up to float reordering.
    """
    accel = accel if accel is not None else {"used": "none"}
    if accel["used"] != "compile":
        return _train(specs, device, histories, progress, accel, batched)
    import torch._inductor.config as inductor_config

    with inductor_config.patch(fallback_random=True):
        return _train(specs, device, histories, progress, accel, batched)


class CannotBatch(RuntimeError):
    """A trial batched step failed (e.g. an estimator that differentiates inside its forward, which vmap
    does not support): the seeds must run one after another."""


def make_optimizer(groups: list[dict[str, Any]], device: torch.device, graph: bool) -> torch.optim.Adam:
    """Adam over ``groups``. For the CUDA-graph path each learning rate lives in a device tensor, so a
    schedule can change it between replays (the scheduler fills the tensor in place; a float would be baked
    into the captured graph), and on CUDA Adam is ``capturable`` (its step count stays on the device)."""
    if not graph:
        return torch.optim.Adam(groups)
    groups = [{**g, "lr": torch.tensor(float(g["lr"]), device=device)} for g in groups]
    return torch.optim.Adam(groups, capturable=device.type == "cuda")


def _cosine(total_steps: int):
    """The factor on each lr for the step with 0-based index ``s``: decays to 0 at the last step."""
    return lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps))


class CudaGraphStep:
    """The ``graph`` path: warm-up steps run eagerly on a side stream (as CUDA graph capture requires), then
    one training step is captured and every later step replays it. Nothing runs during capture, so a
    failed capture leaves parameters and optimizer state as they were."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.side = torch.cuda.Stream(device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.outputs: dict[str, Any] = {}
        self.host_sync: str | None = None  # what the checked warm-up step synchronised on, if it did

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def warmup(self, eager_step, check: bool = False) -> dict[str, Any]:
        """One eager step on the side stream; ``check``: with CUDA's sync debug mode on, so a host sync in
        the step (illegal during capture, and a failed capture can leave CUDA's state unusable) is found
        before capture is tried."""
        main = torch.cuda.current_stream(self.device)
        self.side.wait_stream(main)
        with torch.cuda.stream(self.side):
            if not check:
                out = eager_step()
            else:
                mode = torch.cuda.get_sync_debug_mode()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    torch.cuda.set_sync_debug_mode("warn")
                    try:
                        out = eager_step()
                    finally:
                        torch.cuda.set_sync_debug_mode(mode)
                syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message)]
                self.host_sync = syncs[0].splitlines()[0] if syncs else None
        main.wait_stream(self.side)
        return out

    def capture(self, step_fn, optimizer: torch.optim.Optimizer) -> None:
        if self.host_sync:
            raise RuntimeError(f"the step synchronises with the host: {self.host_sync}")
        graph = torch.cuda.CUDAGraph()
        optimizer.zero_grad(set_to_none=True)  # backward in the graph then writes fresh gradients each replay
        torch.cuda.synchronize(self.device)
        main = torch.cuda.current_stream(self.device)
        try:
            with torch.cuda.graph(graph):
                self.outputs = step_fn()
        except BaseException:
            torch.cuda.set_stream(main)  # a failed capture_end skips torch.cuda.graph's stream restore
            raise
        self.graph = graph

    def replay(self) -> dict[str, Any]:
        """One training step; returns the captured step's outputs, which each replay refreshes in place."""
        self.graph.replay()
        return self.outputs


def _train(specs: list[RunSpec], device: torch.device, histories: list[Any], progress: Progress,
           accel: dict[str, str], batched: bool) -> list[Result | Diverged]:
    spec = specs[0]  # the specs differ in their seed only
    mode = accel["used"]
    pairs = []
    for s in specs:  # each replica is built under its own seed, as its sequential run would be
        seed_everything(s.seed)
        task = s.task_cls(s.task_config, device)
        task.to(device)
        pairs.append((task, s.estimator_cls(task.node, s.estimator_config).to(device)))
    model = SeedBatch(pairs) if batched else Pair(*pairs[0])
    task_lr = spec.task_config.lr
    task_params, own = model.parameter_groups()
    groups = [{"params": task_params, "lr": task_lr}]
    if own:
        groups.append({"params": own, "lr": getattr(spec.estimator_config, "lr", None) or task_lr})
    optimizer = make_optimizer(groups, device, graph=mode == "graph")
    schedule = lr_factor = None
    if spec.budget.get("lr_schedule") == "cosine":
        lr_factor = _cosine(spec.budget["steps"])
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    main = spec.task_cls.main_metric

    n = len(specs)
    max_steps = spec.budget.get("steps")
    deadline = spec.budget.get("seconds")
    cost_sum = torch.zeros(n, device=device)  # per replica, summed over the steps since the last log
    loss_sum = torch.zeros(n, device=device)
    bad = torch.zeros(n, dtype=torch.bool, device=device)
    window = 0
    alive = list(range(n))
    ended: dict[int, Diverged] = {}
    diagnostics: list[dict[str, Any]] = [{} for _ in specs]
    metrics: list[dict[str, float]] = [{} for _ in specs]
    gradient: list[list[dict[str, Any]]] = [[] for _ in specs]
    step = 0
    checkpoints = _checkpoint_steps(spec)
    devices = [device] if device.type == "cuda" else []
    peak_cuda = 0
    first_step = 0.0
    capture_seconds = None

    def end(r: int, message: str) -> None:
        ended[r] = Diverged(message)
        alive.remove(r)

    def check_finite(at: int) -> None:
        """End every replica whose loss has been non-finite (NaN/inf) since the last check."""
        flags = bad.tolist()
        for r in [r for r in alive if flags[r]]:
            end(r, f"non-finite loss (NaN/inf) at or before step {at}; "
                   f"try a smaller learning rate or another estimator config")

    def measure_gradient(key: int, at_step: int) -> None:
        """Measure the checkpoints due at ``key``; a failed measurement is recorded, never fatal."""
        nonlocal peak_cuda
        if device.type == "cuda":  # the measurement's own memory must not count as the run's peak
            peak_cuda = max(peak_cuda, torch.cuda.max_memory_allocated(device))
        model.sync()
        for fraction in checkpoints.pop(key, []):
            label = _checkpoint_label(fraction)
            for r in alive:
                task, estimator = model.pairs[r]
                try:
                    stats = gradstats.measure(estimator, task, spec.grad["draws"], seed=specs[r].seed + 7919,
                                              label=label, step=at_step)
                except Exception as e:
                    stats = {"checkpoint": label, "step": at_step, "error": f"{type(e).__name__}: {e}"}
                gradient[r].append(stats)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    step_forward = torch.compile(model.forward) if mode == "compile" else model.forward

    def train_step() -> dict[str, Any]:
        """Forward, backward, Adam, and the running sums: all on the device, no host sync (capturable)."""
        total, cost_mean, loss_value, step_diagnostics = step_forward()
        (total.sum() if total.dim() else total).backward()  # replicas are independent: sum their losses
        optimizer.step()
        with torch.no_grad():
            cost_sum.add_(cost_mean)
            loss_sum.add_(loss_value.detach())
            bad.logical_or_(~torch.isfinite(total.detach()))
        return step_diagnostics

    def eager_step() -> dict[str, Any]:
        optimizer.zero_grad(set_to_none=True)
        return train_step()

    graph = CudaGraphStep(device) if mode == "graph" else None
    rebound: list[str] = []  # state the last warm-up step rebound: a replayed graph would freeze it

    def run_step() -> dict[str, Any]:
        if graph is None:
            return eager_step()
        if graph.captured:
            return graph.replay()
        if step != GRAPH_WARMUP - 1:
            return graph.warmup(eager_step)
        before = model.state_ids()
        out = graph.warmup(eager_step, check=True)
        rebound.extend(changed(before, model.state_ids()))
        return out

    if batched:
        try:
            model.probe()
        except Exception as e:
            raise CannotBatch(f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}") from e
    measure_gradient(0, 0)  # also resets the CUDA peak, so the run's peak starts here
    start = time.perf_counter()
    model.train()
    while alive:
        step_diagnostics = run_step()
        if schedule is not None:
            step_lr = task_lr * lr_factor(step)  # the rate this step used (from the schedule: no sync)
            schedule.step()
        step += 1
        window += 1
        if step == 1:  # includes torch.compile's compilation under --accel compile
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            first_step = time.perf_counter() - start
        elapsed = time.perf_counter() - start
        finished = (max_steps is not None and step >= max_steps) or (deadline is not None and elapsed >= deadline)
        due = [k for k in (step, END if finished else None) if k in checkpoints]
        if due:
            check_finite(step)  # never measure (or crash) on parameters that are already NaN
            paused = time.perf_counter()
            for key in due:
                measure_gradient(key, step)
            start += time.perf_counter() - paused  # measuring does not count as training
        evaluate_now = finished or step % spec.eval_every == 0
        if finished or evaluate_now or step % LOG_EVERY == 0:
            check_finite(step)
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # so the clock covers the queued work (read here only)
                elapsed = time.perf_counter() - start
            costs, losses = cost_sum.tolist(), loss_sum.tolist()
            rows = {}
            for r in alive:
                diagnostics[r] = _floats(_replica(step_diagnostics, r, batched))
                rows[r] = {"step": step, "seconds": round(elapsed, 4), "train_cost": costs[r] / window,
                           "loss": losses[r] / window, **diagnostics[r]}
                if schedule is not None:
                    rows[r]["lr"] = step_lr
            cost_sum.zero_()
            loss_sum.zero_()
            window = 0
            if evaluate_now:
                model.sync()
                model.train(False)
                for r in list(alive):
                    with torch.random.fork_rng(devices=devices):  # evaluation never perturbs training's RNG
                        metrics[r] = model.pairs[r][0].evaluate()
                    if all(math.isfinite(v) for v in metrics[r].values()):
                        rows[r].update({f"test/{k}": v for k, v in metrics[r].items()})
                    else:
                        end(r, f"non-finite test metrics at step {step}: {metrics[r]}")
                model.train()
                start = time.perf_counter() - elapsed  # evaluation time does not count as training
                shown = [metrics[r][main] for r in alive]
                progress.update(step, elapsed, {main: sum(shown) / len(shown)} if shown else None)
            else:
                progress.update(step, elapsed)
            for r in alive:
                histories[r].write(rows[r])
        if finished or not alive:
            break
        if graph is not None and not graph.captured and step >= GRAPH_WARMUP:
            paused = time.perf_counter()
            try:
                if rebound:
                    raise RuntimeError(f"the step rebinds {rebound[0]!r} instead of updating it in place, "
                                       f"which a replay would freeze")
                graph.capture(train_step, optimizer)
            except Exception as e:  # e.g. a host sync inside the step: say so, and go on eagerly
                graph = None
                optimizer.zero_grad(set_to_none=True)
                accel.update(used="none", reason=f"graph: capture failed after step {step} "
                             f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); eager from there")
            capture_seconds = time.perf_counter() - paused  # stays on the training clock: the path's own cost
    train_seconds = elapsed
    if device.type == "cuda":
        peak = max(peak_cuda, torch.cuda.max_memory_allocated(device)) / 2**20
        kind = "cuda_max_allocated (training only)"
    else:
        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_process_peak"
    cost = {**({"replicas": n} if batched else {}),  # a batched record's figures are its whole batch's
            "steps": step, "steps_per_s": step / train_seconds if train_seconds > 0 else None,
            "train_seconds": train_seconds, "first_step_seconds": first_step, "capture_seconds": capture_seconds,
            "peak_memory_mb": peak, "peak_memory_kind": kind}
    return [ended[r] if r in ended else
            (metrics[r], {"cost_evals_per_step": diagnostics[r].get("cost_evals"), **cost}, diagnostics[r],
             gradient[r]) for r in range(n)]


def _replica(diagnostics: dict[str, Any], r: int, batched: bool) -> dict[str, Any]:
    """Replica ``r``'s diagnostics: batched tensors carry a leading replica dim."""
    if not batched:
        return diagnostics
    return {k: v[r] if isinstance(v, torch.Tensor) else v for k, v in diagnostics.items()}


END = -1  # checkpoint key: after the last step of a seconds budget


def _checkpoint_steps(spec: RunSpec) -> dict[int, list[float]]:
    """Step -> checkpoint fractions measured after that step (0: before training).

    A seconds budget has no known middle: only its start (0) and end (1) are measured.
    """
    if spec.grad is None:
        return {}
    total = spec.budget.get("steps")
    out: dict[int, list[float]] = {}
    for fraction in spec.grad["checkpoints"]:
        if total is not None:
            at = round(fraction * total)
        elif fraction in (0.0, 1.0):
            at = 0 if fraction == 0 else END
        else:
            continue
        out.setdefault(at, []).append(fraction)
    return out


def _checkpoint_label(fraction: float) -> str:
    return {0.0: "start", 0.5: "middle", 1.0: "end"}.get(fraction, f"{fraction:g}")


def _finished(spec: RunSpec, runs_dir: str | Path, force: bool) -> tuple[Path, dict[str, Any] | None]:
    """(where the spec's record goes, its finished record to reuse unless ``force``)."""
    path = records.record_path(runs_dir, spec.task_cls.name, spec.estimator_cls.name, spec.run_id)
    if force:
        return path, None
    try:
        existing = records.load_finished(path)
    except records.CorruptRecord as e:
        print(f"gradbench: re-running over a corrupt record: {e}", file=sys.stderr)
        return path, None
    if existing is not None:
        existing["reused"] = True
        existing["path"] = os.fspath(path)
    return path, existing


class _Discard:
    """History of a replica whose record already exists: trained again with its batch, logged nowhere."""

    def write(self, row: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass

    def discard(self) -> None:
        pass


def execute(spec: RunSpec, device: str = "auto", runs_dir: str | Path = "runs", force: bool = False,
            progress: bool = False, argv: list[str] | None = None, accel: str = "auto") -> dict[str, Any]:
    """Run ``spec`` (or reuse its finished record) and return the record. Never raises for a failed run.

    ``accel`` chooses how steps execute (not what they compute), so like the device it is not part of
    the run id; the record's ``accel`` block says which path ran and why. A spec from a batched run
    (``seed_batch``) is re-run with its whole batch, since its random numbers depend on the batch.
    """
    if spec.seed_batch is not None:
        specs = [replace(spec, seed=s, seed_batch=None) for s in spec.seed_batch]
        done = execute_seeds(specs, device, runs_dir, force, progress, argv, accel, batch=True)
        return done[spec.seed_batch.index(spec.seed)]
    return _execute([spec], device, runs_dir, force, progress, argv, accel)[0]


def execute_seeds(specs: list[RunSpec], device: str = "auto", runs_dir: str | Path = "runs", force: bool = False,
                  progress: bool = False, argv: list[str] | None = None, accel: str = "auto",
                  batch: bool = False) -> list[dict[str, Any]]:
    """Run one spec at several seeds: one after another, or (``batch``) all at once as a SeedBatch whose
    records name the batch (``seed_batch``). Falls back to one after another, saying why on stderr,
    where the estimator cannot be batched."""
    if not batch or not specs:
        return [_execute([s], device, runs_dir, force, progress, argv, accel)[0] for s in specs]
    base = {**specs[0].as_dict(), "seed": None}
    seeds = tuple(s.seed for s in specs)
    if any({**s.as_dict(), "seed": None} != base for s in specs) or len(set(seeds)) < len(seeds):
        raise UsageError("batched seeds train one spec at several distinct seeds; these specs differ otherwise")
    why = None if specs[0].estimator_cls.batchable else f"estimator {specs[0].estimator_cls.name!r} is not batchable"
    if why is None:
        try:
            return _execute([replace(s, seed_batch=seeds) for s in specs], device, runs_dir, force, progress,
                            argv, accel)
        except CannotBatch as e:
            why = f"the batched step failed ({e})"
    print(f"gradbench: seeds {','.join(map(str, seeds))} run one after another: {why}", file=sys.stderr)
    return execute_seeds(specs, device, runs_dir, force, progress, argv, accel, batch=False)


def _execute(specs: list[RunSpec], device: str, runs_dir: str | Path, force: bool, progress: bool,
             argv: list[str] | None, accel: str) -> list[dict[str, Any]]:
    """Train ``specs`` (one spec, or a seed batch) and write their records; finished ones are reused (a
    batch with any left to run trains whole, and writes only those). Raises CannotBatch only before any
    record is written."""
    dev = pick_device(device)
    accel_used, accel_reason = pick_accel(accel, specs[0].estimator_cls, dev)
    found = [_finished(s, runs_dir, force) for s in specs]
    if all(existing is not None for _, existing in found):
        return [existing for _, existing in found]
    prov = {**provenance(dev, argv), "start_utc": _utc()}
    accel_block = {"requested": accel, "used": accel_used, "reason": accel_reason}
    histories = [records.HistoryWriter(records.history_path(path)) if existing is None else _Discard()
                 for path, existing in found]
    bar = Progress(specs[0], progress, len(specs))
    outcomes: list[Any]
    try:
        outcomes = train(specs, dev, histories, bar, accel_block, batched=specs[0].seed_batch is not None)
    except CannotBatch:
        for h in histories:
            h.discard()
        raise
    except (KeyboardInterrupt, SystemExit):
        raise  # no record: only complete runs are written (``finally`` still closes the history)
    except Exception as e:
        outcomes = [e] * len(specs)
        for h in histories:
            h.write({"traceback": traceback.format_exc()})
    finally:
        for h in histories:
            h.close()
        bar.close()
    prov["end_utc"] = _utc()
    done = []
    for spec, (path, existing), outcome in zip(specs, found, outcomes, strict=True):
        if existing is not None:
            done.append(existing)
            continue
        record: dict[str, Any] = {"schema_version": records.SCHEMA_VERSION, "run_id": spec.run_id, "status": "ok",
                                  "error": None, **spec.as_dict(), "metrics": {},
                                  "main_metric": spec.task_cls.main_metric, "gradient": {}, "cost": {},
                                  "diagnostics": {}, "eval_every": spec.eval_every, "accel": dict(accel_block)}
        if isinstance(outcome, Diverged):
            record["status"], record["error"] = "diverged", str(outcome)
        elif isinstance(outcome, Exception):
            record["status"], record["error"] = "failed", f"{type(outcome).__name__}: {outcome}"
        else:
            metrics, cost, diagnostics, gradient = outcome
            record["metrics"] = {k: {"value": v, "higher_is_better": spec.task_cls.metrics[k]}
                                 for k, v in metrics.items()}
            record["cost"], record["diagnostics"] = cost, diagnostics
            record["gradient"] = {"checkpoints": gradient} if gradient else {}
        record["provenance"] = prov
        records.atomic_write_json(path, record)
        record["path"] = os.fspath(path)
        done.append(record)
    return done
