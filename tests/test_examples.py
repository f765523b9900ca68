"""The files in examples/ work as CONTRIBUTING.md says: the task plugin loads, trains and is measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import registry_snapshot

import gradbench
from gradbench import registry
from gradbench.errors import UnsupportedError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def clean_registries():
    """Snapshot the registries (their entries and the memo of loaded plugins) and restore them afterwards,
    so the example's registration does not leak into other test files. (conftest.py's autouse
    ``isolated_registry`` does the same for every test; this fixture says so where it matters.)"""
    with registry_snapshot():
        yield


def test_task_plugin_trains_and_is_measured(tmp_path, clean_registries):
    registry.load_plugin(str(EXAMPLES / "task_plugin.py"))
    assert "threshold-sum" in gradbench.list_tasks()
    runs = tmp_path / "runs"
    # 100 draws: enough for the debiased cosine to clear its 2-SE gate (at 20 draws it is None in 2 of 3 seeds)
    record = gradbench.run("threshold-sum", "reinforce", seed=0, device="cpu", steps=200, grad_draws=100,
                           runs=str(runs))
    assert record["status"] == "ok", record["error"]
    assert record["metrics"]["accuracy"]["value"] >= 0.9  # chance is 0.5; the 200 steps here reach ~0.98
    assert record["metrics"]["accuracy"]["higher_is_better"] is True
    path = runs / "threshold-sum" / "reinforce" / f"{record['run_id']}.json"
    assert json.loads(path.read_text())["run_id"] == record["run_id"]
    end = record["gradient"]["checkpoints"][-1]
    assert end["reference"] == "exact"  # exact_gradient by enumeration of the 256 codes
    assert end["cosine"] > 0.5


def test_task_plugin_sign_node(tmp_path, clean_registries):
    registry.load_plugin(str(EXAMPLES / "task_plugin.py"))
    record = gradbench.run("threshold-sum:node=sign", "dab", seed=0, device="cpu", steps=200, grad_stats=False,
                           runs=str(tmp_path / "runs"))
    assert record["status"] == "ok", record["error"]
    assert record["task"]["node"]["kind"] == "sign"
    assert record["metrics"]["accuracy"]["value"] >= 0.9
    # the refusal names the setting that works (here the task's default node)
    with pytest.raises(UnsupportedError, match=r"try --task threshold-sum(:node=bernoulli)?$"):
        gradbench.run("threshold-sum:node=sign", "gumbel", device="cpu", steps=1, runs=str(tmp_path / "runs"))


def test_registries_restored():
    """Runs after the tests above (file order): the example's task is gone again."""
    assert "threshold-sum" not in gradbench.list_tasks()
