"""Sweeps: a grid of independent runs, resumable and shardable, on a local process pool or Ray.

Resume needs no engine: every run has a deterministic id, finished records are skipped, failed and
corrupt ones re-run, and ``--shard i/N`` keeps the runs whose id falls in shard i. Backends share one
tiny interface, ``submit(fn, *args) -> concurrent.futures.Future``; Ray is imported only when chosen.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from gradbench import records
from gradbench.errors import UnsupportedError, UsageError
from gradbench.registry import list_estimators, list_tasks, load_plugin
from gradbench.spec import RunOptions, RunSpec, resolve, spec_from_record

# ------------------------------------------------------------------------------------------- grid


def split_specs(text: str) -> list[str]:
    """``"dab,gumbel:tau=0.5,hard=true,ste"`` -> ``["dab", "gumbel:tau=0.5,hard=true", "ste"]``.

    A comma-separated item with ``=`` but no ``:`` continues the previous spec's settings.
    """
    out: list[str] = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        if "=" in item and ":" not in item and out:
            out[-1] += "," + item
        else:
            out.append(item)
    return out


def parse_seeds(text: str) -> list[int]:
    """``"0-4"`` or ``"0,2,7"`` (or a mix) -> sorted unique seeds."""
    seeds: set[int] = set()
    reversed_range = None
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            lo, dash, hi = part.partition("-")
            if dash and int(hi) < int(lo):
                reversed_range = f"{int(lo)}-{int(hi)}", f"{int(hi)}-{int(lo)}"
            seeds.update(range(int(lo), int(hi) + 1) if dash else [int(lo)])
    except ValueError:
        raise UsageError(f"bad --seeds {text!r}; expected e.g. 0-4 or 0,1,5") from None
    if reversed_range:
        raise UsageError(f"bad --seeds {text!r}: the range {reversed_range[0]} is reversed; write {reversed_range[1]}")
    if not seeds or min(seeds) < 0:
        raise UsageError(f"bad --seeds {text!r}; expected non-negative seeds like 0-4")
    return sorted(seeds)


def parse_shard(text: str | None) -> tuple[int, int]:
    if not text:
        return 0, 1
    i, slash, n = text.partition("/")
    try:
        index, count = int(i), int(n)
    except ValueError:
        raise UsageError(f"bad --shard {text!r}; expected i/N with 0 <= i < N") from None
    if not slash or count < 1 or not 0 <= index < count:
        raise UsageError(f"bad --shard {text!r}; expected i/N with 0 <= i < N")
    return index, count


def in_shard(run_id: str, shard: tuple[int, int]) -> bool:
    return int(run_id, 16) % shard[1] == shard[0]


@dataclass
class Grid:
    specs: list[RunSpec]
    unsupported: list[str] = field(default_factory=list)  # one line per skipped (task, estimator) pair


def expand(tasks: str, estimators: str, seeds: list[int], preset: str = "quick", batch_seeds: bool = False,
           options: RunOptions | None = None, **option_values: Any) -> Grid:
    """The grid, in a stable order; pairs whose node the estimator cannot run are listed once. With
    ``batch_seeds`` each pair's seeds form one seed batch (trained at once by one worker), except for
    estimators that cannot be batched, whose seeds stay separate runs."""
    task_specs = list_tasks() if tasks == "all" else split_specs(tasks)
    est_specs = list_estimators() if estimators == "all" else split_specs(estimators)
    if not task_specs or not est_specs:
        raise UsageError("a sweep needs at least one task and one estimator")
    grid = Grid([])
    for t in task_specs:
        for e in est_specs:
            try:
                specs = [resolve(t, e, preset=preset, seed=s, options=options, **option_values) for s in seeds]
            except UnsupportedError as err:
                grid.unsupported.append(f"{t} x {e}: {err}")
                continue
            if batch_seeds and specs[0].estimator_tags.batchable:
                specs = [replace(spec, seed_batch=tuple(seeds)) for spec in specs]
            grid.specs.extend(specs)
    return grid


# -------------------------------------------------------------------------------------- executors


def _run_group(spec_dicts: list[dict[str, Any]], eval_every: int, device: str, runs_dir: str,
               plugins: list[str], accel: str = "auto", threads: dict[str, Any] | None = None
               ) -> list[dict[str, Any]]:
    """Worker entry point: rebuild the specs from plain data and run them: one run, or one seed batch, with
    the sweep's thread choice (``threads``: a ``ThreadChoice``'s fields, made once by the parent)."""
    for plugin in plugins:
        load_plugin(plugin)
    from gradbench.runner import execute_seeds
    from gradbench.threads import ThreadChoice

    choice = ThreadChoice(**threads) if threads is not None else None

    specs = [spec_from_record({**d, "run_id": records.run_id(d), "eval_every": eval_every}) for d in spec_dicts]
    seeds = specs[0].seed_batch
    if seeds is None:
        done = execute_seeds(specs, device=device, runs_dir=runs_dir, argv=["gradbench", "sweep"], accel=accel,
                             threads=choice)
    else:  # the whole batch trains (its finished records are kept); report the runs asked for
        whole = execute_seeds([replace(specs[0], seed=s, seed_batch=None) for s in seeds], device=device,
                              runs_dir=runs_dir, argv=["gradbench", "sweep"], accel=accel, batch=True,
                              threads=choice)
        done = [whole[seeds.index(s.seed)] for s in specs]
    return [{"run_id": r["run_id"], "status": r["status"], "error": r.get("error")} for r in done]


def _init_worker(queue: Any, parent: int) -> None:
    """Pool initializer: pin this worker to one GPU (if several; CUDA is not initialised yet), and stop
    with the sweep. Each run sets its own thread count (the sweep's ``ThreadChoice``, passed with it)."""
    gpu = queue.get()
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it cancels the pool
    signal.signal(signal.SIGTERM, _stop_worker)  # how the parent cancels a run in flight
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())  # not tqdm's default multiprocessing lock: a semaphore that a stopped worker
    # could not release (Python then warns of leaked semaphores at exit); a worker's bars are its own anyway
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _stop_worker(signum: int, frame: Any) -> None:
    """SIGTERM from a cancelling sweep: the run in flight leaves nothing behind (no record is written
    before a run ends; its history is discarded here), then the worker exits at once."""
    records.discard_open_histories()
    os._exit(128 + signum)


def _exit_with_parent(parent: int) -> None:
    """A worker whose sweep was killed (SIGKILL leaves no chance to clean up) stops at once: only the
    run in flight is lost (its record is never half-written), and no orphan keeps using the machine.
    ``parent`` comes from the sweep itself, so a worker orphaned while still starting up exits too."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


class LocalExecutor:
    """A spawn-based process pool, one run per task; with several GPUs, one GPU per worker."""

    def __init__(self, workers: int, gpus: int = 0) -> None:
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        for i in range(workers):
            queue.put(i % gpus if gpus > 1 else None)
        self.workers, self.queue = workers, queue
        self.pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                           initargs=(queue, os.getpid()))

    def submit(self, fn: Callable, *args: Any) -> cf.Future:
        return self.pool.submit(fn, *args)

    def shutdown(self, cancel: bool = False) -> None:
        """Wait for the pool to finish; or (``cancel``) stop it now: pending runs are cancelled, runs in flight
        are ended by SIGTERM (``_stop_worker``: no record, no history), and the pool is still shut down
        in full, so its queues release their semaphores (else Python warns of leaked ones at exit)."""
        if cancel:
            processes = list((getattr(self.pool, "_processes", None) or {}).values())
            for proc in processes:
                proc.terminate()
            for proc in processes:
                proc.join(timeout=10)
        self.pool.shutdown(wait=True, cancel_futures=cancel)
        self.queue.close()  # the GPU assignments' queue: its semaphores too
        self.queue.join_thread()


class RayExecutor:
    """Each run a Ray task with its CPU/GPU request; connects to ``address`` or starts a local Ray."""

    def __init__(self, address: str | None, workers: int, gpus_per_run: float = 0.0) -> None:
        try:
            import ray
        except ImportError:
            raise UsageError("the ray backend needs Ray: pip install 'gradbench[ray]'") from None
        self.ray, self.workers, self.gpus_per_run = ray, workers, gpus_per_run
        self.remotes: dict[Callable, Any] = {}
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"address": address} if address else {"num_cpus": workers}
            ray.init(include_dashboard=False, log_to_driver=False, **kwargs)

    def submit(self, fn: Callable, *args: Any) -> cf.Future:
        if fn not in self.remotes:  # one Ray task definition per function, made once
            self.remotes[fn] = self.ray.remote(num_cpus=1, num_gpus=self.gpus_per_run)(fn)
        return self.remotes[fn].remote(*args).future()

    def shutdown(self, cancel: bool = False) -> None:
        self.ray.shutdown()


# ------------------------------------------------------------------------------------------ sweep


@dataclass
class SweepResult:
    total: int
    skipped: int  # finished before this sweep
    ok: int = 0
    failed: int = 0  # failed or diverged
    errors: list[str] = field(default_factory=list)


def group_key(spec: RunSpec) -> str:
    """What one worker runs at once: the run itself, or its whole seed batch (an id over the spec without
    its seed)."""
    if spec.seed_batch is None:
        return spec.run_id
    return records.run_id({**spec.as_dict(), "seed": None})


def todo(grid: Grid, runs_dir: str, shard: tuple[int, int],
         paths: dict[str, int] | None = None) -> tuple[list[RunSpec], int, list[str]]:
    """(specs still to run in this shard, how many are finished, corrupt records found); ``paths``, when
    given, counts the finished records by the execution path (accel.used) that made them."""
    pending, finished, corrupt = [], 0, []
    for spec in grid.specs:
        if not in_shard(group_key(spec), shard):  # a seed batch stays in one shard
            continue
        # a seed batch whose first step could not be batched was run seed by seed: its ordinary records count
        candidates = [spec] + ([replace(spec, seed_batch=None)] if spec.seed_batch is not None else [])
        try:
            done = [found[1] for s in candidates if (found := s.finished_record(runs_dir)) is not None]
        except records.CorruptRecord as e:
            corrupt.append(str(e))
            done = []
        if done:
            finished += 1
            if paths is not None:
                used = (done[0].get("accel") or {}).get("used", "none")
                paths[used] = paths.get(used, 0) + 1
            continue
        pending.append(spec)
    return pending, finished, corrupt


def run_sweep(grid: Grid, runs_dir: str, executor: Any, device: str = "auto", shard: tuple[int, int] = (0, 1),
              plugins: list[str] | None = None, progress: bool = True, accel: str = "auto",
              threads: int | str | None = None) -> SweepResult:
    """Run what is left of the grid; KeyboardInterrupt cancels the rest (complete records stay). Each run
    uses ``gradbench.threads``' choice for the executor's worker count (default: one thread per worker)."""
    from tqdm import tqdm

    from gradbench.threads import choose

    paths: dict[str, int] = {}
    pending, finished, corrupt = todo(grid, runs_dir, shard, paths)
    _note_reused_paths(paths, grid, accel, device)
    result = SweepResult(total=len(pending) + finished, skipped=finished)
    for line in corrupt:
        print(f"gradbench: corrupt record, re-running: {line}", file=sys.stderr)
    groups: dict[str, list[RunSpec]] = {}  # one run each, or the pending runs of one seed batch together
    for spec in pending:
        groups.setdefault(group_key(spec), []).append(spec)
    choice = dataclasses.asdict(choose(threads, workers=getattr(executor, "workers", 1)))
    futures = {executor.submit(_run_group, [s.as_dict() for s in group], group[0].eval_every, device, runs_dir,
                               plugins or [], accel, choice): group for group in groups.values()}
    bar = tqdm(total=len(pending), desc="sweep", file=sys.stderr, disable=not progress or not pending, unit="run")
    start = time.perf_counter()
    try:
        for future in cf.as_completed(futures):
            group = futures[future]
            try:
                outcomes = future.result()
            except Exception as e:  # a worker that died (killed, out of memory), or a refusal: no record, counted
                error = str(e) if isinstance(e, UsageError) else f"worker died: {e}"
                outcomes = [{"run_id": s.run_id, "status": "failed", "error": error} for s in group]
            for spec, outcome in zip(group, outcomes, strict=True):
                if outcome["status"] == "ok":
                    result.ok += 1
                else:
                    result.failed += 1
                    result.errors.append(f"{spec.task_cls.name}/{spec.estimator_cls.label_for(spec.estimator_config)} "
                                         f"seed {spec.seed}: {outcome['status']}: {outcome['error']}")
            bar.set_postfix(done=result.ok, failed=result.failed,
                            remaining=len(pending) - result.ok - result.failed, refresh=False)
            bar.update(len(group))
    except KeyboardInterrupt:
        bar.close()
        executor.shutdown(cancel=True)
        raise
    bar.close()
    executor.shutdown()
    elapsed = time.perf_counter() - start
    if pending:
        print(f"gradbench: {len(pending)} runs in {elapsed:.1f} s ({60 * len(pending) / elapsed:.1f} runs/min)",
              file=sys.stderr)
    return result


def _note_reused_paths(paths: dict[str, int], grid: Grid, accel: str, device: str) -> None:
    """Finished records are reused as they are: say so when their steps/s came from another execution
    path than this sweep's (e.g. eager records in a ``--accel graph`` sweep)."""
    if not paths or not grid.specs:
        return
    from gradbench.execution import pick_accel, pick_device

    used, _ = pick_accel(accel, grid.specs[0].estimator_cls, pick_device(device))
    other = {p: n for p, n in paths.items() if p != used}
    if other:
        said = ", ".join(f"{n} with accel {p!r}" for p, n in sorted(other.items()))
        print(f"gradbench: reusing finished runs made on another execution path ({said}; this sweep: {used!r}); "
              f"their steps/s are from that path (delete them to re-measure)", file=sys.stderr)


def make_executor(backend: str, workers: int, address: str | None, device: str) -> Any:
    if workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    gpus = 0
    if device != "cpu":
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if backend == "local":
        return LocalExecutor(workers, gpus)
    if backend == "ray":
        return RayExecutor(address, workers, gpus_per_run=1.0 if gpus else 0.0)
    raise UsageError(f"unknown backend {backend!r}; use local or ray")
