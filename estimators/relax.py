"""RELAX (Grathwohl et al. 2018) and REBAR (Tucker et al. 2017): REINFORCE with a reparameterised control variate.

With z = perturbed logits (b = H(z)) and z~ ~ p(z | b) drawn with fresh noise, both reparameterised in
the logits x, and c(z) a control variate evaluated on the relaxed sample sigma_tau(z):

    g = [f(b) - c(z~)] * d log p(b)/dx + dc(z)/dx - dc(z~)/dx

which is unbiased for any c. Here

* ``rebar``: c(z) = eta * f(sigma_tau(z)) -- the cost itself at the relaxed sample;
* ``relax``: c(z) = eta * f(sigma_tau(z)) + r_psi(sigma_tau(z)) -- plus a learned network, the form
  RELAX used in its discrete experiments (the REBAR term carries each example's context, which a
  network seeing only the relaxed sample cannot know).

eta, log tau and psi are trained to minimise the variance of the whole single-sample estimate of the
gradient w.r.t. the logits, g + d f(b)/dx|direct: a cost may also depend on the logits directly, not
through b (a VAE's KL, the log q(b|x) inside vae:iw_k's log-weights), and ``loss`` passes that term on
too. ``aux_loss`` carries d/d(eta, tau, psi) of mean ||g + d f(b)/dx|direct||^2 (double backprop), as a
surrogate that touches only those parameters. Leaving the direct term out (version 2) is harmless when
it does not depend on the sample (analytic KL: it shifts the objective's gradient by a zero-mean term),
but where it does (a sampled log q) it is correlated with g, and the partial objective's gradient can
point the wrong way. The direct term is taken w.r.t. the ``logits`` tensor passed in, so it is seen
where the cost's graph reaches that tensor (under ``samples=k`` it reaches the logits before their
repeats, and is left out). They get their own learning rate (``lr``): a control variate that trains at
a small model learning rate barely helps.

Cost: 3 cost evaluations per step (f(b), f at the two relaxed samples).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from gradbench import ops
from gradbench.estimator import Estimator, EstimatorOutput
from gradbench.node import Node
from gradbench.registry import register_estimator


@dataclass(frozen=True)
class RelaxConfig:
    variant: Literal["relax", "rebar"] = "relax"  # rebar: the control variate without r_psi
    tau: float = 0.5  # initial temperature (learned)
    eta: float = 1.0  # initial weight of the REBAR term (learned)
    hidden: int = 64  # width of r_psi (relax only)
    lr: float = 1e-2  # learning rate of eta, tau, psi

    def __post_init__(self) -> None:
        if not self.tau > 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")
        if self.hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {self.hidden}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


@register_estimator("relax")
class Relax(Estimator):
    version = "3"  # 3: the variance objective includes the cost's direct path to the logits; 2: Tanh r_psi
    supports = frozenset({"bernoulli", "categorical"})
    unbiased = True
    Config = RelaxConfig
    compilable = False  # the variance objective differentiates a gradient: aot_autograd has no double backward
    batchable = False  # ... and torch.autograd.grad cannot run under vmap

    def __init__(self, node: Node, config: RelaxConfig | None = None) -> None:
        super().__init__(node, config)
        self.log_tau = nn.Parameter(torch.tensor(math.log(self.config.tau)))
        self.eta = nn.Parameter(torch.tensor(float(self.config.eta)))
        self.net = None
        if self.config.variant == "relax":
            # smooth (Tanh), so the estimate moves smoothly with tau and psi and the double-backprop
            # variance gradient is the true one (a ReLU's kinks make it jump: version 1 used ReLU)
            self.net = nn.Sequential(nn.Linear(node.numel, self.config.hidden), nn.Tanh(),
                                     nn.Linear(self.config.hidden, 1))

    def control_variate(self, z: torch.Tensor, cost_fn) -> torch.Tensor:
        soft = ops.relaxed(self.node, z, self.log_tau.exp())
        c = self.eta * cost_fn(soft)
        if self.net is not None:
            flat = ops.flat_events(soft, self.node)
            c = c + self.net(flat.to(self.eta.dtype)).squeeze(-1).to(flat.dtype)
        return c

    @staticmethod
    def direct_gradient(f: torch.Tensor, logits: torch.Tensor) -> torch.Tensor | None:
        """d sum f / d logits along the cost's own paths to ``logits`` (not through the sample), detached:
        no control-variate parameter moves it. None where the cost has no such path."""
        if not (logits.requires_grad and f.requires_grad):
            return None
        (direct,) = torch.autograd.grad(f.sum(), logits, retain_graph=True, allow_unused=True)
        return None if direct is None else direct.detach()

    def forward(self, logits, cost_fn) -> EstimatorOutput:
        node = self.node
        x = logits.detach().requires_grad_(True)  # the estimate is built w.r.t. a detached copy
        with torch.enable_grad():
            z = ops.perturb(node, x, ops.uniform(x.shape, x))
            b = ops.from_perturbed(node, z.detach())
            z_tilde = ops.conditional_perturb(node, x, b, ops.uniform(x.shape, x))
            f = cost_fn(b)  # (batch,); its graph reaches cost_fn's parameters and any direct path to logits
            direct = self.direct_gradient(f, logits)  # d f(b)/d logits not through b: part of the estimate
            c_z = self.control_variate(z, cost_fn)
            c_zt = self.control_variate(z_tilde, cost_fn)
            # d log p(b)/dx in closed form, so the coefficient's own x-dependence is not differentiated.
            score = b - ops.probs(node, x)
            coef = (f.detach() - c_zt).view(-1, *([1] * len(node.shape)))
            (reparam,) = torch.autograd.grad((c_z - c_zt).sum(), x, create_graph=True, allow_unused=True)
            if reparam is None:  # a cost that ignores its input: the control variate has no x-path
                reparam = torch.zeros_like(x)
            g = coef * score + reparam  # (batch, *shape): one estimate per example, less the direct path
            full = g if direct is None else g + direct  # what loss puts on each example's logits (x batch)
            variance = full.pow(2).flatten(1).sum(-1).mean()
            own = [p for p in self.parameters() if p.requires_grad]
            own_grads = (torch.autograd.grad(variance, own, allow_unused=True) if variance.requires_grad
                         else [None] * len(own))
        g = g.detach()
        linear = (logits * g).flatten(1).sum(-1).mean()  # d/dlogits = g / batch, as for a batch-mean loss
        aux = self.zero(logits)
        for p, gp in zip(own, own_grads, strict=True):
            if gp is not None:
                aux = aux + (p * gp.detach()).sum()
        return EstimatorOutput(
            sample=b,
            cost=f.detach(),
            loss=f.mean() + (linear - linear.detach()),
            aux_loss=variance.detach() + (aux - aux.detach()),
            diagnostics={"cost_evals": 3, "tau": self.log_tau.detach().exp(), "eta": self.eta.detach(),
                         "grad_sq_norm": variance.detach()},
        )
