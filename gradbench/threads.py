"""Torch's intra-op thread count for a run: chosen by gradbench, overridable, recorded.

Why gradbench chooses it: torch's default is one OpenMP thread per core, and the models of the quick
presets are small, so each step is hundreds of tiny kernels. When another process holds a core (a second
sweep worker, a browser, the sweep's own parent), every kernel waits for its descheduled OpenMP thread:
measured on the project's 2-core machine, the main job took over 400 s with the default pool and one core
busy, against 48 s with one thread; a sweep worker that was told to use every core ran 50x slower than
``gradbench run`` (docs/performance.md). One thread per process loses little on an idle machine for these
models and is immune to that. So the rule, in order:

1. ``--threads N`` (``threads=N`` in the API): N threads.
2. ``--threads auto``: a short measured probe picks among 1 .. cores/workers (``probe``).
3. ``OMP_NUM_THREADS`` set in the environment: that many (the user's word, as torch itself honours it).
4. Otherwise one thread per process (per sweep worker).

A run's record says what was used and why (``provenance.threads``, ``provenance.threads_source``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from gradbench.errors import UsageError

ENV = "OMP_NUM_THREADS"
PROBE_MIN_GAIN = 1.15  # more threads must be this much faster in the probe to be chosen (timing noise)


@dataclass(frozen=True)
class ThreadChoice:
    """How many threads, or ``None`` with ``probe`` set: measure first (``auto``); ``source`` says why."""

    threads: int | None
    source: str
    probe_up_to: int = 1  # auto: the largest count the probe tries

    def describe(self) -> str:
        return f"{self.threads} thread(s) ({self.source})"


def parse(value: int | str | None) -> int | str | None:
    """``--threads``: a positive int or ``auto`` (None: not given)."""
    if value is None or value == "auto":
        return value
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if isinstance(value, float) or n < 1:
        raise UsageError(f"--threads takes a positive whole number or 'auto', got {value!r}")
    return n


def cores() -> int:
    """The cores this process may run on (the affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def choose(requested: int | str | None, workers: int = 1) -> ThreadChoice:
    """The thread count for each of ``workers`` processes under the rule above."""
    requested = parse(requested)
    share = max(1, cores() // max(1, workers))
    if isinstance(requested, int):
        return ThreadChoice(requested, "--threads")
    if requested == "auto":
        return ThreadChoice(None, f"auto: probed among 1-{share}", probe_up_to=share)
    env = os.environ.get(ENV, "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n < 1:
            raise UsageError(f"{ENV}={env!r} is not a positive whole number; unset it or pass --threads N")
        return ThreadChoice(n, ENV)
    if workers > 1:
        return ThreadChoice(1, "default: one per worker")
    return ThreadChoice(1, "default: one per process")


@contextlib.contextmanager
def using(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads, then restore the caller's count (the API and the tests call
    runs in one process; none of them should leave its choice behind)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def probe(work: Callable[[], object], up_to: int, repeats: int = 3) -> tuple[int, dict[int, float]]:
    """(the thread count to use, seconds of one ``work`` call per count tried): each count from 1 to
    ``up_to`` (powers of two and ``up_to``) runs ``work`` once to warm up, then ``repeats`` times, keeping
    the fastest time (the least disturbed by other processes). More threads win only when they are at
    least ``PROBE_MIN_GAIN`` faster than the best fewer: on a tie, fewer threads wait on fewer cores."""
    counts = sorted({1, up_to, *(2**k for k in range(1, up_to.bit_length()) if 2**k < up_to)})
    timing: dict[int, float] = {}
    for n in counts:
        with using(n):
            work()
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                work()
                best = min(best, time.perf_counter() - t0)
        timing[n] = best
    chosen = 1
    for n in counts[1:]:  # against the best of the fewer counts tried so far
        if timing[n] * PROBE_MIN_GAIN <= min(timing[m] for m in counts if m < n):
            chosen = n
    return chosen, timing
