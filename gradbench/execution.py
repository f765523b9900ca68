"""How steps execute: the device, the execution path (eager, torch.compile, CUDA graph), seeding, the
optimizer and its learning-rate schedule, and the CUDA-graph step. None of this changes what a step
computes, so none of it is part of a run's id.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from gradbench.errors import UsageError
from gradbench.estimator import Estimator
from gradbench.protocol import stream_seed as stream_seed  # where the training loop finds it

ACCEL = ("auto", "none", "graph", "compile")
GRAPH_WARMUP = 3  # eager steps (on a side stream) before capture: autograd and Adam's state must exist first


def pick_device(device: str) -> torch.device:
    """``auto`` is CUDA when available; anything else must name a device this machine has."""
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


def pick_accel(accel: str, estimator_cls: type[Estimator], device: torch.device | None = None,
               config: Any = None) -> tuple[str, str]:
    """(path that will run, why). ``auto`` is the CUDA graph on a CUDA device and eager elsewhere (on a
    CPU torch.compile pays off only on long runs); ``graph`` and ``compile`` fall back to eager, with the
    reason, where the estimator at ``config`` (None: its default) cannot run them (its tags)."""
    if accel not in ACCEL:
        raise UsageError(f"unknown --accel {accel!r}; use one of {', '.join(ACCEL)}")
    cuda = device is not None and device.type == "cuda"
    tags = estimator_cls.tags_for(config)
    if accel == "auto":
        if not cuda:
            return "none", ("auto: eager on a CPU; torch.compile only pays off on long runs (its compile time "
                            "is seconds to minutes), pass --accel compile to use it")
        if not tags.capturable:
            return "none", f"auto: estimator {estimator_cls.name!r} cannot be captured in a CUDA graph; eager"
        return "graph", "auto: whole step captured in a CUDA graph (small models are bound by kernel launches)"
    if accel == "graph" and not cuda:
        return "none", "graph: CUDA graphs need a CUDA device; eager instead"
    if accel == "graph" and not tags.capturable:
        return "none", f"graph: estimator {estimator_cls.name!r} cannot be captured in a CUDA graph; eager instead"
    if accel == "compile" and not tags.compilable:
        return "none", f"compile: estimator {estimator_cls.name!r} cannot run under torch.compile; eager instead"
    return accel, "asked for"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(groups: list[dict[str, Any]], device: torch.device, graph: bool) -> torch.optim.Optimizer:
    """Adam over ``groups``; groups marked ``"optimizer": "sgd"`` (a task's ``ParamGroup``) take plain SGD
    steps instead, and the two are then stepped as one (``Optimizers``). For the CUDA-graph path each
    learning rate lives in a device tensor, so a schedule can change it between replays (the scheduler
    fills the tensor in place; a float would be baked into the captured graph), and on CUDA Adam is
    ``capturable`` (its step count stays on the device)."""
    if graph:
        groups = [{**g, "lr": torch.tensor(float(g["lr"]), device=device)} for g in groups]
    adam = [g for g in groups if g.get("optimizer", "adam") == "adam"]
    sgd = [g for g in groups if g.get("optimizer", "adam") == "sgd"]
    if len(adam) + len(sgd) != len(groups):
        raise ValueError(f"unknown optimizer in {[g.get('optimizer') for g in groups]}; use adam or sgd")
    first = torch.optim.Adam(adam, capturable=graph and device.type == "cuda")
    return Optimizers([first, PlainSGD(sgd)]) if sgd else first


class PlainSGD(torch.optim.Optimizer):
    """p <- p - lr * grad, the learning rate a float or a device tensor (no host sync: capturable)."""

    def __init__(self, groups: list[dict[str, Any]]) -> None:
        super().__init__(groups, {"lr": 1e-3})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                torch._foreach_add_(params, torch._foreach_mul([p.grad for p in params], group["lr"]), alpha=-1)


class Optimizers(torch.optim.Optimizer):
    """Several optimizers stepped as one. ``param_groups`` holds their groups themselves (the same dicts),
    so a learning-rate schedule and ``zero_grad`` reach every group."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers
        super().__init__([g for o in optimizers for g in o.param_groups], {})

    def step(self, closure: Any = None) -> None:
        for o in self.optimizers:
            o.step()


def cosine(total_steps: int) -> Callable[[int], float]:
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

    def warmup(self, eager_step: Callable[[], dict[str, Any]], check: bool = False) -> dict[str, Any]:
        """One eager step on the side stream; ``check``: with CUDA's sync debug mode on, so a host sync in
        the step (illegal during capture, and a failed capture can leave CUDA's state unusable) is found
        before capture is tried."""
        main = torch.cuda.current_stream(self.device)
        self.side.wait_stream(main)
        with torch.cuda.stream(self.side):
            out = self._checked(eager_step) if check else eager_step()
        main.wait_stream(self.side)
        return out

    def _checked(self, eager_step: Callable[[], dict[str, Any]]) -> dict[str, Any]:
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
        return out

    def capture(self, step_fn: Callable[[], dict[str, Any]], optimizer: torch.optim.Optimizer,
                generators: Sequence[torch.Generator] = ()) -> None:
        """Capture ``step_fn``; ``generators`` are the explicit generators it draws from (the task's data
        stream), registered so that every replay advances them as the default generator is advanced."""
        if self.host_sync:
            raise RuntimeError(f"the step synchronises with the host: {self.host_sync}")
        graph = torch.cuda.CUDAGraph()
        register = getattr(graph, "register_generator_state", None)
        if generators and register is None:
            raise RuntimeError("this torch cannot register a task's generator with a CUDA graph")
        for g in generators:
            register(g)
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
        assert self.graph is not None
        self.graph.replay()
        return self.outputs
