"""The training loop: one optimizer over a (task, estimator) pair, or over a seed batch of them.

The step has no per-step host synchronisation: running sums and a non-finite flag stay on the device
and are read every ``LOG_EVERY`` steps or at an evaluation, so the same loop can be graph-captured.
The loop's parts are named for what they do: ``step`` (one optimizer step on the chosen execution
path), ``log`` (read the device sums, evaluate when due, write history rows), ``check_finite``,
``measure_gradients`` (the gradient-statistics checkpoints) and ``capture`` (the CUDA-graph switch).
"""

from __future__ import annotations

import contextlib
import copy
import math
import resource
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from gradbench import execution, gradstats, trajectory
from gradbench import threads as thread_policy
from gradbench.errors import UsageError
from gradbench.replicas import Pair, SeedBatch, changed
from gradbench.spec import RunSpec

LOG_EVERY = 50
END = -1  # checkpoint key: after the last step of a seconds budget

Result = tuple[dict[str, float], dict[str, Any], dict[str, float], list[dict[str, Any]], str | None]


class Diverged(RuntimeError):
    """A replica whose loss or test metrics became non-finite: its run ends with status "diverged"."""


class CannotBatch(RuntimeError):
    """A trial batched step failed (e.g. an estimator that differentiates inside its forward, which vmap
    does not support): the seeds must run one after another."""


class BudgetTooSmall(UsageError):
    """An ``--evals`` budget smaller than one step of the estimator: refused before training, no record."""


class Progress:
    """A tqdm bar on stderr (steps or seconds), showing the live main metric (its mean over a seed batch),
    and the phase the run is in: training, or, below it on a second bar with its own count and ETA, an
    evaluation or the gradient statistics (the sampled reference gradient alone can take longer than a
    short run's training, and a bar frozen at "0/500" meanwhile says nothing)."""

    def __init__(self, spec: RunSpec, enabled: bool, replicas: int = 1) -> None:
        from tqdm import tqdm

        self.seconds = spec.budget.get("seconds")
        total = self.seconds if self.seconds else spec.budget.get("steps")  # evals: set once steps are known
        desc = f"{spec.task_cls.name}/{spec.estimator_cls.label_for(spec.estimator_config)}"
        desc += f" x{replicas} seeds" if replicas > 1 else ""
        fmt = "{l_bar}{bar}| {n:.0f}/{total:.0f}s [{elapsed}<{remaining}{postfix}]" if self.seconds else None
        self.bar = tqdm(total=total, desc=f"{desc} [training]", file=sys.stderr, disable=not enabled, leave=False,
                        dynamic_ncols=True, bar_format=fmt, unit="step")
        self.desc, self.enabled, self.done = desc, enabled, 0.0
        self.sub: Any = None

    def phase(self, name: str, total: int | None = None, unit: str = "draw") -> Callable[[int], None]:
        """Start the phase ``name`` (ending the one before): the main bar names it, and a second bar counts
        its ``total`` units with their own ETA. Returns the second bar's tick."""
        from tqdm import tqdm

        self.end_phase()
        self.bar.set_description_str(f"{self.desc} [{name}]")
        self.sub = tqdm(total=total, desc=f"  {name}", file=sys.stderr, disable=not self.enabled, leave=False,
                        position=1, dynamic_ncols=True, unit=unit)
        return self.sub.update

    def end_phase(self) -> None:
        """Back to training (the main bar's own phase)."""
        if self.sub is not None:
            self.sub.close()
            self.sub = None
            self.bar.set_description_str(f"{self.desc} [training]")
            self.bar.unpause()  # the phase's time is not training's: keep it out of the training bar's rate and ETA

    def set_total(self, steps: int) -> None:
        self.bar.total = steps
        self.bar.refresh()

    def update(self, step: int, elapsed: float, metrics: dict[str, float] | None = None) -> None:
        """Move to ``step`` showing ``metrics``, the evaluation just made (at the end: the run's final one)."""
        pos = min(elapsed, self.seconds) if self.seconds else step
        if metrics:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()}, refresh=False)
        self.bar.update(pos - self.done)
        self.done = pos
        if metrics:  # tqdm skips redraws within 0.1 s of the last: an evaluation's figure is always drawn
            self.bar.refresh()

    def close(self) -> None:
        self.end_phase()
        self.bar.close()


class Clock:
    """Training time: measuring and evaluating pause it, so steps/s and a seconds budget count training only."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def exclude_since(self, t0: float) -> None:
        self.start += time.perf_counter() - t0


def checkpoint_steps(spec: RunSpec, total: int | None) -> dict[int, list[float]]:
    """Step -> checkpoint fractions measured after that step (0: before training), for a run of ``total``
    steps. A seconds budget (``total`` None) has no known middle: only its start (0) and end (1)."""
    if spec.grad is None:
        return {}
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


def checkpoint_label(fraction: float) -> str:
    return {0.0: "start", 0.5: "middle", 1.0: "end"}.get(fraction, f"{fraction:g}")


def train(specs: list[RunSpec], device: torch.device, histories: list[Any], progress: Progress,
          accel: dict[str, str] | None = None, batched: bool = False,
          threads: dict[str, Any] | None = None) -> list[Result | Diverged]:
    """Train one spec or (``batched``) one spec at several seeds as a SeedBatch. Returns, per spec,
    (final metrics, cost block, last diagnostics, gradient checkpoints) or the Diverged error that ended
    it (a replica that diverges stops; the others go on).

    ``threads["threads"]`` None asks for the thread probe (``--threads auto``): it runs once the model is
    built, sets torch's count for the rest of the run and writes the choice and its timings back.

    ``accel["used"]`` picks how steps execute (see ``execution.pick_accel``); the loop updates ``accel``
    if it has to fall back to eager. ``compile`` runs each step's forward through ``torch.compile`` with
    inductor's ``fallback_random`` on, so the random numbers are eager's. ``graph`` captures the whole
    step in a CUDA graph after ``GRAPH_WARMUP`` eager steps and replays it; evaluation, logging, NaN
    checks and gradient statistics run between replays. Both compute what eager computes.
    """
    accel = accel if accel is not None else {"used": "none"}
    trainer = Trainer(specs, device, histories, progress, accel, batched)
    if threads is not None and threads.get("threads") is None:
        trainer.probe_threads(threads)
    if accel["used"] != "compile":
        return trainer.run()
    import torch._inductor.config as inductor_config

    with inductor_config.patch(fallback_random=True):
        return trainer.run()


class Trainer:
    """The state of one training run (or seed batch) and the named parts of its loop."""

    def __init__(self, specs: list[RunSpec], device: torch.device, histories: list[Any], progress: Progress,
                 accel: dict[str, str], batched: bool) -> None:
        self.specs, self.spec, self.device = specs, specs[0], device  # the specs differ in their seed only
        self.rng_devices = [device] if device.type == "cuda" else []  # what forked RNGs must cover
        self.histories, self.progress, self.accel, self.batched = histories, progress, accel, batched
        self.model = self._build_model()
        # per replica; a seed batch draws its data together from the first replica's stream: no fingerprint
        self.fingerprints = [None] * len(specs) if batched else [self.model.pairs[0][0].data_fingerprint()]
        self.evals_per_step = self._evals_per_step() if "evals" in self.spec.budget else None
        self.max_steps = self._max_steps()
        if self.evals_per_step is not None and self.max_steps is not None:
            progress.set_total(self.max_steps)
        self.optimizer, self.schedule, self.lr_factor = self._build_optimizer()
        self.ema_variance = trajectory.for_model(self.model)  # grad/ema_variance, when the task asks for it
        n = self.n = len(specs)
        self.cost_sum = torch.zeros(n, device=device)  # per replica, summed over the steps since the last log
        self.loss_sum = torch.zeros(n, device=device)
        self.bad = torch.zeros(n, dtype=torch.bool, device=device)  # non-finite loss since the last check
        self.window = 0
        self.step_count = 0
        self.alive = list(range(n))
        self.ended: dict[int, Diverged] = {}
        self.diagnostics: list[dict[str, Any]] = [{} for _ in specs]
        self.metrics: list[dict[str, float]] = [{} for _ in specs]
        self.gradient: list[list[dict[str, Any]]] = [[] for _ in specs]
        self.checkpoints = checkpoint_steps(self.spec, self.max_steps)
        self.peak_cuda = 0
        self.first_step = 0.0
        self.capture_seconds: float | None = None
        self.graph = execution.CudaGraphStep(device) if accel["used"] == "graph" else None
        self.rebound: list[str] = []  # state the checked warm-up step rebound: a replayed graph would freeze it
        self.step_lr: float | None = None
        mode = accel["used"]
        self.step_forward = torch.compile(self.model.forward) if mode == "compile" else self.model.forward

    def _build_model(self) -> Pair | SeedBatch:
        pairs = []
        for s in self.specs:  # each replica is built under its own seed, as its sequential run would be
            execution.seed_everything(s.seed)
            task = s.task_cls(s.task_config, self.device)
            task.to(self.device)
            pairs.append((task, s.estimator_cls(task.node, s.estimator_config).to(self.device)))
        # The estimator's noise: its own stream, the same for every estimator at this seed, whatever their
        # construction drew. A seed batch draws batched from one stream of each kind, which the vmapped step
        # takes from the first replica's task: both are then the last seed's, so that a replica's share of
        # the draws does not depend on the seeds before it.
        last = self.specs[-1].seed
        torch.manual_seed(execution.stream_seed(last, "noise"))
        if self.batched:
            pairs[0][0].data_generator.manual_seed(execution.stream_seed(last, "data"))
        return SeedBatch(pairs) if self.batched else Pair(*pairs[0])

    def _evals_per_step(self) -> float:
        """Cost evaluations per example of one step (``diagnostics["cost_evals"]``, which the conformance
        suite checks), from one forward of a copy of the estimator on the task's fixed batch under a forked
        RNG: nothing that trains is touched."""
        task, estimator = self.model.pairs[0]
        with torch.random.fork_rng(devices=self.rng_devices):
            logits, cost_fn = task.fixed_batch()
            evals = copy.deepcopy(estimator)(logits, cost_fn).diagnostics.get("cost_evals")
        evals = float(evals) if evals is not None else math.nan
        if not evals > 0:
            raise ValueError(f"an --evals budget needs the estimator to report diagnostics['cost_evals'] > 0, "
                             f"got {evals}")
        return evals

    def _max_steps(self) -> int | None:
        """The step budget: given, or from an evals budget (as many whole steps as the evaluations allow;
        BudgetTooSmall when they do not allow one); None for a seconds budget."""
        if self.evals_per_step is not None:
            evals, per_step = self.spec.budget["evals"], self.evals_per_step
            if evals < per_step:  # one step would overspend the budget its record claims
                who = self.spec.estimator_cls.label_for(self.spec.estimator_config)
                raise BudgetTooSmall(f"--evals {evals} is less than one step of {who!r}, "
                                     f"which evaluates the cost {per_step:g} times per example per step; "
                                     f"give --evals {math.ceil(per_step)} or more")
            return int(evals // per_step)
        return self.spec.budget.get("steps")

    def _build_optimizer(self) -> tuple[torch.optim.Optimizer, Any, Callable[[int], float] | None]:
        task_lr = self.spec.task_config.lr
        task_params, own = self.model.parameter_groups()
        groups = [{"params": task_params, "lr": task_lr}]
        groups += [{"params": self.model.task_tensors(g.names), "lr": g.lr, "optimizer": g.optimizer}
                   for g in self.model.pairs[0][0].optimizer_groups()]  # the task's own rules (ParamGroup)
        if own:
            groups.append({"params": own, "lr": getattr(self.spec.estimator_config, "lr", None) or task_lr})
        optimizer = execution.make_optimizer(groups, self.device, graph=self.accel["used"] == "graph")
        if self.spec.budget.get("lr_schedule") != "cosine":
            return optimizer, None, None
        factor = execution.cosine(self.max_steps)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor), factor

    def probe_threads(self, block: dict[str, Any]) -> None:
        """``--threads auto``: time a few gradient draws (forward and backward on the task's fixed batch, on a
        copy of the estimator under a forked RNG: nothing that trains moves) at each candidate count, use the
        fastest (``gradbench.threads.probe``) and record it in ``block``."""
        task, estimator = self.model.pairs[0]
        seed = self.spec.seed + 31

        def work() -> None:
            gradstats.gradient_draws(estimator, task, 4, seed, batched=False)

        n, timing = thread_policy.probe(work, block["probe_up_to"])
        torch.set_num_threads(n)
        block["threads"] = n
        block["probe_seconds"] = {str(k): round(v, 6) for k, v in timing.items()}

    # -------------------------------------------------------------------------------- the loop

    def run(self) -> list[Result | Diverged]:
        if self.batched:
            try:
                self.model.probe()
            except Exception as e:
                raise CannotBatch(f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}") from e
        self.measure_gradients(0, 0)  # also resets the CUDA peak, so the run's peak starts here
        self.log(0, 0.0, {}, evaluate=True)  # learning curves start at the initial parameters
        self.clock = Clock()
        self.model.train()
        elapsed = 0.0
        while self.alive:
            step_diagnostics = self.step()
            elapsed = self.clock.elapsed()
            step = self.step_count
            finished = self._finished(step, elapsed)
            due = [k for k in (step, END if finished else None) if k in self.checkpoints]
            if due:
                self.check_finite(step)  # never measure (or crash) on parameters that are already NaN
                t0 = time.perf_counter()
                for key in due:
                    self.measure_gradients(key, step)
                self.clock.exclude_since(t0)  # measuring does not count as training
            evaluate = finished or step % self.spec.eval_every == 0
            if evaluate or step % LOG_EVERY == 0:
                elapsed = self.log(step, elapsed, step_diagnostics, evaluate)
            if finished or not self.alive:
                break
            self.capture()
        return self.results(elapsed)

    def _finished(self, step: int, elapsed: float) -> bool:
        deadline = self.spec.budget.get("seconds")
        return (self.max_steps is not None and step >= self.max_steps) or (deadline is not None and elapsed >= deadline)

    def step(self) -> dict[str, Any]:
        """One optimizer step on the chosen path (eager, compiled forward, CUDA-graph warm-up or replay)."""
        graph = self.graph
        if graph is None:
            out = self._eager_step()
        elif graph.captured:
            out = graph.replay()
        elif self.step_count != execution.GRAPH_WARMUP - 1:
            out = graph.warmup(self._eager_step)
        else:
            before = self.model.state_ids()
            out = graph.warmup(self._eager_step, check=True)
            self.rebound.extend(changed(before, self.model.state_ids()))
        if self.schedule is not None:
            self.step_lr = self.spec.task_config.lr * self.lr_factor(self.step_count)  # no sync: from the schedule
            self.schedule.step()
        self.step_count += 1
        self.window += 1
        if self.step_count == 1:  # includes torch.compile's compilation under --accel compile
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.first_step = self.clock.elapsed()
        return out

    def _train_step(self) -> dict[str, Any]:
        """Forward, backward, Adam, and the running sums: all on the device, no host sync (capturable)."""
        total, cost_mean, loss_value, step_diagnostics = self.step_forward()
        (total.sum() if total.dim() else total).backward()  # replicas are independent: sum their losses
        if self.ema_variance is not None:
            self.ema_variance.update()
        self.optimizer.step()
        with torch.no_grad():
            self.cost_sum.add_(cost_mean)
            self.loss_sum.add_(loss_value.detach())
            self.bad.logical_or_(~torch.isfinite(total.detach()))
        return step_diagnostics

    def _eager_step(self) -> dict[str, Any]:
        self.optimizer.zero_grad(set_to_none=True)
        return self._train_step()

    def capture(self) -> None:
        """After the warm-up steps, capture the step in a CUDA graph; on failure go on eagerly, saying why."""
        if self.graph is None or self.graph.captured or self.step_count < execution.GRAPH_WARMUP:
            return
        t0 = time.perf_counter()
        try:
            if self.rebound:
                raise RuntimeError(f"the step rebinds {self.rebound[0]!r} instead of updating it in place, "
                                   f"which a replay would freeze")
            self.graph.capture(self._train_step, self.optimizer,
                               generators=[task.data_generator for task, _ in self.model.pairs[:1]])
        except Exception as e:  # e.g. a host sync inside the step
            self.graph = None
            self.optimizer.zero_grad(set_to_none=True)
            first = str(e).splitlines()[0] if str(e) else ""
            self.accel.update(used="none", reason=f"graph: capture failed after step {self.step_count} "
                              f"({type(e).__name__}: {first}); eager from there")
        self.capture_seconds = time.perf_counter() - t0  # stays on the training clock: the path's own cost

    # ------------------------------------------------------------------------------ the parts

    def end(self, r: int, message: str) -> None:
        self.ended[r] = Diverged(message)
        self.alive.remove(r)

    def check_finite(self, at: int) -> None:
        """End every replica whose loss has been non-finite (NaN/inf) since the last check."""
        flags = self.bad.tolist()
        for r in [r for r in self.alive if flags[r]]:
            self.end(r, f"non-finite loss (NaN/inf) at or before step {at}; "
                        f"try a smaller learning rate or another estimator config")

    def measure_gradients(self, key: int, at_step: int) -> None:
        """Measure the checkpoints due at ``key``; a failed measurement is recorded, never fatal."""
        with self._outside_peak_memory():
            self.model.sync()
            for fraction in self.checkpoints.pop(key, []):
                label = checkpoint_label(fraction)
                for r in self.alive:
                    task, estimator = self.model.pairs[r]
                    who = f" seed {self.specs[r].seed}" if self.n > 1 else ""

                    def phase(name: str, total: int, label: str = label, who: str = who) -> Callable[[int], None]:
                        return self.progress.phase(f"gradient statistics ({label}{who}): {name}", total)

                    try:
                        stats = gradstats.measure(estimator, task, self.spec.grad["draws"],
                                                  seed=self.specs[r].seed + 7919, label=label, step=at_step,
                                                  phase=phase)
                    except Exception as e:
                        stats = {"checkpoint": label, "step": at_step, "error": f"{type(e).__name__}: {e}"}
                    self.gradient[r].append(stats)
            self.progress.end_phase()

    @contextlib.contextmanager
    def _outside_peak_memory(self) -> Iterator[None]:
        """A measurement's own CUDA memory must not count as the run's (training-only) peak: note the peak
        so far, and start a fresh one afterwards."""
        if self.device.type == "cuda":
            self.peak_cuda = max(self.peak_cuda, torch.cuda.max_memory_allocated(self.device))
        yield
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def log(self, step: int, elapsed: float, step_diagnostics: dict[str, Any], evaluate: bool) -> float:
        """Read the device sums into one history row per replica (evaluating when due); returns the
        training time so far (after a CUDA sync, so it covers the queued work)."""
        self.check_finite(step)
        if self.device.type == "cuda" and step > 0:
            torch.cuda.synchronize(self.device)  # so the clock covers the queued work (read here only)
            elapsed = self.clock.elapsed()
        sums = self._read_sums() if step > 0 else None
        rows = {r: self._train_row(r, step, elapsed, step_diagnostics, sums) for r in self.alive}
        if self.ema_variance is not None and step > 0:
            ema = self.ema_variance.read()
            for r in self.alive:
                rows[r]["grad/ema_variance"] = ema[r]
        if evaluate:
            for r, metrics in self.evaluate(step).items():
                rows[r].update({f"test/{k}": v for k, v in metrics.items()})
            for r, log10_var in self.trace_variance(step).items():
                rows[r]["grad/log10_variance"] = log10_var
            self.progress.end_phase()
            if step > 0:
                self.clock.start = time.perf_counter() - elapsed  # evaluation time does not count as training
            main = self.spec.task_cls.main_metric
            shown = [self.metrics[r][main] for r in self.alive]
            self.progress.update(step, elapsed, {main: sum(shown) / len(shown)} if shown else None)
        else:
            self.progress.update(step, elapsed)
        for r in self.alive:
            self.histories[r].write(rows[r])
        return elapsed

    def _read_sums(self) -> tuple[list[float], list[float], int]:
        """(cost sums, loss sums, steps they cover) per replica, read once from the device, then reset."""
        sums = (self.cost_sum.tolist(), self.loss_sum.tolist(), self.window)
        self.cost_sum.zero_()
        self.loss_sum.zero_()
        self.window = 0
        return sums

    def _train_row(self, r: int, step: int, elapsed: float, step_diagnostics: dict[str, Any],
                   sums: tuple[list[float], list[float], int] | None) -> dict[str, Any]:
        """Replica ``r``'s history row: its training figures since the last row (none at step 0)."""
        row: dict[str, Any] = {"step": step, "seconds": round(elapsed, 4)}
        if sums is None:
            return row
        costs, losses, window = sums
        self.diagnostics[r] = _floats(_replica(step_diagnostics, r, self.batched))
        row.update({"train_cost": costs[r] / window, "loss": losses[r] / window, **self.diagnostics[r]})
        if self.step_lr is not None:
            row["lr"] = self.step_lr
        return row

    def evaluate(self, step: int) -> dict[int, dict[str, float]]:
        """Test metrics of every live replica, under a forked RNG (evaluation never perturbs training);
        a replica with non-finite metrics ends as diverged."""
        self.model.sync()
        self.model.train(False)
        out = {}
        tick = self.progress.phase("evaluation", len(self.alive), unit="seed")
        for r in list(self.alive):
            with torch.random.fork_rng(devices=self.rng_devices):
                self.metrics[r] = self.model.pairs[r][0].evaluate()
            tick(1)
            if all(math.isfinite(v) for v in self.metrics[r].values()):
                out[r] = self.metrics[r]
            else:
                self.end(r, f"non-finite test metrics at step {step}: {self.metrics[r]}")
        self.model.train()
        return out

    def trace_variance(self, step: int) -> dict[int, float | None]:
        """log10 gradient variance of each live replica from a few draws (when gradient statistics are
        on): the variance along training. Like evaluation it runs on copies under a forked RNG, so it
        never changes the trajectory; a failed measurement logs None."""
        if self.spec.grad is None:
            return {}
        out: dict[int, float | None] = {}
        tick = self.progress.phase("variance trace", len(self.alive), unit="seed")
        with self._outside_peak_memory():
            for r in self.alive:
                task, estimator = self.model.pairs[r]
                try:
                    out[r] = gradstats.trace_variance(estimator, task, seed=self.specs[r].seed + 104_729 + step)
                    tick(1)
                except Exception:
                    out[r] = None
        return out

    def results(self, train_seconds: float) -> list[Result | Diverged]:
        """Per replica: (metrics, cost block, diagnostics, gradient checkpoints, data fingerprint), or how it
        diverged."""
        if self.device.type == "cuda":
            peak = max(self.peak_cuda, torch.cuda.max_memory_allocated(self.device)) / 2**20
            kind = "cuda_max_allocated (training only)"
        else:
            peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_process_peak"
        step = self.step_count
        cost = {**({"replicas": self.n} if self.batched else {}),  # a batched record's figures are its batch's
                "steps": step, "steps_per_s": step / train_seconds if train_seconds > 0 else None,
                **({"evals": step * self.evals_per_step} if self.evals_per_step is not None else {}),
                "train_seconds": train_seconds, "first_step_seconds": self.first_step,
                "capture_seconds": self.capture_seconds, "peak_memory_mb": peak, "peak_memory_kind": kind}
        return [self.ended[r] if r in self.ended else
                (self.metrics[r], {"cost_evals_per_step": self.diagnostics[r].get("cost_evals"), **cost},
                 self.diagnostics[r], self.gradient[r], self.fingerprints[r]) for r in range(self.n)]


def _floats(d: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items()}


def _replica(diagnostics: dict[str, Any], r: int, batched: bool) -> dict[str, Any]:
    """Replica ``r``'s diagnostics: batched tensors carry a leading replica dim."""
    if not batched:
        return diagnostics
    return {k: v[r] if isinstance(v, torch.Tensor) else v for k, v in diagnostics.items()}
