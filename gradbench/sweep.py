"""Sweeps: a grid of independent runs, resumable and shardable, on a local process pool, Ray or Slurm.

Resume needs no engine: every run has a deterministic id, finished records are skipped, failed and
corrupt ones re-run, and ``--shard i/N`` keeps the runs whose id falls in shard i. Backends share one
tiny interface, ``submit(fn, *args) -> concurrent.futures.Future``, ``shutdown(cancel)`` and ``workers``;
Ray and submitit (Slurm) are imported only when chosen.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
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
               plugins: list[str], accel: str = "auto", log: str | None = None,
               threads: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Worker entry point: rebuild the specs from plain data and run them: one run, or one seed batch, with
    the sweep's loggers (``log``, as for ``gradbench run --log``) and thread choice (``threads``: a
    ``ThreadChoice``'s fields, made once by the parent)."""
    for plugin in plugins:
        load_plugin(plugin)
    from gradbench.runner import execute_seeds
    from gradbench.threads import ThreadChoice

    choice = ThreadChoice(**threads) if threads is not None else None

    specs = [spec_from_record({**d, "run_id": records.run_id(d), "eval_every": eval_every}) for d in spec_dicts]
    seeds = specs[0].seed_batch
    if seeds is None:
        done = execute_seeds(specs, device=device, runs_dir=runs_dir, argv=["gradbench", "sweep"], accel=accel,
                             threads=choice, log=log)
    else:  # the whole batch trains (its finished records are kept); report the runs asked for
        whole = execute_seeds([replace(specs[0], seed=s, seed_batch=None) for s in seeds], device=device,
                              runs_dir=runs_dir, argv=["gradbench", "sweep"], accel=accel, batch=True,
                              threads=choice, log=log)
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


SLURM_DEFAULTS = {"timeout_min": 60, "cpus_per_task": 1, "gpus_per_node": 0}
SLURM_GENERIC = {"timeout_min", "mem_gb", "cpus_per_task", "gpus_per_node", "nodes", "tasks_per_node", "name"}
SLURM_CLUSTERS = ("slurm", "local", "debug")


def slurm_parameters(text: str | None = None, partition: str | None = None, time_min: int | None = None,
                     cpus_per_task: int | None = None, gpus_per_node: int | None = None
                     ) -> tuple[str, dict[str, Any]]:
    """(cluster, submitit parameters) from ``--slurm KEY=VALUE,...`` and the dedicated flags (which win).

    Keys are submitit's: the shared ones (``timeout_min``, ``mem_gb``, ``cpus_per_task``, ``gpus_per_node``,
    ``nodes``, ``tasks_per_node``, ``name``) as they are, any other Slurm one with or without its ``slurm_``
    prefix (``account``, ``qos``, ``constraint``, ``partition``, ``array_parallelism``, ...). ``cluster=local``
    runs the jobs as local processes (submitit's LocalExecutor: for trying a sweep out without Slurm)."""
    params: dict[str, Any] = dict(SLURM_DEFAULTS, name="gradbench")
    cluster = "slurm"
    for item in filter(None, (t.strip() for t in (text or "").split(","))):
        key, eq, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or not key:
            raise UsageError(f"bad --slurm item {item!r}; expected KEY=VALUE,... (e.g. partition=gpu,mem_gb=16)")
        if key == "cluster":
            if value not in SLURM_CLUSTERS:
                raise UsageError(f"bad --slurm cluster={value!r}; use one of {', '.join(SLURM_CLUSTERS)}")
            cluster = value
            continue
        if key not in SLURM_GENERIC and not key.startswith("slurm_"):
            key = f"slurm_{key}"
        params[key] = value.strip() if key == "name" else _slurm_value(value.strip())
    flags = {"slurm_partition": partition, "timeout_min": time_min, "cpus_per_task": cpus_per_task,
             "gpus_per_node": gpus_per_node}
    params.update({k: v for k, v in flags.items() if v is not None})
    return cluster, params


def _slurm_value(text: str) -> Any:
    """``4`` -> 4, ``0.5`` -> 0.5, ``true`` -> True, anything else (``1:00:00``, ``16G``) as written."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _job_error(e: Exception) -> str:
    """One line of a submitit job error: the job's own exception (its traceback's last line), else the
    first line (e.g. a job that timed out or was killed: "... has not produced any output (state: TIMEOUT)")."""
    text = str(e).split("You can check full logs", 1)[0]
    lines = [line.strip() for line in text.splitlines() if line.strip().strip("-")]
    if not lines:
        return type(e).__name__
    return lines[-1] if "Traceback" in text else lines[0]


class JobFailed(RuntimeError):
    """A Slurm job that ended without a result (failed, cancelled, timed out, node failure)."""


class SlurmExecutor:
    """Each run a Slurm job submitted with submitit, its logs and pickles in ``folder`` (``<job id>_*``); at most
    ``workers`` jobs are queued or running at once (the rest wait here, and are submitted as jobs finish).
    submitit's jobs are not ``concurrent.futures`` futures: a poller thread watches them (submitit reads
    the result files, and asks Slurm at most every minute) and completes one Future per job."""

    POLL_SECONDS = 1.0

    def __init__(self, folder: str | Path, workers: int, params: dict[str, Any] | None = None,
                 cluster: str = "slurm") -> None:
        try:
            import submitit
        except ImportError:
            raise UsageError("the slurm backend needs submitit: pip install 'gradbench[slurm]'") from None
        if cluster == "slurm" and shutil.which("sbatch") is None:
            raise UsageError("--backend slurm: no sbatch on this machine's PATH (run the sweep on a Slurm login "
                             "node; --slurm cluster=local tries it out with local processes)")
        params = dict(SLURM_DEFAULTS, **(params or {}))
        self.executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
        try:
            self.executor.update_parameters(**params)
        except (NameError, AssertionError, TypeError, ValueError) as e:
            raise UsageError(f"bad --slurm parameters: {str(e).splitlines()[0]}") from None
        self.workers, self.cpus = workers, int(params.get("cpus_per_task") or 1)
        self.waiting: deque[tuple[Callable, tuple[Any, ...], cf.Future]] = deque()
        self.running: list[tuple[Any, cf.Future]] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.poller = threading.Thread(target=self._poll, name="gradbench-slurm-poller", daemon=True)
        self.poller.start()

    def choose_threads(self, requested: int | str | None) -> Any:
        """A job's threads: ``--threads N``, else ``OMP_NUM_THREADS``, else the job's ``cpus_per_task``
        (``auto`` probes up to them): the login node's cores say nothing about the job's."""
        from gradbench.threads import ENV, ThreadChoice, choose, parse

        requested = parse(requested)
        if requested == "auto":
            return ThreadChoice(None, f"auto: probed among 1-{self.cpus} (the job's CPUs)", probe_up_to=self.cpus)
        if requested is None and not os.environ.get(ENV, "").strip():
            return ThreadChoice(self.cpus, "slurm: the job's cpus_per_task")
        return choose(requested)

    def submit(self, fn: Callable, *args: Any) -> cf.Future:
        future: cf.Future = cf.Future()
        with self.lock:
            self.waiting.append((fn, args, future))
        self._launch()
        return future

    def _launch(self) -> None:
        with self.lock:
            while self.waiting and len(self.running) < self.workers and not self.stopping.is_set():
                fn, args, future = self.waiting.popleft()
                if future.cancelled():  # futures stay pending while their job runs, so a cancel can reach them
                    continue
                try:
                    job = self.executor.submit(fn, *args)
                except Exception as e:  # sbatch refused it (bad partition, account, ...)
                    future.set_exception(UsageError(f"slurm submission failed: {' '.join(str(e).split())[:500]}"))
                    continue
                self.running.append((job, future))

    def _poll(self) -> None:
        while not self.stopping.wait(self.POLL_SECONDS):
            self._reap()
            self._launch()

    def _reap(self) -> None:
        with self.lock:
            finished = [(job, future) for job, future in self.running if job.done()]
            self.running = [pair for pair in self.running if pair not in finished]
        for job, future in finished:
            try:
                outcome, error = job.result(), None
            except Exception as e:
                outcome, error = None, JobFailed(f"slurm job {job.job_id}: {_job_error(e)} (log: {job.paths.stderr})")
            with contextlib.suppress(cf.InvalidStateError):  # cancelled meanwhile
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(outcome)

    def shutdown(self, cancel: bool = False) -> None:
        """Wait for every job; or (``cancel``) cancel the waiting runs and the jobs queued or running
        (``scancel``: a run in flight leaves no record)."""
        if cancel:
            self.stopping.set()
            with self.lock:
                waiting, self.waiting = list(self.waiting), deque()
                running, self.running = list(self.running), []
            for _, _, future in waiting:
                future.cancel()
            for job, future in running:
                with contextlib.suppress(Exception):
                    job.cancel(check=False)
                future.cancel()
        else:
            while True:
                with self.lock:
                    if not self.waiting and not self.running:
                        break
                time.sleep(self.POLL_SECONDS)
            self.stopping.set()
        self.poller.join()


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
              threads: int | str | None = None, log: str | None = None,
              more: Callable[[set[str]], list[RunSpec]] | None = None) -> SweepResult:
    """Run what is left of the grid; KeyboardInterrupt cancels the rest (complete records stay). Each run
    uses ``gradbench.threads``' choice for the executor's worker count (default: one thread per worker), or
    the executor's own (``choose_threads``: a Slurm job's CPUs), and the loggers of ``log``. ``more``, given
    the run ids in flight, returns further runs to make; it is asked whenever a worker would otherwise sit
    idle (a study's next decisions, so no side waits on another's slowest run), until every run has ended.
    It is not asked again once it raises (the runs in flight end, then the error is raised) or once the
    pool has died (a worker killed: the runs left count as failed, and the caller may sweep again)."""
    from tqdm import tqdm

    from gradbench import loggers
    from gradbench.threads import choose

    loggers.parse(log)  # a missing logger library stops the sweep before anything is submitted

    paths: dict[str, int] = {}
    pending, finished, corrupt = todo(grid, runs_dir, shard, paths)
    _note_reused_paths(paths, grid, accel, device)
    result = SweepResult(total=len(pending) + finished, skipped=finished)
    for line in corrupt:
        print(f"gradbench: corrupt record, re-running: {line}", file=sys.stderr)
    chooser = getattr(executor, "choose_threads", None)
    workers = getattr(executor, "workers", 1)
    choice = dataclasses.asdict(chooser(threads) if chooser else choose(threads, workers=workers))
    flight = _Flight(executor, (device, runs_dir, plugins or [], accel, log, choice), more)
    flight.submit(pending)
    bar = tqdm(total=len(pending), desc="sweep", file=sys.stderr, disable=not progress or not pending, unit="run")
    start = time.perf_counter()
    try:
        while flight.futures:
            for group, future in flight.ended():
                _tally(result, group, future)
                bar.update(len(group))
            if len(flight.futures) < workers:  # a worker is free: ask for the next runs
                added = todo(Grid(flight.ask()), runs_dir, shard)[0]
                flight.submit(added)
                pending += added
                result.total += len(added)
                bar.total += len(added)
                bar.refresh()
            bar.set_postfix(done=result.ok, failed=result.failed,
                            remaining=len(pending) - result.ok - result.failed, refresh=False)
    except BaseException:  # Ctrl-C, or anything that stops this loop: the pool never outlives the sweep
        bar.close()
        executor.shutdown(cancel=True)
        raise
    bar.close()
    executor.shutdown()
    if flight.error is not None:
        raise flight.error
    elapsed = time.perf_counter() - start
    if pending:
        print(f"gradbench: {len(pending)} runs in {elapsed:.1f} s ({60 * len(pending) / elapsed:.1f} runs/min)",
              file=sys.stderr)
    return result


class _Flight:
    """A sweep's runs in flight on its executor, and its asking for more (``run_sweep``'s ``more``)."""

    def __init__(self, executor: Any, args: tuple, more: Callable[[set[str]], list[RunSpec]] | None) -> None:
        self.executor, self.args, self.more = executor, args, more  # args: _run_group's after eval_every
        self.futures: dict[cf.Future, list[RunSpec]] = {}
        self.error: Exception | None = None  # what ``more`` raised: raised once the runs in flight have ended

    def submit(self, specs: list[RunSpec]) -> None:
        groups: dict[str, list[RunSpec]] = {}  # one run each, or the pending runs of one seed batch together
        for spec in specs:
            groups.setdefault(group_key(spec), []).append(spec)
        for group in groups.values():
            future = self.executor.submit(_run_group, [s.as_dict() for s in group], group[0].eval_every, *self.args)
            self.futures[future] = group

    def ended(self) -> list[tuple[list[RunSpec], cf.Future]]:
        """Wait for at least one group to end; the groups that have, with their futures."""
        done, _ = cf.wait(self.futures, return_when=cf.FIRST_COMPLETED)
        for future in done:
            if not future.cancelled() and isinstance(future.exception(), cf.BrokenExecutor):
                self.more = None  # a dead pool takes no new runs: the caller's next sweep gets a fresh one
        return [(self.futures.pop(future), future) for future in done]

    def ask(self) -> list[RunSpec]:
        """``more``'s next runs, given the run ids in flight; none once it has raised or the pool has died."""
        if self.more is None:
            return []
        try:
            return self.more({s.run_id for group in self.futures.values() for s in group})
        except Exception as e:  # a decision that cannot be made must not cancel the runs in flight
            self.more, self.error = None, e
            return []


def _tally(result: SweepResult, group: list[RunSpec], future: cf.Future) -> None:
    """Count a finished group's runs in ``result``: ok, or failed with its error line."""
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


def make_executor(backend: str, workers: int, address: str | None, device: str, runs_dir: str | Path = "runs",
                  slurm: tuple[str, dict[str, Any]] | None = None) -> Any:
    """The executor of ``backend``; ``slurm``: (cluster, parameters) from ``slurm_parameters``, its jobs'
    logs under ``<runs_dir>/slurm``."""
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
    if backend == "slurm":
        cluster, params = slurm or slurm_parameters()
        return SlurmExecutor(Path(runs_dir) / "slurm", workers, params, cluster=cluster)
    raise UsageError(f"unknown backend {backend!r}; use local, ray or slurm")
