"""Budgets in cost-function evaluations (``--evals``): each estimator trains as many steps as its cost
evaluations per step allow, so tables can compare estimators at equal work, not equal steps."""

from __future__ import annotations

import json

import pytest

import gradbench
from gradbench.cli import main
from gradbench.errors import UsageError
from gradbench.spec import resolve


def _run(tmp_path, estimator, evals=4000, **kw):
    kw.setdefault("grad_stats", False)
    return gradbench.run("toy", estimator, evals=evals, runs=str(tmp_path), device="cpu", **kw)


def test_equal_evaluations_give_rloo_2_half_the_steps_of_straight_through(tmp_path):
    rloo, ste, relax = _run(tmp_path, "reinforce"), _run(tmp_path, "ste"), _run(tmp_path, "relax")
    assert (rloo["cost"]["steps"], ste["cost"]["steps"], relax["cost"]["steps"]) == (2000, 4000, 1333)
    assert rloo["budget"] == {"evals": 4000}
    assert [r["cost"]["evals"] for r in (rloo, ste, relax)] == [4000, 4000, 3999]  # whole steps only
    gumbel2 = _run(tmp_path, "gumbel:samples=2", steps=None)  # 2 samples x (relaxed + hard rows) per step
    assert gumbel2["cost"]["steps"] == 1000


def test_an_evals_budget_is_its_own_run_and_table(tmp_path):
    assert resolve("toy", "ste", evals=2000).run_id != resolve("toy", "ste", steps=2000).run_id
    _run(tmp_path, "ste", evals=200)
    gradbench.run("toy", "ste", steps=200, runs=str(tmp_path), device="cpu", grad_stats=False)
    assert main(["leaderboard", "--runs", str(tmp_path)]) == 0
    text = (tmp_path / "leaderboard.md").read_text()
    assert "budget: evals=200" in text and "budget: steps=200" in text


def test_evals_budget_with_a_schedule_and_checkpoints(tmp_path):
    """The schedule and the gradient checkpoints run over the steps the evaluations allow."""
    rec = _run(tmp_path, "reinforce", evals=400, grad_stats=True, grad_draws=10, lr_schedule="cosine",
               eval_every=50)
    assert rec["status"] == "ok", rec["error"]
    assert [p["step"] for p in rec["gradient"]["checkpoints"]] == [0, 100, 200]
    rows = [json.loads(line) for line in open(rec["path"].replace(".json", ".history.jsonl"))]
    assert rows[-1]["step"] == 200 and rows[-1]["lr"] < 1e-4


def test_one_budget_at_a_time(capsys):
    with pytest.raises(UsageError, match="give one budget"):
        resolve("toy", "ste", evals=10, steps=10)
    with pytest.raises(UsageError, match="--evals must be >= 1"):
        resolve("toy", "ste", evals=0)
    assert main(["run", "-t", "toy", "--evals", "10", "--seconds", "1"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_compare_pairs_runs_of_one_evals_budget(tmp_path, capsys):
    for seed in (0, 1):
        for est in ("ste", "reinforce"):
            gradbench.run("toy", est, seed=seed, evals=200, runs=str(tmp_path), device="cpu", grad_stats=False)
    assert main(["compare", "--task", "toy", "ste", "reinforce", "--evals", "200", "--runs", str(tmp_path)]) == 0
    assert "budget evals=200" in capsys.readouterr().out
