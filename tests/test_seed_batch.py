"""Batched seeds (runner.execute_seeds(batch=True), --batch-seeds): S replicas of one spec trained at once.

A batch of one draws exactly the random numbers of its sequential run (vmap's batched draw of one
replica is the unbatched draw), so it must follow that run's trajectory: this checks the stacking,
functional_call, vmap, per-replica gradients and the one Adam over stacked tensors, for every batchable
estimator in the registry. Larger batches draw differently, so their replicas are checked for what
must still hold: each starts from its own seed's initialisation, and ends on its own.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from helpers import GradInForward, PoisonedSeeds, RebindsState, history, register, task_for

import gradbench
from gradbench.cli import main
from gradbench.errors import UnsupportedError
from gradbench.registry import BUILTIN_ESTIMATORS, get_estimator_class
from gradbench.replicas import Pair, changed
from gradbench.runner import execute, execute_seeds, resolve
from gradbench.sweep import spec_from_record

CONFIGS = {"reinforce": [{"baseline": "ema", "samples": 1}], "gumbel": [{"anneal_rate": 1e-2}]}  # device state


def _cases():
    for name in gradbench.list_estimators():
        cls = get_estimator_class(name)
        if not cls.batchable:
            continue
        task = task_for(name)
        assert task is not None, f"no task in tests/helpers.SMALL_TASKS has a node {name!r} supports: add one"
        for values in [{}, *CONFIGS.get(name, [])]:
            yield pytest.param(name, values, task, id=",".join([name, *(f"{k}={v}" for k, v in values.items())]))


@pytest.fixture
def float64():
    """Train in float64 (torch's default dtype: the tasks build their models and data in it). In float32 the
    two paths differ by float reordering (vmap's batched matmuls), about 1e-7, and 40 steps amplify it to
    1e-4 on one CPU and 4e-4 on another (a Bernoulli sample flips, Adam divides by a small second moment):
    a tolerance wide enough for that would hide real bugs. In float64 the same reordering is 1e-16 and
    stays below 1e-15 after 40 steps (measured on every batchable estimator), so the comparison can be tight."""
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(saved)


@pytest.mark.parametrize("name,values,task", list(_cases()))
def test_a_batch_of_one_follows_its_sequential_run(tmp_path, float64, name, values, task):
    spec = resolve(task, name, seed=3, steps=40, eval_every=20, grad_stats=False, estimator_config=values)
    (seq,) = execute_seeds([spec], device="cpu", runs_dir=tmp_path / "seq")
    (bat,) = execute_seeds([spec], device="cpu", runs_dir=tmp_path / "bat", batch=True)
    assert seq["status"] == bat["status"] == "ok", bat["error"]
    assert bat["seed_batch"] == [3] and "seed_batch" not in seq and bat["run_id"] != seq["run_id"]
    rows_s, rows_b = history(seq), history(bat)
    assert [r["step"] for r in rows_s] == [r["step"] for r in rows_b] == [0, 20, 40]
    for a, b in zip(rows_s, rows_b, strict=True):
        # float64 reordering only: 1e-9 leaves six orders of magnitude above what was measured, and a
        # flipped argmax among the test set's hits (>= 1/50,000 = 2e-5) would still fail it
        for key, value in a.items():
            if key != "seconds":
                assert b[key] == pytest.approx(value, rel=1e-9, abs=1e-12), (a["step"], key)


def test_a_batch_of_one_follows_its_sequential_run_on_an_image_task(tmp_path):
    spec = resolve("vae", "reinforce:baseline=ema,samples=1", seed=1, steps=30, eval_every=30, grad_stats=False)
    (seq,) = execute_seeds([spec], device="cpu", runs_dir=tmp_path / "seq")
    (bat,) = execute_seeds([spec], device="cpu", runs_dir=tmp_path / "bat", batch=True)
    for key, metric in seq["metrics"].items():
        assert bat["metrics"][key]["value"] == pytest.approx(metric["value"], rel=1e-4)


def test_replicas_start_from_their_own_seeds_and_are_written_as_ordinary_records(tmp_path):
    """Gradient statistics at the start (before any step) see each replica's initial parameters: they
    equal those of the seed's own sequential run exactly."""
    specs = [resolve("sort:node=bernoulli", "gumbel", seed=s, steps=30, eval_every=15, grad_draws=20)
             for s in (0, 1, 2)]
    done = execute_seeds(specs, device="cpu", runs_dir=tmp_path, batch=True)
    assert [r["seed"] for r in done] == [0, 1, 2] and all(r["seed_batch"] == [0, 1, 2] for r in done)
    assert all(r["status"] == "ok" for r in done)
    assert len({r["run_id"] for r in done}) == 3
    for spec, record in zip(specs, done, strict=True):
        (alone,) = execute_seeds([spec], device="cpu", runs_dir=tmp_path / "alone")
        start_b, start_s = record["gradient"]["checkpoints"][0], alone["gradient"]["checkpoints"][0]
        assert start_b["checkpoint"] == "start" and start_b["variance"] == start_s["variance"]
        assert len(history(record)) == 3 and os.path.exists(record["path"])  # steps 0, 15, 30
    finals = [r["metrics"]["test_loss"]["value"] for r in done]
    assert len(set(finals)) == 3  # three different trainings, not one copied
    assert [r["reused"] for r in execute_seeds(specs, device="cpu", runs_dir=tmp_path, batch=True)] == [True] * 3


def test_a_missing_record_retrains_its_batch_and_keeps_the_others(tmp_path):
    specs = [resolve("toy", "gumbel", seed=s, steps=20, eval_every=10, grad_stats=False) for s in (0, 1)]
    first = execute_seeds(specs, device="cpu", runs_dir=tmp_path, batch=True)
    os.unlink(first[1]["path"])
    kept = open(first[0]["path"]).read()
    again = execute_seeds(specs, device="cpu", runs_dir=tmp_path, batch=True)
    assert again[0].get("reused") and not again[1].get("reused")
    assert open(first[0]["path"]).read() == kept
    assert again[1]["metrics"] == first[1]["metrics"]  # the batch is deterministic: same replica again
    rebuilt = spec_from_record(again[1])
    assert rebuilt.seed_batch == (0, 1) and rebuilt.run_id == again[1]["run_id"]
    rerun = execute(rebuilt, device="cpu", runs_dir=tmp_path / "rerun", force=True)  # reruns the whole batch
    assert rerun["metrics"] == again[1]["metrics"]
    assert sorted(p.name for p in (tmp_path / "rerun" / "toy" / "gumbel").glob("*.json")) == sorted(
        os.path.basename(r["path"]) for r in again)


@pytest.fixture
def stand_ins(isolated_registry):
    register(PoisonedSeeds, GradInForward, RebindsState)


@pytest.mark.usefixtures("stand_ins")
def test_a_diverged_replica_ends_alone(tmp_path):
    seeds = list(range(6))
    specs = [resolve("toy", "test_poisoned_seeds", seed=s, steps=20, eval_every=10, grad_stats=False) for s in seeds]
    poisoned = []
    for s in seeds:  # build each replica as the harness does, to read its flag
        gradbench.execution.seed_everything(s)
        task = specs[0].task_cls(specs[0].task_config)
        poisoned.append(bool(PoisonedSeeds(task.node).poisoned))
    assert 0 < sum(poisoned) < len(seeds)  # the seeds give both kinds
    done = execute_seeds(specs, device="cpu", runs_dir=tmp_path, batch=True)
    assert [r["status"] for r in done] == ["diverged" if p else "ok" for p in poisoned]
    for record, p in zip(done, poisoned, strict=True):
        assert ("non-finite loss" in record["error"]) if p else (record["metrics"]["expected_cost"]["value"] > 0)


@pytest.mark.usefixtures("stand_ins")
def test_an_estimator_that_cannot_be_batched_runs_its_seeds_one_after_another(tmp_path, capsys):
    specs = [resolve("toy", "test_grad_in_forward", seed=s, steps=10, eval_every=5, grad_stats=False) for s in (0, 1)]
    done = execute_seeds(specs, device="cpu", runs_dir=tmp_path, batch=True)
    err = capsys.readouterr().err
    assert "seeds 0,1 run one after another: the batched step failed" in err
    assert all(r["status"] == "ok" and "seed_batch" not in r for r in done)
    assert [r["run_id"] for r in done] == [s.run_id for s in specs]  # ordinary sequential records
    assert not list(tmp_path.rglob("*.tmp")) and len(list(tmp_path.rglob("*.json"))) == 2
    from gradbench.sweep import expand, todo

    grid = expand("toy", "test_grad_in_forward", [0, 1], batch_seeds=True, steps=10, eval_every=5, grad_stats=False)
    assert all(s.seed_batch == (0, 1) for s in grid.specs)
    assert todo(grid, str(tmp_path), (0, 1))[:2] == ([], 2)  # a sweep counts the seed-by-seed records as done
    specs = [resolve("toy", "relax", seed=s, steps=10, eval_every=5, grad_stats=False) for s in (0, 1)]
    done = execute_seeds(specs, device="cpu", runs_dir=tmp_path, batch=True)
    assert "estimator 'relax' is not batchable" in capsys.readouterr().err
    assert all(r["status"] == "ok" and "seed_batch" not in r for r in done)


def test_cli_batch_seeds(tmp_path, capsys):
    args = ["run", "--task", "toy", "--estimator", "gumbel", "--steps", "20", "--eval-every", "10",
            "--no-grad-stats", "--no-progress", "--device", "cpu", "--runs", str(tmp_path)]
    assert main([*args, "--seeds", "0-2", "--batch-seeds", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["seed_batch"] for r in records] == [[0, 1, 2]] * 3
    assert main([*args, "--batch-seeds"]) == 2
    assert "--batch-seeds needs --seeds" in capsys.readouterr().err


@pytest.mark.usefixtures("stand_ins")
def test_an_estimator_that_rebinds_its_state_is_not_batched(tmp_path, capsys):
    specs = [resolve("toy", "test_rebinds_state", seed=s, steps=10, eval_every=5, grad_stats=False) for s in (0, 1)]
    done = execute_seeds(specs, device="cpu", runs_dir=tmp_path, batch=True)
    assert "the step rebinds buffer 'estimator.calls' instead of updating it in place" in capsys.readouterr().err
    assert all(r["status"] == "ok" and "seed_batch" not in r for r in done)


@pytest.mark.parametrize("task", ["sort", "sort:node=bernoulli", "toy", "classify", "autoencode", "vae"])
def test_built_in_steps_update_their_state_in_place(task):
    """What batching and CUDA graphs rely on: no built-in task or estimator rebinds a buffer or attribute
    in a training step (they update in place), so nothing would be dropped or frozen."""
    tried = 0
    for name in BUILTIN_ESTIMATORS:
        cls = get_estimator_class(name)
        try:
            spec = resolve(task, name, steps=2, grad_stats=False)
        except UnsupportedError:
            continue
        tried += 1
        t = spec.task_cls(spec.task_config)
        model = Pair(t, cls(t.node, spec.estimator_config))
        model.forward()  # lazy state, if any, exists after the first step
        before = model.state_ids()
        for _ in range(2):
            total = model.forward()[0]
            total.backward()
        assert changed(before, model.state_ids()) == [], (task, name)
    assert tried >= 2


@pytest.mark.parametrize("task,name", [("sort", "dab"), ("sort:node=bernoulli", "gumbel"),
                                       ("sort:node=bernoulli", "reinforce:baseline=ema,samples=1")])
def test_a_replica_ignores_the_other_replicas_of_its_batch(tmp_path, task, name):
    """Batches (0, 5) and (3, 5): a seed batch's shared data and noise streams are the last seed's (5), and
    replica 1 draws the same share of each batched draw, so seed 5's replica sees
    the same random numbers in both. Its trajectory must then be the same whatever the other replica is:
    any cross-talk (in gradients, Adam, buffers or evaluation) would make it depend on seed 0 vs 3."""
    def batch(first):
        specs = [resolve(task, name, seed=s, steps=40, eval_every=20, grad_stats=False) for s in (first, 5)]
        return execute_seeds(specs, device="cpu", runs_dir=tmp_path / str(first), batch=True)

    a, b = batch(0), batch(3)
    assert a[1]["seed_batch"] == [0, 5] and b[1]["seed_batch"] == [3, 5]
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in history(a[1])]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in history(b[1])]
    assert a[0]["metrics"] != b[0]["metrics"]  # the other replicas did differ
