"""Discrete VAE: variational density estimation of binarized images (DAB paper's ELBO domain).

Sigmoid-belief-net VAE as in REBAR/RELAX (Tucker et al. 2017; Grathwohl et al. 2018): ``latents``
Bernoulli latents (default 200)
or, with ``node=categorical``, ``latents`` one-hot variables of ``classes`` classes.

* ``linear``: q(b|x) = Bernoulli(Linear(D, latents)(x)); p(x|b) = Bernoulli(Linear(latents, D)(b)).
* ``nonlinear``: two Tanh layers of ``hidden`` (200) on each side.
* Prior p(b): factorised, with learned logits (trained by the run's Adam with the model; under
  ``protocol=disarm`` by SGD 1e-2, as DisARM's launcher trains them).

Cost per example, for a code b: -log p(x|b) + KL(q(b|x) || p(b)), the negative single-sample ELBO with
the KL in closed form. The KL depends on the encoder's logits directly (not through b), so estimators
see it as part of the cost and its gradient flows straight to the encoder; ``repeated_fixed_batch`` lets
gradient statistics batch their draws all the same.

``iw_k = k > 1`` trains the k-sample importance-weighted bound (IWAE, Burda et al. 2016) instead: each
example carries k latent samples along a leading node dim (node shape (k, latents)), the encoder's logits
repeated for each, and the cost is -log 1/k sum_j p(x, h_j) / q(h_j | x). Every estimator trains it (the k
samples are one node value to them); the per-sample log-weights are also handed over through
``Task.with_log_weight``, which VIMCO needs. The metrics are the same at any k.

Metrics (fixed binarized splits; samples from a fixed generator): ``test_elbo`` (nats, main, one sample
per image), ``test_iw_bound``: the importance-weighted bound log 1/k sum_i p(x, b_i)/q(b_i|x) with
k = ``iw_samples`` (default 100; ELBO <= bound <= log p(x), tighter as k grows), and ``train_elbo``; the
first two on the fixed validation split as ``valid_elbo`` and ``valid_iw_bound`` (what tuning selects on).

``protocol`` picks whose model and conventions (docs/protocols.md says, line by line, where each comes
from): ``gradbench`` (the above); ``disarm``, the single-layer binary VAE of google-research's DisARM
launcher (``disarm/binary/experiment_launcher_singlelayer.py``): ``arch=linear`` 784-200 / 200-784,
``arch=nonlinear`` two LeakyReLU(0.3) layers of ``hidden`` each side, Glorot-uniform weights, the encoder
sees x minus the training split's mean image and the decoder 2b - 1, the decoder's output bias starts at
the logit of the mean pixel (clipped to [0.001, 0.999]), the cost is the negative single-sample ELBO with
log q(b|x) as a value (no direct path to the encoder: the launcher's learning signal), the prior logits
train by plain SGD at 1e-2 (``Task.optimizer_groups``), DisARM's 50,000-image training split, and the
training-trajectory variance of the encoder's gradient (moving averages, decay 0.999) is logged as
``grad/ema_variance``; ``reinmax``, ReinMax's categorical VAE (Liu et al. 2023, ``mnist_vae/model/vae.py``):
784-512-256 ReLU encoder and decoder, a fixed uniform prior (the KL to it is ReinMax's
sum q log q + L log C).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from gradbench import data, ops
from gradbench.node import Node
from gradbench.registry import register_task
from gradbench.task import ParamGroup, Preset, Task, validation_metrics

DISARM_SLOPE = 0.3  # the launcher's layers.LeakyReLU(alpha=0.3)
DISARM_PRIOR_LR = 1e-2  # the launcher's --prior_lr, by tf.keras.optimizers.SGD
DISARM_EMA_DECAY = 0.999  # networks.py: tf.train.ExponentialMovingAverage(0.999) of g and g^2
DISARM_BIAS_CLIP = (0.001, 0.999)  # the launcher clips the mean pixel before the logit
REINMAX_HIDDEN = (512, 256)  # ReinMax's encoder 784-512-256-(L*C), decoder (L*C)-256-512-784, ReLU
# ReinMax's C x L grid (mnist_vae/reinmax_{C}_{L}.sh): (classes, latents, lr, tau of reinmax) from its scripts
REINMAX_GRID = ((8, 4, 5e-4, 1.3), (4, 24, 5e-4, 1.5), (8, 16, 7e-4, 1.5), (16, 12, 7e-4, 1.5), (64, 8, 5e-4, 1.5),
                (10, 30, 5e-4, 1.3))


@dataclass(frozen=True)
class VaeConfig:
    dataset: Literal["digits", "fashion-mnist", "mnist", "omniglot"] = "digits"  # digits embedded; others from disk
    binarize: Literal["dynamic", "static", "threshold"] = "dynamic"  # resampled per batch, sampled once, or > 0.5
    arch: Literal["linear", "nonlinear"] = "linear"  # nonlinear: two Tanh layers each side (disarm: LeakyReLU 0.3)
    node: Literal["bernoulli", "categorical"] = "bernoulli"  # bits or one-hot latent variables
    latents: int = 200  # latent variables
    classes: int = 10  # classes per categorical latent
    hidden: int = 200  # width of the nonlinear architecture's hidden layers
    batch_size: int = 50  # training images per step
    lr: float = 1e-3  # Adam learning rate of the model and prior
    iw_samples: int = 100  # samples k of the importance-weighted test bound
    iw_k: int = 1  # samples per example of the bound trained on: 1 the ELBO, k > 1 the k-sample IW bound (vimco)
    protocol: Literal["gradbench", "disarm", "reinmax"] = "gradbench"  # whose model: docs/protocols.md

    def __post_init__(self) -> None:
        for key in ("latents", "hidden", "batch_size", "iw_samples", "iw_k"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.classes < 2:
            raise ValueError(f"classes must be >= 2, got {self.classes}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.protocol == "disarm" and self.node != "bernoulli":
            raise ValueError("protocol=disarm is the DisARM launcher's binary VAE: it needs node=bernoulli")
        if self.protocol == "reinmax" and (self.arch != "linear" or self.hidden != 200):
            raise ValueError("protocol=reinmax fixes ReinMax's architecture (784-512-256 ReLU each side): "
                             "leave arch and hidden at their defaults")


def _mlp(sizes: list[int], activation: Callable[[], nn.Module] = nn.Tanh) -> nn.Sequential:
    """Linear layers of ``sizes`` with an ``activation()`` between each two."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class Affine(nn.Module):
    """x -> scale * x + shift, the shift a fixed buffer: DisARM's demeaned inputs (``x - mean`` into the
    encoder, ``2 b - 1`` into the decoder)."""

    def __init__(self, scale: float, shift: torch.Tensor) -> None:
        super().__init__()
        self.scale = scale
        self.register_buffer("shift", shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x + self.shift


def _glorot(mlp: nn.Sequential) -> nn.Sequential:
    """Keras's Dense defaults, which DisARM's networks use: Glorot-uniform weights, zero biases."""
    for layer in mlp:
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    return mlp


@register_task("vae")
class VaeTask(Task):
    version = "2"  # 2: data from the task's own stream (common random numbers); validation metrics
    added_keys = {"iw_k": 1, "protocol": "gradbench"}  # iw_k with vimco; protocol with disarm and reinmax
    Config = VaeConfig
    presets = {
        "quick": Preset("digits (8x8, dynamic binarization), linear, 200 Bernoulli latents, batch 50, "
                        "Adam lr 1e-3, 2000 steps; CPU, seconds", steps=2000, eval_every=500),
        "paper": Preset("Fashion-MNIST (dynamic binarization), linear, 200 Bernoulli latents, batch 50, "
                        "Adam lr 1e-4 (DisARM's setup), 100k steps (DisARM trains 1M; pass --steps)",
                        steps=100_000, eval_every=10_000, grad_draws=1000,
                        config={"dataset": "fashion-mnist", "lr": 1e-4}),
        **{f"disarm-{arch}": Preset(
            f"DisARM's launcher ({shape}): Fashion-MNIST, dynamic binarization, its 50,000 training images, "
            "demeaned inputs, output bias from the train mean, prior logits by SGD 1e-2, Adam 1e-4, batch 50, "
            "1M steps; 100-sample test bound (test_iw_bound); grad/ema_variance logged",
            steps=1_000_000, eval_every=10_000, grad_draws=1000,
            config={"protocol": "disarm", "dataset": "fashion-mnist", "binarize": "dynamic", "arch": arch,
                    "latents": 200, "hidden": 200, "batch_size": 50, "lr": 1e-4, "iw_samples": 100})
          for arch, shape in (("linear", "784-200 / 200-784"),
                              ("nonlinear", "784-200-200-200 / 200-200-200-784, LeakyReLU(0.3)"))},
        **{f"reinmax-{c}x{n}": Preset(
            f"ReinMax's categorical VAE, {n} latents of {c} classes: Fashion-MNIST (dynamic binarization), "
            f"784-512-256 ReLU each side, uniform prior, batch 100, Adam {lr:g} (ReinMax's lr for reinmax, with "
            f"tau {tau}; other estimators' in docs/protocols.md), 96,000 steps (160 epochs of 60,000)",
            steps=96_000, eval_every=6_000,
            config={"protocol": "reinmax", "dataset": "fashion-mnist", "node": "categorical", "classes": c,
                    "latents": n, "batch_size": 100, "lr": lr})
          for c, n, lr, tau in REINMAX_GRID},
    }
    metrics = validation_metrics({"test_elbo": True, "test_iw_bound": True, "train_elbo": True},
                                 names=("test_elbo", "test_iw_bound"))
    main_metric = "test_elbo"

    @classmethod
    def node_of(cls, config: VaeConfig) -> Node:
        draws = (config.iw_k,) if config.iw_k > 1 else ()  # k samples per example: a leading dim
        if config.node == "categorical":
            return Node("categorical", (*draws, config.latents, config.classes))
        return Node("bernoulli", (*draws, config.latents))

    @property
    def latent(self) -> Node:
        """One latent sample's node: the node, less its leading dim of k samples when iw_k > 1."""
        return Node(self.node.kind, self.node.shape[1:]) if self.config.iw_k > 1 else self.node

    @classmethod
    def provides_log_weights(cls, config: VaeConfig) -> bool:
        return config.iw_k > 1  # the k-sample bound's per-sample log-weights (Task.with_log_weight)

    @classmethod
    def check_config(cls, config: VaeConfig) -> None:
        data.check(config.dataset)

    @classmethod
    def validation_size(cls, config: VaeConfig) -> int | None:
        """The validation split's size: DisARM's split under ``protocol=disarm`` (10,000 for the MNISTs)."""
        split = "disarm" if config.protocol == "disarm" else "gradbench"
        try:
            return int(len(data.load(config.dataset, split).valid_y))
        except data.DataError:
            return None

    def __init__(self, config: VaeConfig, device: torch.device | str = "cpu") -> None:
        super().__init__(config, device)
        c = config
        split = "disarm" if c.protocol == "disarm" else "gradbench"
        self.data = data.image_set(c.dataset, c.binarize, self.device, split)
        width = c.latents * (c.classes if c.node == "categorical" else 1)
        d = self.data.dim
        unflatten, flatten = nn.Unflatten(-1, self.latent.shape), nn.Flatten(-len(self.latent.shape))
        if c.protocol == "reinmax":
            self.encoder = nn.Sequential(_mlp([d, *REINMAX_HIDDEN, width], nn.ReLU), unflatten)
            self.decoder = nn.Sequential(flatten, _mlp([width, *REINMAX_HIDDEN[::-1], d], nn.ReLU))
            self.register_buffer("prior_logits", torch.zeros(self.latent.shape))  # fixed: uniform
        elif c.protocol == "disarm":
            mid = [c.hidden, c.hidden] if c.arch == "nonlinear" else []
            act = functools.partial(nn.LeakyReLU, DISARM_SLOPE)
            mean = self.data.train_mean.cpu()
            self.encoder = nn.Sequential(Affine(1.0, -mean), _glorot(_mlp([d, *mid, width], act)), unflatten)
            decoder = _glorot(_mlp([width, *mid, d], act))
            with torch.no_grad():
                decoder[-1].bias.copy_(torch.logit(mean.clamp(*DISARM_BIAS_CLIP)))
            self.decoder = nn.Sequential(flatten, Affine(2.0, torch.tensor(-1.0)), decoder)
            self.prior_logits = nn.Parameter(torch.zeros(self.latent.shape))
        else:
            mid = [c.hidden, c.hidden] if c.arch == "nonlinear" else []
            self.encoder = nn.Sequential(_mlp([d, *mid, width]), unflatten)
            self.decoder = nn.Sequential(flatten, _mlp([width, *mid, d]))
            self.prior_logits = nn.Parameter(torch.zeros(self.latent.shape))
        self.to(self.device)
        self.eval_generator = torch.Generator(device=self.device)

    def optimizer_groups(self) -> list[ParamGroup]:
        """protocol=disarm: the prior logits by plain SGD at 1e-2, as the launcher's prior optimizer."""
        if self.config.protocol == "disarm":
            return [ParamGroup(("prior_logits",), DISARM_PRIOR_LR, "sgd")]
        return []

    def ema_variance_decay(self) -> float | None:
        """protocol=disarm: the launcher's encoder-gradient variance (decay 0.999), as grad/ema_variance."""
        return DISARM_EMA_DECAY if self.config.protocol == "disarm" else None

    def kl(self, logits: torch.Tensor) -> torch.Tensor:
        """KL(q(b|x) || p(b)) per example, in closed form."""
        prior = self.prior_logits.expand_as(logits)
        if self.node.kind == "bernoulli":
            q = torch.sigmoid(logits)
            kl = q * (F.logsigmoid(logits) - F.logsigmoid(prior)) + (1 - q) * (
                F.logsigmoid(-logits) - F.logsigmoid(-prior))
        else:
            log_q = F.log_softmax(logits, -1)
            kl = log_q.exp() * (log_q - F.log_softmax(prior, -1))
        return ops.flat_events(kl, self.latent).sum(-1)

    def log_likelihood(self, code: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|b) per example; ``code`` may carry leading sample dims."""
        logits = self.decoder(code)
        return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)

    def train_batch(self):
        x, _ = self.data.batch(self.config.batch_size, self.data_generator)
        logits = self.encoder(x)
        if self.config.iw_k > 1:
            logits = logits.unsqueeze(1).expand(logits.shape[0], self.config.iw_k, *logits.shape[1:])
        return logits, self.cost(logits, x)

    def cost(self, logits: torch.Tensor, x: torch.Tensor):
        """The cost function of codes for the images ``x`` whose encoder logits are ``logits``."""
        if self.config.iw_k > 1:
            return self.iw_cost(logits, x)
        if self.config.protocol == "disarm":  # the launcher's -ELBO(b): log q(b|x) enters as a value only
            latent, q_logits = self.latent, logits.detach()
            return lambda code: (ops.log_prob(latent, q_logits, code) - ops.log_prob(latent, self.prior_logits, code)
                                 - self.log_likelihood(code, x))
        kl = self.kl(logits)
        return lambda code: kl - self.log_likelihood(code, x)

    def iw_cost(self, draws: torch.Tensor, x: torch.Tensor):
        """iw_k > 1: the cost -log 1/k sum_j exp(l_j) of codes (*prefix, batch, k, *latent), with the
        per-sample log-weights l_j = log p(x | h_j) + log p(h_j) - log q(h_j | x) as the VIMCO hook."""
        latent, k = self.latent, self.config.iw_k

        def log_weight(code: torch.Tensor) -> torch.Tensor:
            return (self.log_likelihood(code, x.unsqueeze(1)) + ops.log_prob(latent, self.prior_logits, code)
                    - ops.log_prob(latent, draws, code))

        def cost(code: torch.Tensor) -> torch.Tensor:
            return math.log(k) - torch.logsumexp(log_weight(code), -1)

        return self.with_log_weight(cost, log_weight)

    def repeated_fixed_batch(self, repeats: int):
        """The fixed batch repeated, with the KL computed from the repeated logits (see Task)."""
        with self.fixed_rng():  # the same draws as fixed_batch(): the same images
            x, _ = self.data.batch(self.config.batch_size, self.data_generator)
        logits = self.encoder(x)
        if self.config.iw_k > 1:
            logits = logits.unsqueeze(1).expand(logits.shape[0], self.config.iw_k, *logits.shape[1:])
        rep = logits.detach().repeat(repeats, *[1] * len(self.node.shape)).requires_grad_(True)
        return logits, rep, self.cost(rep, x.repeat(repeats, 1))

    def exact_gradient(self) -> list[torch.Tensor] | None:
        """By enumeration, for latent spaces of at most 4,096 configurations."""
        return self.enumerated_gradient()

    def _elbo_sum(self, x: torch.Tensor) -> float:
        total = 0.0
        for part in x.split(4096):
            logits = self.encoder(part)
            code = ops.forward(self.latent, logits, self.eval_generator)
            total += float((self.log_likelihood(code, part) - self.kl(logits)).sum())
        return total

    def iw_bound(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Per-image importance-weighted bound with k samples from q (draws from ``eval_generator``)."""
        out = []
        chunk = max(1, 2_000_000 // (k * x.shape[1]))
        prior = self.prior_logits
        for part in x.split(chunk):
            logits = self.encoder(part)
            u = ops.uniform((k, *logits.shape), logits, self.eval_generator)
            b = ops.from_perturbed(self.node, ops.perturb(self.node, logits.expand_as(u), u))
            log_w = (self.log_likelihood(b, part) + ops.log_prob(self.latent, prior.expand_as(b), b)
                     - ops.log_prob(self.latent, logits, b))
            out.append(torch.logsumexp(log_w, 0) - math.log(k))
        return torch.cat(out)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.eval_generator.manual_seed(0)
        test, train, valid = self.data.test_x, self.data.train_x, self.data.valid_x
        out = {"test_elbo": self._elbo_sum(test) / test.shape[0],
               "test_iw_bound": float(self.iw_bound(test, self.config.iw_samples).mean()),
               "train_elbo": self._elbo_sum(train) / train.shape[0]}
        self.eval_generator.manual_seed(1)
        return {**out, "valid_elbo": self._elbo_sum(valid) / valid.shape[0],
                "valid_iw_bound": float(self.iw_bound(valid, self.config.iw_samples).mean())}
