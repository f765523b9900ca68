"""Discrete-latent autoencoder with a linear probe (DAB paper's unsupervised representation domain).

Model: Linear(D, hidden)-ReLU-Linear(hidden, latents*K) -> node -> Linear(latents*K, hidden)-ReLU-
Linear(hidden, D) -> Bernoulli logits per pixel. The code is ``latents`` one-hot variables of ``classes``
classes (``categorical`` sampled, ``argmax`` deterministic; K = classes) or ``latents`` bits
(``bernoulli`` sampled, ``threshold`` deterministic; K = 1). Cost: reconstruction, the Bernoulli negative
log-likelihood of the binarized image summed over pixels (nats per image). No prior or KL: this is an
autoencoder, not a VAE.

``kmeans`` (VQ-VAE style, docs/nodes.md): the encoder gives ``latents`` vectors of dimension ``dim``, each
quantized to the nearest of ``classes`` shared centroids; the decoder sees the quantized vectors
(``kmeans_output=vectors``, latents x dim) or the one-hot assignments (``assignments``, latents x classes).
The centroids are task state, not parameters: buffers updated in place every training step by VQ-VAE's
exponential moving averages (decay ``decay``; counts Laplace-smoothed), initialised at encoded vectors of
random training images (only a training step moves them: batches drawn without gradient or by
``fixed_batch`` for measurement leave them as they are). They reach the node as the last ``classes``
rows of its input (the m vectors, then the c centroids), so the estimator sees the whole function. The
training cost adds VQ-VAE's commitment term ``commitment`` * ||z - sg(e)||^2 (summed per image) for every
estimator; ``test_recon`` is the reconstruction alone. The default beta is 0.05, not VQ-VAE's 0.25: at 0.25
the encoder of a ``dab`` run collapsed to image-independent codes (probe at chance) on 1 of 4 quick-preset
seeds, as the pull towards the centroids outweighed the approximator's early gradient; at 0.05, 4 of 4
learned (probe 0.77-0.81).

Metrics on the fixed test split (stochastic codes: one sample from a fixed generator):
``test_recon`` (nats per image, main) and ``probe_accuracy``: a multinomial logistic regression
(scikit-learn, lbfgs, C=1, fixed) fit on the codes of up to ``probe_train`` fixed training images and
scored on the test codes: how linearly separable the classes are in the code. The same two on the fixed
validation split (the same probe, scored on the validation codes): ``valid_recon``, ``valid_probe_accuracy``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from gradbench import data, ops
from gradbench.node import Node
from gradbench.registry import register_task
from gradbench.task import Preset, Task, validation_metrics


@dataclass(frozen=True)
class AutoencodeConfig:
    dataset: Literal["digits", "fashion-mnist", "mnist"] = "digits"  # digits is embedded; the others load from disk
    binarize: Literal["dynamic", "static", "threshold"] = "dynamic"  # resampled per batch, sampled once, or > 0.5
    node: Literal["categorical", "argmax", "bernoulli", "threshold", "kmeans"] = "categorical"  # the code
    latents: int = 20  # code variables
    classes: int = 10  # classes per one-hot variable (categorical/argmax)
    hidden: int = 256  # width of the encoder's and decoder's hidden layer
    batch_size: int = 64  # training images per step
    lr: float = 1e-3  # Adam learning rate of the model
    probe_train: int = 10_000  # training codes the probe is fit on (the first ones of the fixed train split)
    dim: int = 8  # kmeans: dimension of the encoder's vectors and of the centroids (classes: how many centroids)
    kmeans_output: Literal["vectors", "assignments"] = "vectors"  # kmeans: quantized vectors or one-hot codes
    decay: float = 0.99  # kmeans: decay of the centroids' moving averages (VQ-VAE's codebook update)
    commitment: float = 0.05  # kmeans: beta of the commitment term beta*||z - sg(e)||^2 in the cost (VQ-VAE: 0.25)

    def __post_init__(self) -> None:
        if not 0 <= self.decay < 1:
            raise ValueError(f"decay must be in [0, 1), got {self.decay}")
        if not self.commitment >= 0:
            raise ValueError(f"commitment must be >= 0, got {self.commitment}")
        for key in ("latents", "hidden", "batch_size", "probe_train", "dim"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.classes < 2:
            raise ValueError(f"classes must be >= 2, got {self.classes}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def probe_accuracy(train_codes: torch.Tensor, train_y: torch.Tensor, test_codes: torch.Tensor,
                   test_y: torch.Tensor, *more: torch.Tensor) -> float | tuple[float, ...]:
    """Test accuracy of a fixed multinomial logistic regression fit on the training codes; with ``more``
    (further codes, labels pairs) the accuracy on each of them too, from the same fit."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=1.0, max_iter=300)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(train_codes.flatten(1).double().cpu().numpy(), train_y.cpu().numpy())
    pairs = [(test_codes, test_y), *zip(more[::2], more[1::2], strict=True)]
    scores = tuple(float(clf.score(c.flatten(1).double().cpu().numpy(), y.cpu().numpy())) for c, y in pairs)
    return scores if more else scores[0]


@register_task("autoencode")
class AutoencodeTask(Task):
    version = "2"  # 2: data from the task's own stream (common random numbers); validation metrics
    Config = AutoencodeConfig
    presets = {
        "quick": Preset("digits (8x8, dynamic binarization), 20x10 categorical code, hidden 256, batch 64, "
                        "Adam lr 1e-3, 2000 steps; CPU, seconds", steps=2000, eval_every=500),
        "paper": Preset("Fashion-MNIST (dynamic binarization), 20x10 categorical code, hidden 512, batch 100, "
                        "Adam lr 1e-3, 50k steps; gradbench's protocol", steps=50_000, eval_every=5_000,
                        grad_draws=1000,
                        config={"dataset": "fashion-mnist", "hidden": 512, "batch_size": 100}),
    }
    metrics = validation_metrics({"test_recon": False, "probe_accuracy": True})
    main_metric = "test_recon"
    fraction_metrics = frozenset({"probe_accuracy"})  # one validation image moves it by 1/N (tuning's tie rule)

    @classmethod
    def node_of(cls, config: AutoencodeConfig) -> Node:
        if config.node in ("categorical", "argmax"):
            return Node(config.node, (config.latents, config.classes))
        if config.node == "kmeans":
            out = config.dim if config.kmeans_output == "vectors" else config.classes
            return Node("kmeans", (config.latents, out), centroids=config.classes, output=config.kmeans_output,
                        dim=config.dim)
        return Node(config.node, (config.latents,))

    @classmethod
    def check_config(cls, config: AutoencodeConfig) -> None:
        data.check(config.dataset)

    def __init__(self, config: AutoencodeConfig, device: torch.device | str = "cpu") -> None:
        super().__init__(config, device)
        c = config
        self.data = data.image_set(c.dataset, c.binarize, self.device)
        kmeans = c.node == "kmeans"
        width = c.latents * (c.classes if c.node in ("categorical", "argmax") else c.dim if kmeans else 1)
        vectors = (c.latents, c.dim) if kmeans else self.node.shape  # the encoder's output
        self.encoder = nn.Sequential(nn.Linear(self.data.dim, c.hidden), nn.ReLU(), nn.Linear(c.hidden, width),
                                     nn.Unflatten(-1, vectors))
        self.decoder = nn.Sequential(nn.Flatten(-len(self.node.shape)), nn.Linear(self.node.numel, c.hidden),
                                     nn.ReLU(), nn.Linear(c.hidden, self.data.dim))
        self.to(self.device)
        self.eval_generator = torch.Generator(device=self.device)
        self._update_codebook = True  # off while fixed_batch() draws a batch for measurement
        if kmeans:
            with torch.no_grad():  # k-means initialisation: encoded vectors of random training images
                z = self.encoder(self.data.train_x[torch.randint(self.data.train_x.shape[0], (256,))
                                                   .to(self.device)]).flatten(0, 1)
                init = z[torch.randperm(z.shape[0])[:c.classes].to(self.device)]
            self.register_buffer("centroids", init.clone())
            self.register_buffer("cluster_size", torch.ones(c.classes, device=self.device))  # EMA of counts
            self.register_buffer("cluster_sum", init.clone())  # EMA of the assigned vectors' sums

    def cost(self, code: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction NLL in nats per image; ``code`` may carry leading sample dims."""
        logits = self.decoder(code)
        return F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)

    def train_batch(self):
        x, _ = self.data.batch(self.config.batch_size, self.data_generator)
        if self.config.node != "kmeans":
            return self.encoder(x), lambda code: self.cost(code, x)
        z = self.encoder(x)
        index = ops.nearest_centroid(z.detach(), self.centroids)  # what the node computes too
        commit = (z - self.centroids[index]).pow(2).flatten(1).sum(-1)  # per image; the centroids carry no grad
        logits = self.node_input(z)
        if self._update_codebook and torch.is_grad_enabled():  # a training step: not a batch drawn for a
            self._ema_update(z.detach(), index)  # fingerprint (no_grad) or for measurement (fixed_batch)
        beta = self.config.commitment
        return logits, lambda code: self.cost(code, x) + beta * commit

    def node_input(self, z: torch.Tensor) -> torch.Tensor:
        """The kmeans node's input: the encoder's vectors (batch, m, d), then the centroids (c, d) of every
        example (a copy: the in-place update that follows does not change it)."""
        return torch.cat([z, self.centroids.expand(z.shape[0], *self.centroids.shape)], dim=1)

    @torch.no_grad()
    def _ema_update(self, z: torch.Tensor, index: torch.Tensor) -> None:
        """One step of VQ-VAE's codebook moving averages, in place (no host synchronisation):
        N_c <- d N_c + (1 - d) n_c, S_c <- d S_c + (1 - d) sum_{z -> c} z, e_c = S_c / N~_c, with N~ the
        counts Laplace-smoothed so that an unused centroid is never divided by zero."""
        decay, eps = self.config.decay, 1e-5
        hits = (index.flatten().unsqueeze(-1) == torch.arange(self.config.classes, device=z.device)).to(z.dtype)
        self.cluster_size.mul_(decay).add_(hits.sum(0), alpha=1 - decay)
        self.cluster_sum.mul_(decay).add_(hits.T @ z.flatten(0, -2), alpha=1 - decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + eps) / (total + self.config.classes * eps) * total
        self.centroids.copy_(self.cluster_sum / smoothed.unsqueeze(-1))

    def fixed_batch(self):
        """The fixed batch, without moving the centroids (measuring must not change the trajectory)."""
        self._update_codebook = False
        try:
            return super().fixed_batch()
        finally:
            self._update_codebook = True

    def exact_gradient(self) -> list[torch.Tensor] | None:
        """By enumeration, for stochastic codes with at most 4,096 configurations."""
        return self.enumerated_gradient()

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x)
        return self.node_input(z) if self.config.node == "kmeans" else z

    def _codes(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([ops.forward(self.node, self._logits(part), self.eval_generator) for part in x.split(4096)])

    def _recon(self, codes: torch.Tensor, images: torch.Tensor) -> float:
        total = sum(float(self.cost(c, x).sum()) for c, x in zip(codes.split(4096), images.split(4096), strict=True))
        return total / images.shape[0]

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.eval_generator.manual_seed(0)
        test_codes = self._codes(self.data.test_x)
        valid_codes = self._codes(self.data.valid_x)
        n = self.config.probe_train
        train_codes = self._codes(self.data.train_x[:n])
        probe, valid_probe = probe_accuracy(train_codes, self.data.train_y[:n], test_codes, self.data.test_y,
                                            valid_codes, self.data.valid_y)
        return {"test_recon": self._recon(test_codes, self.data.test_x), "probe_accuracy": probe,
                "valid_recon": self._recon(valid_codes, self.data.valid_x), "valid_probe_accuracy": valid_probe}

