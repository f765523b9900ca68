"""How a plugin author tests an estimator with gradbench.testing.parametrize_with_checks (examples/disarm.py).

In a plugin's own repository this is all it takes (CONTRIBUTING.md)::

    from gradbench.testing import parametrize_with_checks
    from my_plugin import DisARM

    @parametrize_with_checks([DisARM])
    def test_disarm_conforms(estimator_check):
        estimator_check()

Here the example is a file, loaded as ``--plugin`` loads it. Importing it registers "my-disarm", so it is
loaded inside a registry snapshot: the class is kept, the registration undone, and nothing is registered
while pytest collects (the conformance matrix of test_conformance.py stays the same). The example is the
built-in ``disarm`` written as a plugin: both give the same estimate.
"""

from __future__ import annotations

from pathlib import Path

import torch
from helpers import registry_snapshot

from gradbench.registry import get_estimator_class, list_estimators, load_plugin
from gradbench.testing import SMALL_NODES, CheckCost, estimator_checks, parametrize_with_checks

DISARM_FILE = Path(__file__).resolve().parents[1] / "examples" / "disarm.py"

with registry_snapshot():
    load_plugin(str(DISARM_FILE))
    DisARM = get_estimator_class("my-disarm")


@parametrize_with_checks([DisARM])
def test_disarm_conforms(estimator_check):
    estimator_check()


def test_one_item_per_check_and_node_kind():
    assert [c.id for c in estimator_checks([DisARM])] == [
        "my-disarm-output-bernoulli", "my-disarm-gradients-bernoulli", "my-disarm-separation-bernoulli",
        "my-disarm-determinism-bernoulli", "my-disarm-float64-bernoulli", "my-disarm-cost_evals-bernoulli",
        "my-disarm-batch_independent-bernoulli",  # it does not declare batch_independent=False: checked
        "my-disarm-unbiased-bernoulli",  # it claims unbiased: checked against enumeration
    ]
    assert "my-disarm" not in list_estimators()  # loaded for its class, not registered


def test_the_example_is_the_built_in_disarm():
    """Same seed, same logits and cost: the plugin and the built-in ``disarm`` give the same sample, cost and
    gradients (so the example in CONTRIBUTING.md stays a faithful copy of the shipped estimator)."""
    node = SMALL_NODES["bernoulli"]
    results = []
    for cls in (DisARM, get_estimator_class("disarm")):
        torch.manual_seed(3)
        cost_fn = CheckCost(node)
        logits = (torch.randn(64, *node.shape) * 0.8).requires_grad_(True)
        out = cls(node)(logits, cost_fn)
        out.loss.backward()
        results.append([out.sample, out.cost, logits.grad, *[p.grad for p in cost_fn.parameters()]])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b)
