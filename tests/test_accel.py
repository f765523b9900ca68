"""How steps execute (--accel) and several seeds per command (--seeds): same computation, same records."""

from __future__ import annotations

import json

import pytest

import gradbench
from gradbench.cli import main
from gradbench.errors import UsageError


def _history(record):
    path = record["path"].replace(".json", ".history.jsonl")
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("task,estimator", [("toy", "gumbel"), ("classify", "ste")])
def test_compile_follows_the_eager_trajectory_on_cpu(tmp_path, task, estimator):
    """Same seed, same random numbers (inductor's fallback_random): the logged training costs and test
    metrics agree to float tolerance at every evaluation.

    (Not every estimator can be compared this way: REINFORCE-RLOO on the toy has coordinates whose exact
    gradient is 0, which eager computes as ~1e-7 and compile as 0; Adam turns 1e-7 into a full step, so
    those trajectories drift apart although every gradient agrees to 1e-6.)"""
    kw = dict(task=task, estimator=estimator, steps=40, eval_every=10, device="cpu", grad_stats=False)
    eager = gradbench.run(runs=str(tmp_path / "eager"), accel="none", **kw)
    compiled = gradbench.run(runs=str(tmp_path / "compiled"), accel="compile", **kw)
    assert eager["status"] == compiled["status"] == "ok", compiled["error"]
    assert compiled["accel"]["used"] == "compile" and eager["accel"]["used"] == "none"
    assert eager["run_id"] == compiled["run_id"]  # how steps execute is not part of what a run is
    rows_e, rows_c = _history(eager), _history(compiled)
    assert [r["step"] for r in rows_e] == [r["step"] for r in rows_c]
    for a, b in zip(rows_e, rows_c, strict=True):
        assert b["train_cost"] == pytest.approx(a["train_cost"], rel=1e-5)
        for key in a:
            if key.startswith("test/"):
                assert b[key] == pytest.approx(a[key], rel=1e-5)


def test_auto_is_eager_and_says_why(tmp_path):
    rec = gradbench.run(task="toy", estimator="ste", steps=5, eval_every=5, device="cpu", runs=str(tmp_path),
                        grad_stats=False)
    assert rec["accel"]["requested"] == "auto" and rec["accel"]["used"] == "none"
    assert "--accel compile" in rec["accel"]["reason"]
    assert rec["cost"]["first_step_seconds"] > 0


def test_unknown_accel_is_a_usage_error(tmp_path, capsys):
    assert main(["run", "--task", "toy", "--accel", "warp", "--steps", "2", "--runs", str(tmp_path)]) == 2
    assert "unknown --accel 'warp'" in capsys.readouterr().err


def test_run_with_seeds_writes_one_ordinary_record_per_seed(tmp_path, capsys):
    args = ["run", "--task", "toy", "--estimator", "reinforce", "--steps", "20", "--eval-every", "10",
            "--no-grad-stats", "--no-progress", "--device", "cpu", "--runs", str(tmp_path / "many")]
    assert main([*args, "--seeds", "0-2", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["seed"] for r in records] == [0, 1, 2]
    single = gradbench.run(task="toy", estimator="reinforce", seed=1, steps=20, eval_every=10, grad_stats=False,
                           device="cpu", runs=str(tmp_path / "one"))
    assert single["run_id"] == records[1]["run_id"] and single["metrics"] == records[1]["metrics"]
    assert main([*args, "--seeds", "0-2", "--seed", "1"]) == 2  # one or the other
    assert main([*args, "--seeds", "3-x"]) == 2


def test_cosine_schedule_is_part_of_the_run_and_decays_to_zero(tmp_path):
    import math

    from gradbench.runner import resolve
    from gradbench.sweep import spec_from_record

    kw = dict(task="toy", estimator="reinforce", steps=40, eval_every=10, device="cpu", grad_stats=False)
    const = gradbench.run(runs=str(tmp_path), **kw)
    cos = gradbench.run(runs=str(tmp_path), lr_schedule="cosine", **kw)
    assert const["budget"] == {"steps": 40} and cos["budget"] == {"steps": 40, "lr_schedule": "cosine"}
    assert const["run_id"] != cos["run_id"]
    lr0 = 1e-2  # the toy quick preset's Adam lr
    rows = [row for row in _history(cos) if "lr" in row]
    assert [row["step"] for row in rows] == [10, 20, 30, 40]
    for row in rows:  # the rate the logged step used: step k (1-based) runs at lr0 * (1 + cos(pi (k-1) / N)) / 2
        expected = lr0 * 0.5 * (1 + math.cos(math.pi * (row["step"] - 1) / 40))
        assert row["lr"] == pytest.approx(expected, abs=1e-12)
    assert rows[-1]["lr"] < 0.01 * lr0  # the last step runs at almost 0
    assert spec_from_record(cos).run_id == cos["run_id"]  # rerun rebuilds it
    with pytest.raises(UsageError, match="--steps"):
        resolve("toy", "reinforce", seconds=5, lr_schedule="cosine")
    with pytest.raises(UsageError, match="unknown --lr-schedule"):
        resolve("toy", "reinforce", lr_schedule="linear")


def test_compile_falls_back_to_eager_for_an_estimator_that_cannot_compile(tmp_path):
    rec = gradbench.run(task="toy", estimator="relax", steps=5, eval_every=5, device="cpu", runs=str(tmp_path),
                        grad_stats=False, accel="compile")
    assert rec["status"] == "ok"
    assert rec["accel"]["used"] == "none" and "cannot run under torch.compile" in rec["accel"]["reason"]
