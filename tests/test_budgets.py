"""Budgets in cost-function evaluations (``--evals``): each estimator trains as many steps as its cost
evaluations per step allow, so tables can compare estimators at equal work, not equal steps."""

from __future__ import annotations

import json

import pytest
import torch

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
    gumbel2 = _run(tmp_path, "gumbel:samples=2", steps=None)  # 2 relaxed rows per step (hard rows: report only)
    assert gumbel2["cost"]["steps"] == 2000


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


# ---------------------------------------------------------------- what a step is charged (issue 25)


def test_vimco_and_soft_gumbel_are_charged_the_evaluations_they_need():
    """VIMCO evaluates the task's log-weights once (its reported cost, log k - logsumexp of them, needs no
    second call): 1. Soft Gumbel-Softmax's gradient comes from the relaxed row only; the discrete row it
    also evaluates reports the sample's cost and is not charged (``report_evals``): 1, as for hard=true.
    The conformance check counts the rows really evaluated against cost_evals + report_evals."""
    from gradbench.multisample import estimator_class
    from gradbench.registry import get_estimator_class
    from gradbench.testing import SMALL_NODES, check_cost_evals

    vae = gradbench.registry.get_task_class("vae")
    torch.manual_seed(0)
    task = vae(vae.make_config({"latents": 3, "batch_size": 6, "iw_k": 3}, "quick"))
    logits, cost_fn = task.train_batch()
    calls = []

    def counted(y):
        calls.append("cost")
        return cost_fn(y)

    def log_weight(y):
        calls.append("log_weight")
        return cost_fn.log_weight(y)

    counted.log_weight = log_weight
    vimco = get_estimator_class("vimco")(task.node)
    out = vimco(logits, counted)
    assert calls == ["log_weight"] and out.diagnostics["cost_evals"] == 1
    torch.testing.assert_close(out.cost, cost_fn(out.sample))  # the reported cost is the sample's
    node = SMALL_NODES["bernoulli"]
    for values, charged in (({}, 1), ({"hard": True}, 1), ({"samples": 2}, 2), ({"samples": 2, "hard": True}, 2)):
        cls, resolved = estimator_class("gumbel", values)
        config = cls.make_config(resolved)
        got = cls(node, config)(torch.zeros(3, *node.shape), lambda y: y.sum(-1)).diagnostics
        assert got["cost_evals"] == charged, values
        result = check_cost_evals(cls, node, config)
        assert result.passed, (values, str(result))


def test_evals_budget_gives_vimco_and_soft_gumbel_one_step_per_evaluation(tmp_path):
    gumbel, gumbel2 = _run(tmp_path, "gumbel", evals=40), _run(tmp_path, "gumbel:samples=2", evals=40)
    assert (gumbel["cost"]["steps"], gumbel2["cost"]["steps"]) == (40, 20)
    assert gumbel["cost"]["cost_evals_per_step"] == 1
    vimco = gradbench.run("vae:iw_k=2,latents=8", "vimco", evals=6, eval_every=6, runs=str(tmp_path),
                          device="cpu", grad_stats=False)
    assert vimco["status"] == "ok", vimco["error"]
    assert (vimco["cost"]["steps"], vimco["cost"]["cost_evals_per_step"]) == (6, 1)
