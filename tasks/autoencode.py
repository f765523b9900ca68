"""Discrete-latent autoencoder with a linear probe (DAB paper's unsupervised representation domain).

Model: Linear(D, hidden)-ReLU-Linear(hidden, latents*K) -> node -> Linear(latents*K, hidden)-ReLU-
Linear(hidden, D) -> Bernoulli logits per pixel. The code is ``latents`` one-hot variables of ``classes``
classes (``categorical`` sampled, ``argmax`` deterministic; K = classes) or ``latents`` bits
(``bernoulli`` sampled, ``threshold`` deterministic; K = 1). Cost: reconstruction, the Bernoulli negative
log-likelihood of the binarized image summed over pixels (nats per image). No prior or KL: this is an
autoencoder, not a VAE.

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
    node: Literal["categorical", "argmax", "bernoulli", "threshold"] = "categorical"  # one-hot code or bits
    latents: int = 20  # code variables
    classes: int = 10  # classes per one-hot variable (categorical/argmax)
    hidden: int = 256  # width of the encoder's and decoder's hidden layer
    batch_size: int = 64  # training images per step
    lr: float = 1e-3  # Adam learning rate of the model
    probe_train: int = 10_000  # training codes the probe is fit on (the first ones of the fixed train split)

    def __post_init__(self) -> None:
        for key in ("latents", "hidden", "batch_size", "probe_train"):
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

    @classmethod
    def node_of(cls, config: AutoencodeConfig) -> Node:
        if config.node in ("categorical", "argmax"):
            return Node(config.node, (config.latents, config.classes))
        return Node(config.node, (config.latents,))

    @classmethod
    def check_config(cls, config: AutoencodeConfig) -> None:
        data.check(config.dataset)

    def __init__(self, config: AutoencodeConfig, device: torch.device | str = "cpu") -> None:
        super().__init__(config, device)
        c = config
        self.data = data.image_set(c.dataset, c.binarize, self.device)
        width = c.latents * (c.classes if c.node in ("categorical", "argmax") else 1)
        self.encoder = nn.Sequential(nn.Linear(self.data.dim, c.hidden), nn.ReLU(), nn.Linear(c.hidden, width),
                                     nn.Unflatten(-1, self.node.shape))
        self.decoder = nn.Sequential(nn.Flatten(-len(self.node.shape)), nn.Linear(width, c.hidden), nn.ReLU(),
                                     nn.Linear(c.hidden, self.data.dim))
        self.to(self.device)
        self.eval_generator = torch.Generator(device=self.device)

    def cost(self, code: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction NLL in nats per image; ``code`` may carry leading sample dims."""
        logits = self.decoder(code)
        return F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)

    def train_batch(self):
        x, _ = self.data.batch(self.config.batch_size, self.data_generator)
        return self.encoder(x), lambda code: self.cost(code, x)

    def exact_gradient(self) -> list[torch.Tensor] | None:
        """By enumeration, for stochastic codes with at most 4,096 configurations."""
        return self.enumerated_gradient()

    def _codes(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([ops.forward(self.node, self.encoder(part), self.eval_generator) for part in x.split(4096)])

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

