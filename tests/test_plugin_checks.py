"""How a plugin author tests an estimator with gradbench.testing.parametrize_with_checks (examples/disarm.py).

In a plugin's own repository this is all it takes (CONTRIBUTING.md)::

    from gradbench.testing import parametrize_with_checks
    from my_plugin import DisARM

    @parametrize_with_checks([DisARM])
    def test_disarm_conforms(estimator_check):
        estimator_check()

Here the example is a file, loaded as ``--plugin`` loads it. Importing it registers "disarm", so it is
loaded inside a registry snapshot: the class is kept, the registration undone, and nothing is registered
while pytest collects (the conformance matrix of test_conformance.py stays the same).
"""

from __future__ import annotations

from pathlib import Path

from helpers import registry_snapshot

from gradbench.registry import get_estimator_class, list_estimators, load_plugin
from gradbench.testing import estimator_checks, parametrize_with_checks

DISARM_FILE = Path(__file__).resolve().parents[1] / "examples" / "disarm.py"

with registry_snapshot():
    load_plugin(str(DISARM_FILE))
    DisARM = get_estimator_class("disarm")


@parametrize_with_checks([DisARM])
def test_disarm_conforms(estimator_check):
    estimator_check()


def test_one_item_per_check_and_node_kind():
    assert [c.id for c in estimator_checks([DisARM])] == [
        "disarm-output-bernoulli", "disarm-gradients-bernoulli", "disarm-separation-bernoulli",
        "disarm-determinism-bernoulli", "disarm-float64-bernoulli", "disarm-cost_evals-bernoulli",
        "disarm-unbiased-bernoulli",  # it claims unbiased: checked against enumeration
    ]
    assert "disarm" not in list_estimators()  # loaded for its class, not registered
