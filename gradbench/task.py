"""The task contract: a model and data behind a non-differentiable node, and how to score it.

The harness owns the training loop, optimizer, seeding, device, timing and progress; a task only
builds its model and data, hands out ``(logits, cost_fn)`` for a training batch and evaluates.

Common random numbers: a task draws everything about its data (batches, dynamic binarization, fixed sets
made from the seed) from ``self.data_generator``, seeded from the run's seed alone, and the estimator's
noise comes from the global generator, reseeded after the model is built. For one seed, every estimator
then trains on the same minibatch sequence from the same initial weights (``data_fingerprint`` checks it).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

from gradbench import ops
from gradbench.config import build_config, label, non_default
from gradbench.errors import UsageError
from gradbench.node import Node
from gradbench.protocol import VALID_PREFIX, stream_seed


@dataclass(frozen=True)
class Preset:
    """A named protocol: config overrides, a default step budget and how often to evaluate."""

    description: str
    steps: int
    eval_every: int
    config: dict[str, Any] = field(default_factory=dict)
    grad_draws: int = 100  # gradient estimates per checkpoint for the gradient statistics


@dataclass(frozen=True)
class ParamGroup:
    """Task parameters trained by a rule of their own instead of the run's Adam at the task's ``lr``
    (``Task.optimizer_groups``): ``names`` as in ``task.named_parameters()``, their learning rate, and
    ``optimizer``: ``adam`` (Adam at this lr) or ``sgd`` (plain SGD, p <- p - lr * grad). A learning-rate
    schedule scales these groups too."""

    names: tuple[str, ...]
    lr: float
    optimizer: Literal["adam", "sgd"] = "adam"


FIXED_BATCH_SEED = 8_675_309
FINGERPRINT_BATCHES = 3  # training batches hashed into a record's data_fingerprint
RepeatedBatch = tuple[torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]


class Task(torch.nn.Module):
    """Base class for tasks. ``Config`` must have ``lr`` and ``batch_size`` fields.

    Subclasses implement ``node``, ``train_batch`` and ``evaluate``; parameters registered on the
    module are the ones the harness optimises. Training batches must be made on the device without
    host synchronisation (no ``.item()``), so the step can later be graph-captured.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    # config keys added after records were published -> the value every older record ran at, in the order
    # the keys were added (append new ones at the end): a spec at those values also answers to the ids it had
    # before the keys existed (RunSpec.run_ids), so published records stay reusable and rerunnable
    added_keys: ClassVar[dict[str, Any]] = {}
    # the config key (a Literal) that selects the node's kind, for the refusal's "try --task sort:node=bernoulli"
    # hint; None: no such key
    node_key: ClassVar[str | None] = "node"
    Config: ClassVar[type]
    presets: ClassVar[dict[str, Preset]]
    metrics: ClassVar[dict[str, bool]]  # metric name -> higher is better
    main_metric: ClassVar[str]
    # test metrics that are a mean over the held-out examples of a per-example score in [0, 1] (accuracy): one
    # example moves them by at most 1/N, so tuning ties settings whose validation means differ by less than a
    # couple of examples (gradbench.tune's rule); losses and bounds have no such resolution
    fraction_metrics: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: Any, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.config = config
        self.device = torch.device(device)
        # the data stream: from the seed in force when the task is built (the harness seeds every run first)
        self.data_generator = torch.Generator(device=self.device)
        self.data_generator.manual_seed(stream_seed(torch.initial_seed(), "data"))

    @classmethod
    def node_of(cls, config: Any) -> Node:  # pragma: no cover - abstract
        """The node a config produces, known without building the model (for support checks)."""
        raise NotImplementedError

    @classmethod
    def check_config(cls, config: Any) -> None:
        """Checks that need the outside world (e.g. that a dataset is present), run before a run starts;
        raise UsageError with one line saying what to do. Default: nothing to check."""

    @property
    def node(self) -> Node:
        return self.node_of(self.config)

    def optimizer_groups(self) -> list[ParamGroup]:
        """Parameters the harness trains with their own learning rate or rule (e.g. a VAE's prior logits by
        SGD at 1e-2, as DisARM's launcher does); every other trainable parameter takes the run's Adam at
        ``config.lr``. Default: none."""
        return []

    def ema_variance_decay(self) -> float | None:
        """The decay d of the training-trajectory gradient variance the harness logs as
        ``grad/ema_variance`` (``gradbench.trajectory``): moving averages, updated every step, of the
        encoder's training gradient g and of g^2, and the mean over its components of avg(g^2) - avg(g)^2,
        as REBAR's and DisARM's code plot it. None (default): not tracked."""
        return None

    def train_batch(self) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:  # pragma: no cover
        """Draw one training batch: logits ``(batch, *node.shape)`` and its ``cost_fn``."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:  # pragma: no cover
        """Metrics on held-out data (every name in ``metrics``)."""
        raise NotImplementedError

    @contextlib.contextmanager
    def fixed_rng(self) -> Iterator[None]:
        """Forked generators (the global ones and the data stream) seeded with FIXED_BATCH_SEED: draws
        inside repeat on every call and never perturb training."""
        with self.forked_streams():
            torch.manual_seed(FIXED_BATCH_SEED)
            self.data_generator.manual_seed(FIXED_BATCH_SEED)
            yield

    @contextlib.contextmanager
    def forked_streams(self) -> Iterator[None]:
        """Forked global generators and the data stream kept: what is drawn inside changes no training."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), restored([self.data_generator]):
            yield

    @torch.no_grad()
    def data_fingerprint(self, batches: int = FINGERPRINT_BATCHES) -> str:
        """A hash of the logits of the next ``batches`` training batches, drawn from a copy of the data
        stream: equal fingerprints mean the same data and the same initial encoder (common random
        numbers hold). Changes nothing: the data stream and the global generators are restored."""
        h = hashlib.sha256()
        with self.forked_streams():
            for _ in range(batches):
                logits, _ = self.train_batch()
                h.update(logits.detach().to("cpu", torch.float64).numpy().tobytes())
        return h.hexdigest()[:16]

    @classmethod
    def selection_metric(cls) -> str | None:
        """The validation counterpart of the main metric (what tuning picks on), or None without one."""
        name = valid_name(cls.main_metric)
        return name if name in cls.metrics else None

    @classmethod
    def validation_size(cls, config: Any) -> int | None:
        """How many examples each validation metric averages over (the validation split's size), for the
        selection record and tuning's tie rule; None: unknown, or no validation split. Default: the config's
        ``valid_size`` when it has one, else the size of its ``dataset``'s validation split (gradbench's
        split; a task that reads another split overrides this)."""
        size = getattr(config, "valid_size", None)
        if size is not None:
            return int(size)
        name = getattr(config, "dataset", None)
        if name is None:
            return None
        from gradbench import data

        try:
            return int(len(data.load(name).valid_y))
        except data.DataError:
            return None

    def fixed_batch(self) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        """One fixed training minibatch (the same on every call), for gradient statistics: ``train_batch``
        under ``fixed_rng``."""
        with self.fixed_rng():
            return self.train_batch()

    def repeated_fixed_batch(self, repeats: int) -> RepeatedBatch | None:
        """For batched gradient statistics when the cost reaches the encoder by a path other than the node
        (e.g. a VAE's KL on the logits): ``(logits, rep, cost)`` where ``logits`` is the fixed batch's,
        ``rep`` a leaf holding ``logits`` repeated ``repeats`` times along the batch dim, and ``cost``
        the repeated batch's cost with every logits-dependent term computed from ``rep``. Default: None
        (the harness then uses the plain loop for such tasks)."""
        return None

    @classmethod
    def provides_log_weights(cls, config: Any) -> bool:
        """Whether this config's cost functions carry per-sample log-weights (``with_log_weight``), known
        without building the model, so that an estimator that needs them (VIMCO) can be refused before a
        run. Default: False."""
        return False

    @staticmethod
    def with_log_weight(cost_fn: Callable[[torch.Tensor], torch.Tensor],
                        log_weight: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
        """Optional hook for multi-sample estimators (VIMCO): a task whose examples carry k latent samples
        along the node's first event dim and whose cost is the negative k-sample importance-weighted bound
        -log 1/k sum_j exp(l_j) returns its cost function through this, from ``train_batch`` and
        ``repeated_fixed_batch``. ``log_weight(y)`` maps node outputs (*prefix, batch, k, ...) to the
        per-sample log-weights l_j = log p(x, h_j) - log q(h_j | x), shape (*prefix, batch, k); estimators
        read it as ``cost_fn.log_weight``. Tasks without it leave such estimators to refuse."""

        def cost(y: torch.Tensor) -> torch.Tensor:
            return cost_fn(y)

        cost.log_weight = log_weight  # type: ignore[attr-defined]
        return cost

    def encoder_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters upstream of the node: those the logits depend on."""
        logits, _ = self.fixed_batch()
        params = [p for p in self.parameters() if p.requires_grad]
        if not logits.requires_grad:
            return []
        grads = torch.autograd.grad(logits.sum(), params, allow_unused=True)
        return [p for p, g in zip(params, grads, strict=True) if g is not None]

    def exact_gradient(self) -> list[torch.Tensor] | None:
        """d E[cost of the fixed batch] / d encoder_parameters(), where the task can compute it; else None."""
        return None

    def enumerated_gradient(self, limit: int = 4096) -> list[torch.Tensor] | None:
        """The exact gradient by summing over every node value (stochastic nodes with at most ``limit``
        configurations; else None): a ready-made ``exact_gradient`` for small models."""
        if not self.node.stochastic:
            return None
        logits, cost_fn = self.fixed_batch()
        try:
            expected = ops.exact_expectation(self.node, logits, cost_fn, limit)
        except ops.TooManyEvents:
            return None
        return list(torch.autograd.grad(expected, self.encoder_parameters()))

    @classmethod
    def test_metrics(cls) -> dict[str, bool]:
        """The metrics a table shows: every metric but the validation ones."""
        return {k: v for k, v in cls.metrics.items() if not k.startswith(VALID_PREFIX)}

    @classmethod
    def make_config(cls, values: dict[str, Any] | None = None, preset: str = "quick") -> Any:
        """The preset's config with ``values`` on top; raises UsageError on bad keys/values."""
        owner = f"task {cls.name!r}"
        if preset not in cls.presets:
            raise UsageError(f"{owner} has no preset {preset!r}; presets: {', '.join(cls.presets)}")
        base = build_config(cls.Config, cls.presets[preset].config, owner)
        return build_config(cls.Config, values, owner, base=base)

    @classmethod
    def label_for(cls, config: Any, preset: str) -> str:
        """Table label: the name plus the config values that differ from the preset's."""
        return label(cls.name, non_default(config, cls.make_config(None, preset)))


@contextlib.contextmanager
def restored(generators: list[torch.Generator]) -> Iterator[None]:
    """Put ``generators`` back in their present states on leaving (as ``torch.random.fork_rng`` does for
    the global ones): for tasks' data streams."""
    states = [g.get_state() for g in generators]
    try:
        yield
    finally:
        for g, state in zip(generators, states, strict=True):
            g.set_state(state)


def valid_name(metric: str) -> str:
    """The name of ``metric`` measured on the validation split: ``accuracy`` -> ``valid_accuracy``,
    ``test_elbo`` -> ``valid_elbo``."""
    return VALID_PREFIX + metric.removeprefix("test_")


def validation_metrics(metrics: dict[str, bool], names: tuple[str, ...] | None = None) -> dict[str, bool]:
    """``metrics`` (or the ``names`` among them) with their validation counterparts, for a task's ``metrics``."""
    keep = names if names is not None else tuple(metrics)
    return {**metrics, **{valid_name(k): metrics[k] for k in keep}}
