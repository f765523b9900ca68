"""The harness end to end on the toy task: records, run ids, reuse, determinism, failures."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import NaNAfterFive, Raises, register, run_toy

import gradbench
from gradbench import records
from gradbench.errors import UsageError
from gradbench.runner import resolve


@pytest.fixture
def stand_ins(isolated_registry):
    register(NaNAfterFive, Raises)


def test_record_has_every_field_and_history(tmp_path):
    rec = run_toy(tmp_path)
    path = records.record_path(tmp_path, "toy", "reinforce", rec["run_id"])
    on_disk = records.read_record(path)
    for key in ("schema_version", "run_id", "status", "error", "task", "estimator", "preset", "seed", "budget",
                "metrics", "main_metric", "gradient", "cost", "provenance"):
        assert key in on_disk, key
    assert on_disk["status"] == "ok" and on_disk["error"] is None
    assert on_disk["budget"] == {"steps": 30}
    assert set(on_disk["metrics"]) == {"gap", "expected_cost"}
    assert on_disk["metrics"]["gap"]["higher_is_better"] is False
    assert on_disk["cost"]["steps"] == 30 and on_disk["cost"]["cost_evals_per_step"] == 2
    prov = on_disk["provenance"]
    for key in ("gradbench_version", "git_sha", "git_dirty", "torch", "python", "cuda", "device_name", "hostname",
                "argv", "start_utc", "end_utc"):
        assert key in prov, key
    lines = [json.loads(x) for x in records.history_path(path).read_text().splitlines()]
    # the first evaluation is of the initial parameters
    assert [r["step"] for r in lines if "test/gap" in r] == [0, 10, 20, 30]
    assert not list(path.parent.glob("*.tmp"))


def test_run_id_covers_what_changes_the_result_and_nothing_else():
    base = resolve("toy", "reinforce")
    assert base.run_id == resolve("toy", "reinforce:baseline=rloo").run_id  # explicit default = same run
    assert base.run_id == resolve("toy", "reinforce", eval_every=7).run_id  # evaluation cadence: same result
    for other in (resolve("toy", "reinforce", seed=1), resolve("toy", "reinforce:samples=3"),
                  resolve("toy:dim=10", "reinforce"), resolve("toy", "reinforce", steps=5),
                  resolve("toy", "reinforce", seconds=5), resolve("toy", "reinforce", preset="paper")):
        assert other.run_id != base.run_id


def test_same_seed_same_metrics_and_reuse_unless_forced(tmp_path):
    a = run_toy(tmp_path, seed=3)
    again = run_toy(tmp_path, seed=3)
    assert again.get("reused") and again["run_id"] == a["run_id"]
    forced = run_toy(tmp_path, seed=3, force=True)
    assert not forced.get("reused")
    assert forced["metrics"] == a["metrics"]
    other = run_toy(tmp_path, seed=4)
    assert other["metrics"] != a["metrics"]


@pytest.mark.usefixtures("stand_ins")
def test_nan_loss_ends_the_run_as_diverged(tmp_path):
    rec = run_toy(tmp_path, estimator="test_nan_after_5")
    assert rec["status"] == "diverged"
    assert "non-finite" in rec["error"]
    again = run_toy(tmp_path, estimator="test_nan_after_5")
    assert again.get("reused")  # a diverged run is finished: same spec, same outcome


@pytest.mark.usefixtures("stand_ins")
def test_exception_gives_a_failed_record_that_is_retried(tmp_path):
    rec = run_toy(tmp_path, estimator="test_raises")
    assert rec["status"] == "failed" and "boom in forward" in rec["error"]
    assert records.read_record(records.record_path(tmp_path, "toy", "test_raises", rec["run_id"]))["status"] == "failed"
    assert not run_toy(tmp_path, estimator="test_raises").get("reused")


def test_corrupt_record_is_rerun_and_replaced(tmp_path, capsys):
    rec = run_toy(tmp_path)
    path = records.record_path(tmp_path, "toy", "reinforce", rec["run_id"])
    path.write_text(path.read_text()[:40])
    fresh = run_toy(tmp_path)
    assert not fresh.get("reused") and fresh["status"] == "ok"
    assert records.read_record(path)["run_id"] == rec["run_id"]
    assert "corrupt" in capsys.readouterr().err


def test_seconds_budget(tmp_path):
    rec = run_toy(tmp_path, steps=None, seconds=0.5)
    assert rec["status"] == "ok" and rec["budget"] == {"seconds": 0.5}
    assert rec["cost"]["steps"] > 10


def test_every_supported_estimator_trains_the_toys(tmp_path):
    """Each built-in runs on both toys; the unbiased ones lower the exact expected cost from its start.

    (Biased estimators need not: DAB on the categorical toy, whose classes differ by little, does not.)
    """
    for variant in ("bernoulli", "categorical"):
        start = gradbench.run(task=f"toy:variant={variant}", estimator="ste", runs=str(tmp_path), steps=1,
                              eval_every=1)["metrics"]["gap"]["value"]
        for name in ("dab", "ste", "gumbel", "reinforce", "relax"):
            rec = gradbench.run(task=f"toy:variant={variant}", estimator=name, runs=str(tmp_path), steps=300,
                                eval_every=300)
            assert rec["status"] == "ok", rec["error"]
            if rec["estimator"]["unbiased"]:
                assert rec["metrics"]["gap"]["value"] < start, (variant, name)


def test_usage_errors_before_any_run(tmp_path):
    with pytest.raises(UsageError, match="does not support"):
        gradbench.run(task="sort", estimator="reinforce", runs=str(tmp_path))
    with pytest.raises(UsageError, match="unknown config key 'nope'"):
        gradbench.run(task="toy", estimator="reinforce", runs=str(tmp_path), nope=1)
    with pytest.raises(UsageError, match="CUDA is not available"):
        if torch.cuda.is_available():
            raise UsageError("CUDA is not available (skipped: this machine has CUDA)")
        gradbench.run(task="toy", estimator="reinforce", runs=str(tmp_path), device="cuda")
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_runs_on_cuda(tmp_path):
    rec = run_toy(tmp_path, device="cuda")
    assert rec["status"] == "ok" and rec["provenance"]["device"].startswith("cuda")


@pytest.mark.parametrize("device", ["meta", "mps", "cuda:7", "nonsense"])
def test_bad_devices_are_usage_errors(device):
    from gradbench.execution import pick_device

    with pytest.raises(UsageError):
        pick_device(device)
