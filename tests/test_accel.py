"""How steps execute (--accel) and several seeds per command (--seeds): same computation, same records."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import CountsInPython, history, register, task_for

import gradbench
from gradbench import execution
from gradbench.cli import main
from gradbench.errors import UsageError
from gradbench.registry import get_estimator_class, list_estimators

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


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
    rows_e, rows_c = history(eager), history(compiled)
    assert [r["step"] for r in rows_e] == [r["step"] for r in rows_c]
    assert rows_e[0]["step"] == 0 and "train_cost" not in rows_e[0]  # the evaluation before training
    for a, b in zip(rows_e, rows_c, strict=True):
        if "train_cost" in a:
            assert b["train_cost"] == pytest.approx(a["train_cost"], rel=1e-5)
        for key in a:
            if key.startswith("test/"):
                assert b[key] == pytest.approx(a[key], rel=1e-5)


def _same_trajectory(rows_a, rows_b, rel):
    """Same logged costs and metrics; accuracies count argmax hits, a few of which float differences flip
    (abs 2e-3: 20 of sort quick's 10,000 test sequences)."""
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b]
    for a, b in zip(rows_a, rows_b, strict=True):
        for key in a:
            if key == "train_cost" or key == "lr" or key.startswith("test/"):
                tol = 2e-3 if key in ("test/all_or_none", "test/per_element") else 0
                assert b[key] == pytest.approx(a[key], rel=rel, abs=tol), (a["step"], key)


class ReplayByRerun:
    """Stands in for ``execution.CudaGraphStep`` on a CPU: warm-up runs the eager step, 'capture' keeps the step
    function, and 'replay' reruns it on fresh gradients, as a replayed graph does. It checks the graph
    path's loop (warm-up, switch to replay, outputs, tensor learning rates under a schedule), not CUDA."""

    def __init__(self, device, fail=False):
        self.fn = self.optimizer = None
        self.fail = fail
        self.warmups = self.replays = 0
        ReplayByRerun.last = self

    @property
    def captured(self):
        return self.fn is not None

    def warmup(self, eager_step, check=False):
        self.warmups += 1
        return eager_step()

    def capture(self, step_fn, optimizer, generators=()):
        self.generators = list(generators)  # the task's data stream, which a real capture registers
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing\nmore detail")
        self.fn, self.optimizer = step_fn, optimizer

    def replay(self):
        self.replays += 1
        self.optimizer.zero_grad(set_to_none=True)
        return self.fn()


def _tensor_lrs(monkeypatch):
    """Eager with the graph path's tensor learning rates: Adam's float and tensor lr round differently
    (rel ~1e-5 after 20 steps), which would hide what these tests compare: the loop itself, exactly."""
    make = execution.make_optimizer
    monkeypatch.setattr(execution, "make_optimizer", lambda groups, device, graph: make(groups, device, True))


@pytest.mark.parametrize("estimator", ["dab", "gumbel"])
def test_graph_loop_follows_eager_with_a_schedule(tmp_path, monkeypatch, estimator):
    """The graph path's loop on a CPU (capture stood in by ReplayByRerun): exactly eager's trajectory, with
    the cosine schedule reaching Adam through tensor learning rates; 3 warm-up steps, then replays."""
    task = "sort" if estimator == "dab" else "sort:node=bernoulli"
    kw = dict(task=task, estimator=estimator, steps=40, eval_every=10, device="cpu", grad_stats=False,
              lr_schedule="cosine")
    _tensor_lrs(monkeypatch)
    eager = gradbench.run(runs=str(tmp_path / "eager"), accel="none", **kw)
    monkeypatch.setattr(execution, "CudaGraphStep", ReplayByRerun)
    monkeypatch.setattr(execution, "pick_accel", lambda accel, cls, dev, config=None: ("graph", "test"))
    graph = gradbench.run(runs=str(tmp_path / "graph"), accel="graph", **kw)
    assert graph["status"] == "ok", graph["error"]
    assert graph["accel"]["used"] == "graph" and graph["cost"]["capture_seconds"] is not None
    assert len(ReplayByRerun.last.generators) == 1  # the data stream is handed to the capture
    warmup = execution.GRAPH_WARMUP
    assert (ReplayByRerun.last.warmups, ReplayByRerun.last.replays) == (warmup, 40 - warmup)
    rows_e, rows_g = history(eager), history(graph)
    assert len(rows_e) == len(rows_g) == 5  # step 0 (before training), then every 10 steps
    assert rows_g == [{**e, "seconds": g["seconds"]} for e, g in zip(rows_e, rows_g, strict=True)]
    assert history(graph)[-1]["lr"] < 1e-5


def test_a_failed_capture_goes_on_eagerly_and_says_why(tmp_path, monkeypatch):
    kw = dict(task="sort", estimator="ste", steps=20, eval_every=10, device="cpu", grad_stats=False)
    _tensor_lrs(monkeypatch)
    eager = gradbench.run(runs=str(tmp_path / "eager"), accel="none", **kw)
    monkeypatch.setattr(execution, "CudaGraphStep", lambda device: ReplayByRerun(device, fail=True))
    monkeypatch.setattr(execution, "pick_accel", lambda accel, cls, dev, config=None: ("graph", "test"))
    rec = gradbench.run(runs=str(tmp_path / "graph"), accel="graph", **kw)
    assert rec["status"] == "ok" and rec["accel"]["used"] == "none"
    assert rec["accel"]["reason"] == ("graph: capture failed after step 3 (RuntimeError: operation not permitted "
                                      "when stream is capturing); eager from there")
    assert [r.get("train_cost") for r in history(rec)] == [r.get("train_cost") for r in history(eager)]


@pytest.fixture
def counts_in_python(isolated_registry):
    register(CountsInPython)


@pytest.mark.usefixtures("counts_in_python")
def test_state_a_replay_would_freeze_is_not_captured(tmp_path, monkeypatch):
    monkeypatch.setattr(execution, "CudaGraphStep", ReplayByRerun)
    monkeypatch.setattr(execution, "pick_accel", lambda accel, cls, dev, config=None: ("graph", "test"))
    rec = gradbench.run(task="toy", estimator="test_counts_in_python", steps=10, eval_every=5, device="cpu",
                        runs=str(tmp_path), grad_stats=False, accel="graph")
    assert rec["status"] == "ok" and rec["accel"]["used"] == "none"
    assert "the step rebinds 'estimator.calls' instead of updating it in place" in rec["accel"]["reason"]
    assert ReplayByRerun.last.replays == 0


def test_pick_accel_per_device_and_estimator(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    ste = get_estimator_class("ste")
    assert execution.pick_accel("auto", ste, cuda)[0] == "graph"
    assert execution.pick_accel("auto", ste, cpu)[0] == "none"
    assert execution.pick_accel("graph", ste, cpu) == ("none", "graph: CUDA graphs need a CUDA device; eager instead")
    assert execution.pick_accel("compile", ste, cuda) == ("compile", "asked for")
    monkeypatch.setattr(ste, "capturable", False)
    used, why = execution.pick_accel("auto", ste, cuda)
    assert used == "none" and "cannot be captured" in why


@needs_cuda
@pytest.mark.parametrize("estimator", list_estimators())
def test_graph_follows_eager_on_cuda(tmp_path, estimator):
    """The captured step computes what eager computes: same logged costs and metrics to float tolerance
    (Adam's capturable bias correction is computed in float32 on the device, hence not bit-equal)."""
    kw = dict(task=task_for(estimator), estimator=estimator, steps=60, eval_every=20, device="cuda", grad_stats=False)
    eager = gradbench.run(runs=str(tmp_path / "eager"), accel="none", **kw)
    graph = gradbench.run(runs=str(tmp_path / "graph"), accel="graph", **kw)
    assert eager["status"] == graph["status"] == "ok", graph["error"]
    assert graph["accel"]["used"] == "graph", graph["accel"]["reason"]
    _same_trajectory(history(eager), history(graph), rel=1e-3)


@needs_cuda
def test_auto_captures_on_cuda(tmp_path):
    rec = gradbench.run(task="sort", estimator="dab", steps=30, eval_every=10, device="cuda", runs=str(tmp_path),
                        grad_stats=True, grad_draws=10)
    assert rec["status"] == "ok" and rec["accel"]["used"] == "graph", rec["accel"]
    assert [c["checkpoint"] for c in rec["gradient"]["checkpoints"]] == ["start", "middle", "end"]


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
    rows = [row for row in history(cos) if "lr" in row]
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
