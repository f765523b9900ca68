"""Estimator tags: the facts the engine reads come from ``Estimator.tags_for(config)``, not from ClassVars.

The defaults are the ClassVars (so plugins written against the ClassVar contract keep working); a
configuration with other facts says so (``nvil:normalise=true`` is biased, ``ste:variant=prob`` and
``dab:approximator=independent`` run fewer node kinds, ``NAME:samples=k`` only stochastic ones). The
engine's own pieces: the record's ``unbiased``, which conformance checks apply, the refusal and its hint
(a task's ``node_key``), the accel path, and the sampled reference gradient (no registry look-up).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import register
from test_conformance import ENTRIES

import gradbench
from gradbench import gradstats, ops
from gradbench.errors import UnsupportedError
from gradbench.estimator import EstimatorTags
from gradbench.execution import pick_accel
from gradbench.multisample import estimator_class
from gradbench.registry import ESTIMATORS, get_estimator_class, get_task_class
from gradbench.spec import resolve
from gradbench.testing import SMALL_NODES, check_unbiased, estimator_checks


@pytest.mark.parametrize("name", gradbench.list_estimators())
def test_default_tags_are_the_class_vars(name):
    """At the default config every registered estimator's tags are exactly its ClassVars (what the engine
    read before tags existed), so no committed record or leaderboard row changes meaning."""
    cls = get_estimator_class(name)
    old = {field: getattr(cls, field) for field in EstimatorTags.names()}
    for tags in (cls.tags_for(), cls.tags_for(cls.Config())):
        assert dataclasses.asdict(tags) == {**old, "supports": frozenset(cls.supports)}


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e if isinstance(e, str) else f"{e[0]}{e[1]}")
def test_tags_supports_is_what_the_constructor_accepts(entry):
    """For every configuration the conformance suite runs: a kind is in the tags' ``supports`` exactly
    when the constructor accepts that kind's small node (so a refusal happens up front, with its hint)."""
    name, values = (entry, {}) if isinstance(entry, str) else entry
    cls, values = estimator_class(name, dict(values))
    config = cls.make_config(values)
    supports = cls.tags_for(config).supports
    assert supports <= cls.supports
    for kind, node in SMALL_NODES.items():
        try:
            cls(node, config)
            accepted = True
        except UnsupportedError:
            accepted = False
        assert accepted == (kind in supports), (kind, sorted(supports))


def test_config_dependent_tags_of_the_built_ins():
    nvil = get_estimator_class("nvil")
    assert nvil.tags_for(nvil.make_config({"normalise": True})).unbiased is False
    assert nvil.tags_for(nvil.make_config({"normalise": False, "decay": 0.5})).unbiased is True
    ste = get_estimator_class("ste")
    assert ste.tags_for(ste.make_config({"variant": "prob"})).supports == {"threshold", "argmax", "bernoulli",
                                                                           "categorical"}
    dab = get_estimator_class("dab")
    assert dab.tags_for(dab.make_config({"approximator": "independent"})).supports == {"sign", "threshold",
                                                                                       "bernoulli", "round"}
    cls, values = estimator_class("ste", {"samples": 2})  # the engine's multi-sample wrapper
    assert cls.tags_for(cls.make_config(values)).supports == {"bernoulli", "categorical"}
    cls, values = estimator_class("nvil", {"samples": 2, "normalise": True})  # the wrapper keeps the claim
    assert cls.tags_for(cls.make_config(values)).unbiased is False
    est = nvil(SMALL_NODES["bernoulli"], nvil.make_config({"normalise": True}))
    assert est.tags == nvil.tags_for(est.config) and est.tags.unbiased is False


def test_nvil_normalised_record_says_biased_and_is_not_checked_for_unbiasedness():
    """``nvil:normalise=true`` is biased (|z| = 33 on Bernoulli in the unbiasedness check): its record says
    ``unbiased: false`` and the conformance suite does not apply the unbiasedness check to it; the default
    still claims unbiasedness and is checked."""
    normalised = resolve("toy", "nvil:normalise=true", steps=1)
    assert normalised.as_dict()["estimator"]["unbiased"] is False
    assert resolve("toy", "nvil", steps=1).as_dict()["estimator"]["unbiased"] is True
    assert not any(c.check is check_unbiased for c in estimator_checks([("nvil", {"normalise": True})]))
    assert sum(c.check is check_unbiased for c in estimator_checks(["nvil"])) == 2
    nvil = get_estimator_class("nvil")  # and the claim withdrawn is a true one: the check rejects it
    assert not check_unbiased(nvil, SMALL_NODES["bernoulli"], nvil.make_config({"normalise": True})).passed


@dataclasses.dataclass(frozen=True)
class _ScaleConfig:
    scale: float = 1.0  # multiplies the score-function term: 1 is REINFORCE, anything else is biased


class _ScaledScore(gradbench.Estimator):
    """Single-sample REINFORCE whose score term is scaled by ``scale``: unbiased at scale 1 only, which it
    declares per config (a plugin written against ``tags_for``)."""

    name = "test_scaled_score"
    supports = frozenset({"bernoulli", "categorical"})
    unbiased = True
    Config = _ScaleConfig

    @classmethod
    def tags_for(cls, config=None):
        tags = super().tags_for(config)
        return dataclasses.replace(tags, unbiased=cls.config_or_default(config).scale == 1.0)

    def forward(self, logits, cost_fn):
        x = logits.detach()
        b = ops.from_perturbed(self.node, ops.perturb(self.node, x, ops.uniform(x.shape, x)))
        f = cost_fn(b)
        log_p = ops.log_prob(self.node, logits, b)
        surrogate = f + self.config.scale * f.detach() * (log_p - log_p.detach())
        return gradbench.EstimatorOutput(b, f.detach(), surrogate.mean(), self.zero(logits), {"cost_evals": 1})


def test_the_record_and_checks_read_a_plugins_tags(tmp_path):
    """A plugin's ``tags_for`` reaches the record written by a real run and the conformance selection."""
    register(_ScaledScore)
    record = gradbench.run(task="toy", estimator="test_scaled_score:scale=2", steps=2, eval_every=1,
                           grad_stats=False, runs=str(tmp_path), device="cpu")
    assert record["status"] == "ok", record["error"]
    assert record["estimator"]["unbiased"] is False
    assert resolve("toy", "test_scaled_score", steps=2).as_dict()["estimator"]["unbiased"] is True
    assert not any(c.check is check_unbiased for c in estimator_checks([(_ScaledScore, {"scale": 2.0})]))
    assert sum(c.check is check_unbiased for c in estimator_checks([_ScaledScore])) == 2


class _CategoricalOnly(gradbench.Estimator):
    name = "test_categorical_only"
    supports = frozenset({"categorical"})


def test_toy_refusal_hint_names_its_node_key():
    """The toy selects its node with ``variant``, not ``node``: the hint reads toy:variant=categorical."""
    assert get_task_class("toy").node_key == "variant"
    register(_CategoricalOnly)
    with pytest.raises(UnsupportedError, match=r"try --task toy:variant=categorical$"):
        resolve("toy", "test_categorical_only", steps=1)


def test_refusal_and_hint_follow_the_configs_tags():
    """``ste:variant=prob`` on the sort task's sign node: refused up front with the constructor's own reason
    and a setting that works at that config."""
    with pytest.raises(UnsupportedError, match=r"variant=prob is not defined for sign nodes.*"
                                               r"try --task sort:node=bernoulli$"):
        resolve("sort", "ste:variant=prob", steps=1)


def test_accel_reads_the_configs_tags():
    class CompilesWhenPlain(_CategoricalOnly):
        name = "test_compiles_when_plain"
        Config = get_estimator_class("ste").Config

        @classmethod
        def tags_for(cls, config=None):
            tags = super().tags_for(config)
            return dataclasses.replace(tags, compilable=cls.config_or_default(config).variant == "identity")

    cpu = torch.device("cpu")
    assert pick_accel("compile", CompilesWhenPlain, cpu)[0] == "compile"
    used, why = pick_accel("compile", CompilesWhenPlain, cpu, config=CompilesWhenPlain.Config(variant="prob"))
    assert used == "none" and "cannot run under torch.compile" in why


def _small_vae():
    vae = get_task_class("vae")
    torch.manual_seed(0)
    return vae(vae.make_config({"latents": 20}, "quick"))  # 2^20 codes: no exact gradient


def test_sampled_reference_is_the_engines_own_and_unchanged():
    """The sampled reference no longer looks ``reinforce`` up in the registry; it draws exactly what
    ``reinforce:baseline=rloo,samples=64`` drew (bit for bit), so committed gradient statistics keep
    their values; and it works with no ``reinforce`` registered."""
    task = _small_vae()
    reinforce = get_estimator_class("reinforce")
    old = reinforce(task.node, reinforce.make_config({"baseline": "rloo", "samples": gradstats.REFERENCE_SAMPLES}))
    new = gradstats.LeaveOneOutReference(task.node)
    a, _ = gradstats.gradient_draws(old, task, 4, seed=5, chunk=2)
    b, _ = gradstats.gradient_draws(new, task, 4, seed=5, chunk=2)
    assert torch.equal(a, b)
    del ESTIMATORS._entries["reinforce"]  # restored by the isolated_registry fixture
    ref = gradstats.reference_gradient(task, seed=5, target_noise=10.0)  # one round of draws
    assert ref.kind.startswith("sampled:") and ref.draws == gradstats.REFERENCE_DRAWS
    assert ref.mean is not None and torch.isfinite(ref.mean).all()
