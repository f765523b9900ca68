"""What the training loop trains: one (task, estimator) pair, or several seeds of it at once.

``Pair`` is the plain eager model. ``SeedBatch`` ("batched seeds") trains S replicas of one run spec,
one per seed, in one process: their parameters and buffers are stacked along a new leading dim
(``torch.func.stack_module_state``) and one vmapped call of the step's forward
(``torch.func.functional_call`` under ``vmap``, each replica drawing its own random numbers) runs all S
at once. On a GPU, where these small models are bound by kernel launches, S replicas then cost about
what one does. Replicas share nothing else: each is initialised under its own seed and has its own data
stream and Adam state (Adam is elementwise, so one Adam over the stacked tensors is S independent ones).
The random numbers are drawn batched, so a replica's trajectory is not its seed's sequential one: a
batched run's identity includes the seeds it was trained with (``RunSpec.seed_batch``).
"""

from __future__ import annotations

from itertools import chain
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from gradbench.estimator import Estimator
from gradbench.task import Task, restored

StepOutputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]


def state_ids(module: nn.Module) -> dict[str, int]:
    """``id()`` of everything a module tree holds (parameters, buffers, plain attributes). An entry that
    changes across a training step was rebound rather than updated in place: state that a replayed CUDA
    graph would freeze, and that ``functional_call`` under ``vmap`` would drop."""
    out = {}
    for prefix, m in module.named_modules():
        for key, value in vars(m).items():
            if key in ("_parameters", "_buffers"):
                out.update({f"{prefix}.{k}".lstrip("."): id(v) for k, v in value.items()})
            elif not key.startswith("_") and not isinstance(value, nn.Module):
                out[f"{prefix}.{key}".lstrip(".")] = id(value)
    return out


def changed(before: dict[str, int], after: dict[str, int]) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


class _Step(nn.Module):
    """A (task, estimator) pair as one module whose forward is a training step's forward."""

    def __init__(self, task: Task, estimator: Estimator) -> None:
        super().__init__()
        self.task = task
        self.estimator = estimator

    def forward(self) -> StepOutputs:
        """One training batch through the estimator: (total loss, mean cost, loss, diagnostics)."""
        logits, cost_fn = self.task.train_batch()
        out = self.estimator(logits, cost_fn)
        # out.loss is returned as is and detached by the caller: under torch.compile (2.13), returning
        # loss.detach() beside loss + aux_loss dropped the sum's grad_fn.
        return out.loss + out.aux_loss, out.cost.detach().mean(), out.loss, out.diagnostics


class Pair:
    """One (task, estimator) pair, trained as is."""

    def __init__(self, task: Task, estimator: Estimator) -> None:
        self.step = _Step(task, estimator)
        self.forward = self.step.forward

    @property
    def pairs(self) -> list[tuple[Task, Estimator]]:
        return [(self.step.task, self.step.estimator)]

    replicas = None  # plain parameters: no leading replica dim

    def parameter_groups(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(the task's trainable parameters but those of its own ``optimizer_groups``, the estimator's own)."""
        own = {id(t) for group in self.step.task.optimizer_groups() for t in self.task_tensors(group.names)}
        return ([p for p in self.step.task.parameters() if p.requires_grad and id(p) not in own],
                [p for p in self.step.estimator.parameters() if p.requires_grad])

    def task_tensors(self, names: tuple[str, ...] | list[str]) -> list[torch.Tensor]:
        """The tensors that train the task's parameters ``names`` (as in ``task.named_parameters()``)."""
        return [self.step.task.get_parameter(name) for name in names]

    def state_ids(self) -> dict[str, int]:
        return state_ids(self.step)

    def sync(self) -> None:
        """Nothing to do: the pair's modules are what trains."""

    def train(self, mode: bool = True) -> None:
        self.step.train(mode)


class SeedBatch:
    """S replicas of one (task, estimator) spec, stacked and run by one vmapped step."""

    def __init__(self, pairs: list[tuple[Task, Estimator]]) -> None:
        self.steps = [_Step(task, estimator) for task, estimator in pairs]
        self.params, self.buffers = stack_module_state(self.steps)  # leaves: what Adam trains
        self.constants: dict[str, Any] = {}  # non-tensor diagnostics (the same for every replica)
        self._forward = vmap(self._one, randomness="different")

    def _one(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor]) -> StepOutputs:
        total, cost, loss, diagnostics = functional_call(self.steps[0], (params, buffers), ())
        self.constants = {k: v for k, v in diagnostics.items() if not isinstance(v, torch.Tensor)}
        return total, cost, loss, {k: v for k, v in diagnostics.items() if isinstance(v, torch.Tensor)}

    def forward(self) -> StepOutputs:
        """Every replica's step at once: each output gains a leading replica dim."""
        total, cost, loss, tensors = self._forward(self.params, self.buffers)
        return total, cost, loss, {**self.constants, **tensors}

    @property
    def pairs(self) -> list[tuple[Task, Estimator]]:
        return [(s.task, s.estimator) for s in self.steps]

    def state_ids(self) -> dict[str, int]:
        return state_ids(self.steps[0])

    def probe(self) -> None:
        """Raise what batching cannot run, before anything is measured or trained, changing nothing: one
        forward and backward of the batch on copies of the buffers, from forked generators (vmap refuses e.g.
        ``torch.autograd.grad`` inside a forward), and one plain forward of the first replica's own
        modules, whose buffers must be updated in place (``functional_call`` would drop a rebinding).
        The replicas' own modules are overwritten by ``sync`` before any use, so that forward is harmless."""
        device = next(iter(self.params.values())).device
        streams = [s.task.data_generator for s in self.steps]
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), restored(streams):
            total = self._forward(self.params, {k: v.clone() for k, v in self.buffers.items()})[0]
            torch.autograd.grad(total.sum(), [p for p in self.params.values() if p.requires_grad],
                                allow_unused=True)
            before = {name: id(b) for name, b in self.steps[0].named_buffers()}
            self.steps[0]()
            rebound = [name for name, b in self.steps[0].named_buffers() if id(b) != before.get(name)]
        if rebound:
            raise ValueError(f"the step rebinds buffer {rebound[0]!r} instead of updating it in place")

    @property
    def replicas(self) -> int:  # stacked parameters: a leading replica dim of this size
        return len(self.steps)

    def parameter_groups(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        own = {"task." + name for group in self.steps[0].task.optimizer_groups() for name in group.names}

        def group(prefix: str) -> list[torch.Tensor]:
            return [p for name, p in self.params.items()
                    if name.startswith(prefix) and p.requires_grad and name not in own]

        return group("task."), group("estimator.")

    def task_tensors(self, names: tuple[str, ...] | list[str]) -> list[torch.Tensor]:
        """The stacked tensors that train the task's parameters ``names``: (replicas, *shape) each."""
        return [self.params["task." + name] for name in names]

    @torch.no_grad()
    def sync(self) -> None:
        """Copy the stacked parameters and buffers into each replica's own modules, which evaluation and
        the gradient statistics use."""
        stacked = {**self.params, **self.buffers}
        for r, step in enumerate(self.steps):
            for name, tensor in chain(step.named_parameters(), step.named_buffers()):
                tensor.copy_(stacked[name][r])

    def train(self, mode: bool = True) -> None:
        for step in self.steps:
            step.train(mode)
