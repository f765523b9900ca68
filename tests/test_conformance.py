"""The conformance checks of gradbench.testing, parametrized over the registry.

A newly registered estimator is picked up here with no new test code. Extra configurations of the
built-ins (each straight-through variant, each REINFORCE baseline, REBAR) run the same checks.
The unbiasedness check fails a truly unbiased estimator with probability <= 0.1% per node (see
gradbench.testing.ALPHA); with the seeds fixed here the outcome is deterministic.
"""

from __future__ import annotations

import pytest

import gradbench
from gradbench.registry import get_estimator_class
from gradbench.testing import CHECKS, check_unbiased, nodes_for

EXTRA_CONFIGS = {
    "ste": [{"variant": "clipped"}, {"variant": "prob"}],
    "reinforce": [{"baseline": "none", "samples": 1}, {"baseline": "ema", "samples": 1}, {"baseline": "rloo",
                                                                                          "samples": 4}],
    "relax": [{"variant": "rebar"}],
    "gumbel": [{"hard": True, "tau": 0.5}, {"anneal_rate": 1e-3}],
    "dab": [{"approximator": "independent"}],
}


def _cases():
    for name in gradbench.list_estimators():
        cls = get_estimator_class(name)
        for values in [{}, *EXTRA_CONFIGS.get(name, [])]:
            config = cls.make_config(values)
            for node in nodes_for(cls):
                if values.get("variant") == "prob" and node.kind == "sign":
                    continue  # refused by design: no mean function for sign
                tag = ",".join(f"{k}={v}" for k, v in values.items()) or "default"
                yield pytest.param(cls, config, node, id=f"{name}[{tag}]-{node.kind}")


CASES = list(_cases())


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
@pytest.mark.parametrize("cls,config,node", CASES)
def test_contract(check, cls, config, node):
    result = check(cls, config=config, node=node)
    assert result.passed, str(result)


@pytest.mark.parametrize("cls,config,node", [c for c in CASES if c.values[0].unbiased and c.values[2].stochastic])
def test_unbiased_against_enumeration(cls, config, node):
    result = check_unbiased(cls, node, config)
    assert result.passed, str(result)


@pytest.mark.parametrize("name,values", [("ste", {"variant": "prob"}), ("gumbel", {"tau": 0.5}),
                                         ("gumbel", {"tau": 0.1, "hard": True}), ("dab", {})])
@pytest.mark.parametrize("kind", ["bernoulli", "categorical"])
def test_unbiased_check_detects_biased_estimators(name, values, kind):
    """Sensitivity: the same test with the same sample size rejects the known-biased estimators."""
    from gradbench.testing import SMALL_NODES

    cls = get_estimator_class(name)
    result = check_unbiased(cls, SMALL_NODES[kind], cls.make_config(values))
    assert not result.passed, str(result)
